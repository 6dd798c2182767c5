"""Files that open with a batch header (the clearing operator's): the count and the sum its
lines must add up to, so a truncated or tampered batch is refused whole."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from ingest.parsed import FileRefused

HEADER_KEYS = ("batch_id", "line_count", "total_cents", "cleared_at")


def split_batch_header(frame: pl.DataFrame, path: Path) -> tuple[dict, pl.DataFrame]:
    """The header (line 1) and the data lines after it; FileRefused when line 1 is no header."""
    try:
        header = json.loads(frame["raw"][0])
    except (json.JSONDecodeError, IndexError) as exc:
        raise FileRefused(f"{path.name}: line 1 is not a clearing batch header ({exc})") from None
    if not isinstance(header, dict):
        raise FileRefused(f"{path.name}: line 1 is not a clearing batch header (not a JSON object)")
    missing = [k for k in HEADER_KEYS if k not in header]
    if header.get("record") != "header" or missing:
        raise FileRefused(f"{path.name}: line 1 is not a clearing batch header (missing {missing or 'record=header'})")
    return header, frame.slice(1)


def check_batch_totals(header: dict, lines: int, valid_total: int, bad_lines: int, path: Path) -> None:
    """Refuse a batch whose lines do not add up to its header: truncated or tampered in transit.

    The sum is only compared when every line is valid: a bad line's amount is unknown.
    """
    if lines != int(header["line_count"]) or (bad_lines == 0 and valid_total != int(header["total_cents"])):
        raise FileRefused(
            f"{path.name}: batch {header['batch_id']} header says {header['line_count']} lines / {header['total_cents']} cents, "
            f"the file has {lines} lines / {valid_total} cents in its valid lines"
        )
