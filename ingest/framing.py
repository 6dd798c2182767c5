"""A landed file's bytes cut into numbered lines, chunk by chunk, each line with its raw text.

Every line is framed first (line number + raw text), so a bad row can always be reported
by file, line, field and reason with its original text, and nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa


def read_chunks(path: Path, chunk_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """The file's bytes as (chunk, is_last); every chunk but the last ends with a line end."""
    pending: bytes | None = None
    carry = b""
    with path.open("rb") as fh:
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                break
            data = carry + block if carry else block
            cut = data.rfind(b"\n")
            if cut < 0:  # one line longer than a chunk: keep reading until its end
                carry = data
                continue
            carry = data[cut + 1 :]
            if pending is not None:
                yield pending, False
            pending = data[: cut + 1]
    if carry:
        if pending is not None:
            yield pending, False
        yield carry, True
    else:
        yield (pending if pending is not None else b""), True


BOM = b"\xef\xbb\xbf"


def drop_trailing_blank(frame: pl.DataFrame) -> pl.DataFrame:
    """The last lines of a file that are blank are not rows (a trailing newline or two)."""
    if not frame.height or frame["raw"][-1].strip():
        return frame
    content = frame["raw"].str.strip_chars() != ""
    last = content.arg_true()
    return frame.slice(0, int(last[-1]) + 1 if len(last) else 0)


def join_quoted_lines(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV records whose quoted field holds a line end, joined back into one record (numbered
    by its first line), as a CSV reader reads them; without an odd quote count, unchanged."""
    odd = frame["raw"].str.count_matches('"', literal=True) % 2 == 1
    if not odd.any():
        return frame
    inside = (odd.cast(pl.Int64).cum_sum() % 2 == 1)  # inside an open quote after this line
    starts = ~inside.shift(1, fill_value=False)
    return (
        frame.with_columns(starts.cum_sum().alias("__record"))
        .group_by("__record", maintain_order=True)
        .agg(pl.col("line").first(), pl.col("raw").str.join("\n"))
        .drop("__record")
    )


def frame_bytes(data: bytes, first_line: int = 1) -> tuple[pl.DataFrame, bool]:
    """Lines of a chunk as (line, raw), numbered from first_line; and whether it ends with a newline.

    The lines are cut where the newlines are (numpy) and handed to polars as one Arrow string
    array over the chunk's own bytes: no Python string of the chunk, no split-and-explode,
    one copy (dropping the newlines): about a third of the CPU of splitting and exploding.
    A UTF-8 byte order mark at the start of the file is not part of its first line.
    """
    if first_line == 1 and data.startswith(BOM):
        data = data[len(BOM):]
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:  # bad bytes become U+FFFD; the line is then quarantined as invalid UTF-8
            data = data.decode("utf-8", errors="replace").encode("utf-8")
    ends_with_newline = data.endswith(b"\n")
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1  # each line keeps its newline here
    if not ends_with_newline:
        ends = np.append(ends, len(data))  # the last line has none
    offsets = np.concatenate(([0], ends)).astype(np.int64)
    raw = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(data))
    frame = pl.DataFrame(
        {
            "line": np.arange(first_line, first_line + len(ends), dtype=np.int64),
            "raw": pl.Series(raw, dtype=pl.String).str.strip_suffix("\n"),
        }
    )
    return frame, ends_with_newline
