"""Parse one landed file against its contract: good rows typed, bad rows kept with the reason.

Pure data in, data out: nothing here touches the warehouse. The loader decides what to do
with the result (load the good rows, quarantine the bad, or refuse the file). This module
holds the file-level decisions (empty, header only, columns changed, truncated, a batch
header); the lines themselves are framed by `framing`, decoded by `decode` and checked by
`rules`.

Memory stays bounded whatever the file size: a big file is read in chunks of whole lines
(`IngestConfig.chunk_bytes`). Small files are validated several at a time
(`validate_files`), since a validation pass has a fixed cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from ingest.batch_header import split_batch_header
from ingest.config import IngestConfig
from ingest.contracts import Contract
from ingest.decode import csv_header
from ingest.framing import drop_trailing_blank, frame_bytes, join_quoted_lines, read_chunks
from ingest.parsed import BAD_SCHEMA, FileRefused, Known, ParseResult
from ingest.rules import extra_key_counts, validate_lines

# validate_files numbers the lines of its n-th file from n << FILE_SHIFT, so one validation
# pass over many files keeps every line's file and order (files of 2^40 lines are far off).
FILE_SHIFT = 40


def validate_chunks(
    contract: Contract,
    path: Path,
    known_devices: Known | None = None,
    config: IngestConfig = IngestConfig(),
) -> Iterator[ParseResult]:
    """Parse and validate a file chunk by chunk (bounded memory); one ParseResult per chunk.

    Raises FileRefused when the file as a whole is unusable: empty, header only, columns
    changed, no batch header where the contract wants one, or truncated (its last line cut
    off with no line end). The batch header (when there is one) is in the first result's
    `header`.
    """
    next_line = 1
    data_lines = 0
    saw_content = False
    for data, is_last in read_chunks(path, config.chunk_bytes):
        if not saw_content and not data.strip():
            if is_last:
                raise FileRefused(f"{path.name}: empty file")
            next_line += data.count(b"\n")  # leading blank lines of a huge file: still numbered
            continue
        frame, ends_with_newline = frame_bytes(data, next_line)
        next_line += frame.height
        if is_last:
            frame = drop_trailing_blank(frame)
        if contract.file_format == "csv":
            frame = join_quoted_lines(frame)
        header: dict = {}
        if not saw_content:
            saw_content = True
            if contract.file_format == "csv":
                csv_header(frame, contract, path)
                frame = frame.slice(1)
            elif contract.has_batch_header:
                header, frame = split_batch_header(frame, path)
        if frame.height == 0:
            if is_last and data_lines == 0 and contract.file_format == "csv":
                raise FileRefused(f"{path.name}: header only, no rows")
            if header:
                yield ParseResult(good=pl.DataFrame(), bad=pl.DataFrame(schema=BAD_SCHEMA), lines=0, header=header)
            continue
        result = validate_lines(contract, frame, known_devices)
        result.header = header
        data_lines += result.lines
        # A last line cut off mid-record with no newline is a truncated delivery, not one bad row.
        if is_last and not ends_with_newline and result.bad.height:
            last_line = int(frame["line"][-1])
            if int(result.bad["line"][-1]) == last_line or last_line in set(result.bad["line"].to_list()):
                raise FileRefused(f"{path.name}: truncated (last line {last_line} is incomplete and has no line end)")
        yield result
    if contract.file_format == "csv" and data_lines == 0 and saw_content:
        raise FileRefused(f"{path.name}: header only, no rows")


def _frame_whole(contract: Contract, path: Path, data: bytes) -> tuple[pl.DataFrame, dict, bool]:
    """A whole small file framed: (data lines, batch header, ends with a newline); or FileRefused.

    The same file-level checks as `validate_chunks` on a file of one chunk.
    """
    if not data.strip():
        raise FileRefused(f"{path.name}: empty file")
    frame, ends_with_newline = frame_bytes(data)
    frame = drop_trailing_blank(frame)
    if contract.file_format == "csv":
        frame = join_quoted_lines(frame)
    header: dict = {}
    if contract.file_format == "csv":
        csv_header(frame, contract, path)
        frame = frame.slice(1)
        if frame.height == 0:
            raise FileRefused(f"{path.name}: header only, no rows")
    elif contract.has_batch_header:
        header, frame = split_batch_header(frame, path)
    return frame, header, ends_with_newline


def validate_files(
    contract: Contract, files: list[tuple[Path, bytes]], known_devices: Known | None = None
) -> list[ParseResult | FileRefused]:
    """Several small files (each one chunk, already read) validated in one pass; a result or refusal per file.

    Same results as `validate_chunks` file by file. Why together: a simulator file is ~2 MB
    (10,000 lines) and each validation pass has a fixed cost (a DuckDB query planned and run
    on its threads, some dozens of polars expressions): file by file, a line cost about
    twice a line of a 32 MB chunk.
    """
    out: list[ParseResult | FileRefused | None] = [None] * len(files)
    framed: dict[int, tuple[Path, dict, bool, int, int]] = {}  # path, header, ends with newline, lines, last line
    frames = []
    for n, (path, data) in enumerate(files):
        try:
            frame, header, ends_with_newline = _frame_whole(contract, path, data)
        except FileRefused as exc:
            out[n] = exc
            continue
        framed[n] = (path, header, ends_with_newline, frame.height, int(frame["line"][-1]) if frame.height else 0)
        if frame.height:
            frames.append(frame.with_columns(pl.col("line") + (n << FILE_SHIFT)))
    every = validate_lines(contract, pl.concat(frames), known_devices) if frames else None
    goods = _by_file(every.good, "_line") if every else {}
    bads = _by_file(every.bad, "line") if every else {}
    extras = _by_file(every.extra_lines, "line") if every and every.extra_lines is not None else {}
    for n, (path, header, ends_with_newline, lines, last_line) in framed.items():
        bad = bads.get(n, pl.DataFrame(schema=BAD_SCHEMA))
        # A last line cut off mid-record with no newline is a truncated delivery, not one bad row.
        if not ends_with_newline and lines and (bad["line"] == last_line).any():
            out[n] = FileRefused(f"{path.name}: truncated (last line {last_line} is incomplete and has no line end)")
            continue
        out[n] = ParseResult(
            good=goods.get(n, every.good.clear() if every else pl.DataFrame()), bad=bad, lines=lines, header=header,
            extra_keys=extra_key_counts(extras[n]) if n in extras else {},
        )
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def _by_file(frame: pl.DataFrame, line_col: str) -> dict[int, pl.DataFrame]:
    """Rows of several files (in file order) as one zero-copy slice per file, lines renumbered."""
    step = 1 << FILE_SHIFT
    files = (frame[line_col] // step).rle()  # runs of one file number: rows stay in file order
    out, start = {}, 0
    for length, n in files.struct.unnest().iter_rows():
        out[int(n)] = frame.slice(start, length).with_columns(pl.col(line_col) % step)
        start += length
    return out


def validate_file(contract: Contract, path: Path, known_devices: Known | None = None) -> ParseResult:
    """Parse and validate one whole file (all chunks together). Raises FileRefused when unusable."""
    parts = list(validate_chunks(contract, path, known_devices))
    goods = [p.good for p in parts if p.good.width]
    extra: dict[str, int] = {}
    for p in parts:
        for k, v in p.extra_keys.items():
            extra[k] = extra.get(k, 0) + v
    return ParseResult(
        good=pl.concat(goods) if goods else pl.DataFrame(),
        bad=pl.concat([p.bad for p in parts]) if parts else pl.DataFrame(schema=BAD_SCHEMA),
        lines=sum(p.lines for p in parts),
        header=parts[0].header if parts else {},
        extra_keys=extra,
    )
