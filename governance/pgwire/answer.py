"""What a statement answered on the Postgres endpoint, and its rows as DataRow messages.

A query's rows come from its gateway result stream, a record batch at a time; a catalog probe's
or a session statement's from a small table built here. Either way a batch is read and encoded
on the session's worker thread, written, and the next one read after the socket drained."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from governance.pgwire import codec
from governance.pgwire.types import wire_column
from governance.result import Result
from governance.stream import ResultStream

BATCH_ROWS = 10_000  # rows of a small table's answer per batch (a query's come as DuckDB's record batches)
CHUNK_BYTES = 256_000  # DataRow bytes per write; the socket is drained between writes


@dataclass
class Prepared:
    sql: str
    param_oids: list[int]


@dataclass
class Portal:
    sql: str
    result_formats: list[int] = field(default_factory=list)  # as Bind sent them: none, one for all, or one per column
    answer: "Answer | None" = None  # run at Describe (the columns must be known), sent at Execute

    def formats(self, n: int) -> list[int]:
        """0 (text) or 1 (binary) for each of n result columns."""
        f = self.result_formats
        return [0] * n if not f else [f[0]] * n if len(f) == 1 else (f + [0] * n)[:n]


@dataclass
class Answer:
    """What one statement returned: rows (a small table answered here, or a query's result
    stream from the gateway), a tag only, or an error message."""

    tag: str
    table: pa.Table | None = None
    error: bytes | None = None
    stream: ResultStream | None = None
    result: Result | None = None  # the gateway's, for a stream: final once the stream has ended
    pending: list[pa.RecordBatch] = field(default_factory=list)  # read from the source, not yet sent
    sent: int = 0  # rows sent so far (an Execute with a row limit sends part, then the rest)
    _batches: Iterator[pa.RecordBatch] | None = None

    @property
    def schema(self) -> pa.Schema | None:
        return self.table.schema if self.table is not None else self.stream.schema if self.stream is not None else None

    def next_batch(self) -> pa.RecordBatch | None:
        """Blocking when it reads the stream: called on a worker thread."""
        if self.pending:
            return self.pending.pop(0)
        if self.stream is not None:
            return self.stream.next_batch()
        if self.table is None:
            return None
        if self._batches is None:
            self._batches = iter(self.table.to_batches(max_chunksize=BATCH_ROWS))
        return next(self._batches, None)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def encoded(answer: Answer, formats: list[int], limit: int) -> tuple[bytes, int] | None:
    """The next batches of `answer` as DataRow messages, up to CHUNK_BYTES (fewer hops between
    the worker thread and the event loop) and at most `limit` rows if > 0; None at the end."""
    parts, size, rows = [], 0, 0
    while size < CHUNK_BYTES and not (limit and rows >= limit):
        batch = answer.next_batch()
        if batch is None:
            break
        if limit and rows + batch.num_rows > limit:
            answer.pending.insert(0, batch.slice(limit - rows))
            batch = batch.slice(0, limit - rows)
        parts.append(batch_data_rows(batch, formats))
        size, rows = size + len(parts[-1]), rows + batch.num_rows
    return (b"".join(parts), rows) if parts else None


def batch_data_rows(batch: pa.RecordBatch, formats: list[int]) -> bytes:
    """A record batch's rows as DataRow messages; `formats`: per column 0 text or 1 binary."""
    if not batch.num_columns:  # a SELECT with no columns still sends its rows
        return codec.data_row([]) * batch.num_rows
    return codec.data_rows([wire_column(c, f == 1) for c, f in zip(batch.columns, formats, strict=True)])
