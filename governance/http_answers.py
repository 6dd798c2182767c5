"""HTTP answer bodies written a record batch at a time, as DuckDB produces them.

CSV, NDJSON and Arrow IPC answers stream: the gateway first reads up to `PREFETCH_BYTES` of
the result; an answer that ended within them (most answers) goes out with exact headers (cost,
truncation, suppressed groups). A longer one goes out with `X-Streamed: true`, and what is only
known at its end comes at its end: Arrow as a last, empty record batch whose custom metadata
`civicflow` is that JSON object, NDJSON as a last line `{"_end": {…}}`. A CSV answer has no
place for it: one that is cut or fails mid-stream ends without its final chunk, so no client
takes it for a whole answer (read long answers as Arrow or NDJSON to see why they ended).

The team's slot is held until the body is written; a client that goes away, or stops reading
past the team's timeout, ends the stream (settled at its estimate and audited).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import io
from collections.abc import AsyncIterator, Callable

import anyio
import pyarrow as pa
import pyarrow.csv as pacsv
from starlette.responses import StreamingResponse

from governance.client import ARROW_END_KEY
from governance.gateway import Result
from governance.stream import CLIENT_GONE, FINISHED, TIMEOUT, ResultStream

ARROW_MEDIA = "application/vnd.apache.arrow.stream"
NDJSON_MEDIA = "application/x-ndjson"
PREFETCH_BYTES = 1_000_000  # Arrow bytes read before the headers go out
CHUNK_BYTES = 256_000  # encoded bytes per write of the body


class Encoder:
    """One format's bytes: a head, each batch, and a tail that says how the answer ended."""

    media = "application/octet-stream"

    def __init__(self, schema: pa.Schema, dumps: Callable[[object], str]):
        self.schema, self.dumps = schema, dumps

    def head(self) -> bytes:
        return b""

    def batch(self, batch: pa.RecordBatch) -> bytes:
        raise NotImplementedError

    def tail(self, end: dict) -> bytes:
        return b""


class ArrowEncoder(Encoder):
    media = ARROW_MEDIA

    def __init__(self, schema: pa.Schema, dumps: Callable[[object], str]):
        super().__init__(schema, dumps)
        self._sink = io.BytesIO()
        self._writer = pa.ipc.new_stream(self._sink, schema)

    def _take(self) -> bytes:
        data = self._sink.getvalue()
        self._sink.seek(0)
        self._sink.truncate()
        return data

    def head(self) -> bytes:
        return self._take()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        self._writer.write_batch(batch)
        return self._take()

    def tail(self, end: dict) -> bytes:
        empty = pa.RecordBatch.from_pylist([], schema=self.schema)
        self._writer.write_batch(empty, custom_metadata={ARROW_END_KEY: self.dumps(end)})
        self._writer.close()
        return self._take()


class CsvEncoder(Encoder):
    media = "text/csv"
    _header = True

    def batch(self, batch: pa.RecordBatch) -> bytes:
        sink = io.BytesIO()
        pacsv.write_csv(self._flat(batch), sink, pacsv.WriteOptions(include_header=self._header))
        self._header = False
        return sink.getvalue()

    def tail(self, end: dict) -> bytes:
        if self._header:  # no rows: the header line alone
            return self.batch(pa.RecordBatch.from_pylist([], schema=self.schema))
        return b""

    def _flat(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """CSV has no nesting: list, struct and map values become their JSON text."""
        cols = []
        for col in batch.columns:
            if pa.types.is_nested(col.type):
                col = pa.array([None if v is None else self.dumps(v) for v in col.to_pylist()], pa.string())
            cols.append(col)
        return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


class NdjsonEncoder(Encoder):
    media = NDJSON_MEDIA

    def batch(self, batch: pa.RecordBatch) -> bytes:
        return "".join(self.dumps(row) + "\n" for row in batch.to_pylist()).encode()

    def tail(self, end: dict) -> bytes:
        return (self.dumps({"_end": end}) + "\n").encode()


ENCODERS: dict[str, type[Encoder]] = {"arrow": ArrowEncoder, "csv": CsvEncoder, "ndjson": NdjsonEncoder}


def prefetch(stream: ResultStream) -> list[pa.RecordBatch]:
    """The first batches, up to PREFETCH_BYTES or the stream's end (then the headers are exact)."""
    held, size = [], 0
    while size < PREFETCH_BYTES and (batch := stream.next_batch()) is not None:
        held.append(batch)
        size += batch.nbytes
    return held


def end_of(result: Result) -> dict:
    """What is known once the stream has ended: how, how many rows, the cost charged."""
    end = result.stream.end if result.stream is not None else None
    return {"audit_id": result.audit_id, "outcome": result.outcome, "ended": end.reason if end else FINISHED, "rows": end.rows if end else 0,
            "truncated": result.truncated, "suppressed_groups": result.suppressed_groups, "actual": result.actual,
            "rule": result.rule, "message": result.message}


class StreamedAnswer(StreamingResponse):
    """A streamed answer whose stream always ends — written out, cut, left by its client, or past
    the team's timeout — and whose reads and encoding run on one worker thread of its own."""

    def __init__(self, result: Result, encoder: Encoder, held: list[pa.RecordBatch], headers: dict[str, str]):
        self.result, self.encoder, self.held = result, encoder, held
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-stream")
        super().__init__(self._body(), media_type=encoder.media, headers=headers)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._worker, functools.partial(fn, *args))

    def _next(self) -> bytes | None:
        """The next chunk of the body: batches encoded until CHUNK_BYTES (fewer hops between the
        worker thread and the event loop), or None at the end."""
        parts, size = [], 0
        while size < CHUNK_BYTES and (batch := self.result.stream.next_batch()) is not None:
            parts.append(self.encoder.batch(batch))
            size += len(parts[-1])
        return b"".join(parts) if parts else None

    async def _body(self) -> AsyncIterator[bytes]:
        yield self.encoder.head()
        for batch in self.held:
            yield await self._run(self.encoder.batch, batch)
        self.held = []
        while (chunk := await self._run(self._next)) is not None:
            yield chunk
        end = self.result.stream.end
        if isinstance(self.encoder, CsvEncoder) and (end is None or end.reason != FINISHED or self.result.outcome != "ok"):
            raise _CutCsv()
        yield self.encoder.tail(end_of(self.result))

    async def __call__(self, scope, receive, send) -> None:
        stream = self.result.stream
        try:
            with anyio.move_on_after(stream.seconds_left() + 1):  # the watchdog stops DuckDB at the deadline; this, a stalled client
                await super().__call__(scope, receive, send)
        except _CutCsv:
            pass  # returning without the final chunk: the connection closes, the client sees an incomplete answer
        finally:
            with anyio.CancelScope(shield=True):
                reason = TIMEOUT if stream.seconds_left() <= 0 else CLIENT_GONE
                await self._run(stream.close, reason)  # a no-op if it has ended
            self._worker.shutdown(wait=False)


class _CutCsv(Exception):
    pass
