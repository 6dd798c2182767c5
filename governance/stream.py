"""An accepted query's rows as DuckDB produces them, a record batch at a time.

A `ResultStream` holds the team's connection (its concurrency slot) and its timeout from the
moment DuckDB starts until the stream ends — read to the end, cut, failed, or closed because
the client went away — and then, exactly once, hands a `StreamEnd` to the gateway, which
settles the cost and writes the audit row. The rules a whole answer obeys are applied per
batch: the group-size suppression, `max_result_rows` (the query already asks DuckDB for one
row more, so reaching it costs at most one batch) and `max_result_bytes`, counted in Arrow
bytes as DuckDB hands them over, so no answer is held whole.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

# Why a stream ended; the gateway's audit row carries it as the rule when it is not "finished".
FINISHED, ROWS_CAP, BYTES_CAP, CLIENT_GONE, TIMEOUT, FAILED = "finished", "max_result_rows", "max_result_bytes", "client_disconnected", "timeout", "query_failed"


@dataclass
class StreamEnd:
    reason: str  # one of the constants above
    rows: int  # rows handed to the client
    arrow_bytes: int  # Arrow bytes read from DuckDB (what max_result_bytes counts)
    suppressed_groups: int
    duckdb_done: bool  # DuckDB ran the query to its end: its profile settles the cost


@dataclass(frozen=True)
class Suppression:
    """Groups describing fewer than `min_size` people are dropped, with the size column; the
    query's own LIMIT/OFFSET (taken off it) then applies to the groups kept."""

    column: str
    min_size: int
    offset: int = 0
    limit: int | None = None


class ResultStream:
    def __init__(self, reader: pa.RecordBatchReader, *, max_rows: int, max_bytes: int, suppression: Suppression | None,
                 stopped: threading.Event, deadline: float, on_end: Callable[[StreamEnd], None]):
        self._reader, self._on_end, self._stopped = reader, on_end, stopped
        self.max_rows, self.max_bytes, self._suppression = max_rows, max_bytes, suppression
        self.deadline = deadline  # time.monotonic() at which the team's timeout stops the stream
        schema = reader.schema
        self.schema = schema.remove(schema.get_field_index(suppression.column)) if suppression else schema
        self.rows = self.arrow_bytes = self.suppressed_groups = 0
        self._kept = 0  # groups kept by the suppression so far (its OFFSET/LIMIT count these)
        self.end: StreamEnd | None = None
        self._lock = threading.Lock()

    @property
    def truncated(self) -> bool:
        return self.end is not None and self.end.reason in (ROWS_CAP, BYTES_CAP)

    def seconds_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def next_batch(self) -> pa.RecordBatch | None:
        """The next batch for the client, or None when the stream has ended (then `end` says why)."""
        while self.end is None:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                self._close(FINISHED, duckdb_done=True)
                return None
            except duckdb.Error:
                self._close(TIMEOUT if self._stopped.is_set() else FAILED)
                return None
            if self._stopped.is_set():
                self._close(TIMEOUT)
                return None
            out = self._admit(batch)
            if out.num_rows:
                return out
        return None

    def _admit(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        cut = False
        if self.arrow_bytes + batch.nbytes > self.max_bytes:  # keep the rows that fit, then stop reading
            fit = int((self.max_bytes - self.arrow_bytes) // max(1.0, batch.nbytes / max(1, batch.num_rows)))
            batch, cut = batch.slice(0, max(0, fit)), True
        self.arrow_bytes += batch.nbytes
        if self._suppression is not None:
            sizes = batch.column(self._suppression.column)
            keep = pc.fill_null(pc.greater_equal(sizes, self._suppression.min_size), False)
            kept = batch.filter(keep)
            self.suppressed_groups += batch.num_rows - kept.num_rows
            batch = self._window(kept.drop_columns([self._suppression.column]))
        if self.rows + batch.num_rows > self.max_rows:
            batch = batch.slice(0, self.max_rows - self.rows)
            self.rows += batch.num_rows
            self._drain()  # at most the one row past the cap is left: DuckDB finishes, its profile settles
            return batch
        self.rows += batch.num_rows
        if cut:
            self._close(BYTES_CAP)
        return batch

    def _window(self, kept: pa.RecordBatch) -> pa.RecordBatch:
        """The part of this batch's kept groups inside the query's OFFSET/LIMIT."""
        s = self._suppression
        first, self._kept = self._kept, self._kept + kept.num_rows
        start = max(0, s.offset - first)
        end = kept.num_rows if s.limit is None else max(0, min(kept.num_rows, s.offset + s.limit - first))
        return kept.slice(start, max(0, end - start))

    def _drain(self) -> None:
        try:
            for _ in self._reader:
                pass
        except duckdb.Error:
            self._close(TIMEOUT if self._stopped.is_set() else FAILED)
            return
        self._close(ROWS_CAP, duckdb_done=True)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (batch := self.next_batch()) is not None:
            yield batch

    def close(self, reason: str = CLIENT_GONE) -> None:
        """End the stream (idempotent): a stream closed before its end was read ended because the
        client went away (or stopped reading)."""
        self._close(reason)

    def _close(self, reason: str, duckdb_done: bool = False) -> None:
        with self._lock:
            if self.end is not None:
                return
            self.end = StreamEnd(reason, self.rows, self.arrow_bytes, self.suppressed_groups, duckdb_done)
        if not duckdb_done:
            self._reader.close()
        self._on_end(self.end)

    def __enter__(self) -> ResultStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_all(self) -> pa.Table:
        """The whole (capped) answer as one table: for callers that need it whole."""
        with self:
            return pa.Table.from_batches(list(self), schema=self.schema)
