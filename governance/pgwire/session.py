"""One client connection: startup, SCRAM login, then simple and extended queries.

Analysts' SQL goes to `Gateway.query` (plan → policy → cost → reserve → run → settle → audit),
exactly as over HTTP. Session statements (SET, SHOW, BEGIN, …) are answered here, and catalog
probes run on a private in-memory DuckDB that holds empty copies of the team's granted
relations only, with external access off: it has no data to leak."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import re
import secrets
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from governance.gateway import Gateway
from governance.keys import KeyHash, scram_login
from governance.pgwire import codec, compat
from governance.pgwire.answer import BATCH_ROWS, Answer, Portal, Prepared, encoded
from governance.pgwire.answer_status import answer_status
from governance.pgwire.auth import MECHANISM, ScramExchange
from governance.pgwire.params import parameter_types
from governance.pgwire.refusals import refusal
from governance.pgwire.statements import (
    COMMAND_TAGS,
    FIXED_RE,
    PROBE_RE,
    SERVER_PARAMS,
    SESSION_RE,
    SHOW_EXTRA,
    SHOW_RE,
    VERSION,
    probe_connection,
    row_description,
    split_statements,
)
from governance.pgwire.types import TEXT, BadParameter, bind, literal, oid_of, placeholder_count
from governance.stream import BYTES_CAP, ROWS_CAP, TIMEOUT


@dataclass
class Stats:
    rows: int = 0
    batches: int = 0
    probe_fallbacks: int = 0  # catalog probes DuckDB could not run (answered empty)


@dataclass
class Session:
    gateway: Gateway
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    key: KeyHash | None = None
    user: str = ""
    in_txn: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    statements: dict[str, Prepared] = field(default_factory=dict)
    portals: dict[str, Portal] = field(default_factory=dict)
    probe: duckdb.DuckDBPyConnection | None = None
    granted: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # what the probe holds
    stats: Stats = field(default_factory=Stats)
    # The session's blocking work (the gateway, DuckDB reads, encoding) on one thread of its own:
    # a stream's batches are allocated and freed on one thread, so one allocator arena serves it.
    _worker: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgwire-session"))

    async def _blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._worker, functools.partial(fn, *args))

    # ------------------------------------------------------------------ startup and login
    async def start(self) -> bool:
        while True:
            code, body = await codec.read_startup(self.reader)
            if code in (codec.SSL_REQUEST, codec.GSSENC_REQUEST):
                self.writer.write(b"N")  # loopback only: no TLS, the client goes on in clear
                await self.writer.drain()
                continue
            if code == codec.CANCEL_REQUEST:
                return False
            if code != codec.PROTOCOL_V3:
                await self._fatal("08P01", "only protocol 3.0 is supported")
                return False
            params = codec.startup_params(body)
            self.user = params.get("user", "")
            return await self._login()

    async def _fatal(self, state: str, text: str) -> None:
        self.writer.write(codec.error_response(state, text, "FATAL"))
        await self.writer.drain()

    async def _login(self) -> bool:
        found = await self._blocking(scram_login, self.gateway.state, self.user)
        exchange = ScramExchange(found)
        self.writer.write(codec.auth_sasl([MECHANISM]))
        await self.writer.drain()
        kind, body = await codec.read_message(self.reader)
        buf = codec.Buffer(body)
        if kind != b"p" or buf.cstr() != MECHANISM:
            await self._fatal("28000", "SCRAM-SHA-256 authentication is required")
            return False
        n = buf.int32()
        try:
            server_first = exchange.first(buf.bytes_(n).decode())
        except Exception:
            await self._fatal("28P01", f'password authentication failed for user "{self.user}"')
            return False
        self.writer.write(codec.auth_sasl_continue(server_first.encode()))
        await self.writer.drain()
        kind, body = await codec.read_message(self.reader)
        final = exchange.final(body.decode()) if kind == b"p" else None
        if final is None or found is None:
            await self._fatal("28P01", f'password authentication failed for user "{self.user}"')
            return False
        key, info, _ = found
        if info.revoked_at is not None:
            await self._fatal("28000", f"key {info.name} was revoked")
            return False
        self.key = key
        out = codec.auth_sasl_final(final.encode()) + codec.auth_ok()
        out += b"".join(codec.parameter_status(k, v) for k, v in SERVER_PARAMS.items())
        out += codec.backend_key_data(secrets.randbelow(2**31), secrets.randbelow(2**31)) + codec.ready_for_query()
        self.writer.write(out)
        await self.writer.drain()
        return True

    # ------------------------------------------------------------------ the message loop
    async def serve(self) -> None:
        skip_to_sync = False  # after an error in an extended-query batch, until Sync
        while True:
            kind, body = await codec.read_message(self.reader)
            if kind == b"X":
                return
            if kind == b"S":
                skip_to_sync = False
                if not self.in_txn:  # a Sync outside a transaction ends its portals, as in Postgres
                    await self._blocking(self.close_answers)
                await self._send(codec.ready_for_query(b"T" if self.in_txn else b"I"))
                continue
            if kind == b"H":
                await self.writer.drain()
                continue
            if skip_to_sync and kind in b"PBDECF":
                continue
            buf = codec.Buffer(body)
            if kind == b"Q":
                await self._simple(buf.cstr())
            elif kind == b"P":
                skip_to_sync = not await self._parse(buf)
            elif kind == b"B":
                skip_to_sync = not await self._bind(buf)
            elif kind == b"D":
                skip_to_sync = not await self._describe(buf)
            elif kind == b"E":
                skip_to_sync = not await self._execute(buf)
            elif kind == b"C":
                what, name = buf.bytes_(1), buf.cstr()
                closed = (self.statements if what == b"S" else self.portals).pop(name, None)
                if isinstance(closed, Portal) and closed.answer is not None:
                    await self._blocking(closed.answer.close)
                self.writer.write(codec.CLOSE_COMPLETE)
            else:
                await self._send(codec.error_response("08P01", f"message type {kind!r} is not supported"))
                skip_to_sync = True

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    # ------------------------------------------------------------------ simple query
    async def _simple(self, sql: str) -> None:
        statements = [s for s in split_statements(sql)]
        if not statements:
            await self._send(codec.EMPTY_QUERY + codec.ready_for_query(b"T" if self.in_txn else b"I"))
            return
        for statement in statements:
            answer = await self._answer(statement)
            try:
                if answer.error is not None:
                    self.writer.write(answer.error)
                    break
                if answer.schema is not None:
                    self.writer.write(row_description(answer.schema))
                    await self._rows(answer)
                    if answer.error is not None:  # the stream failed once rows had gone out
                        self.writer.write(answer.error)
                        break
                self.writer.write(codec.command_complete(answer.tag))
            finally:
                if answer.stream is not None and answer.stream.end is None:  # the client went away mid-stream
                    await self._blocking(answer.close)
        await self._send(codec.ready_for_query(b"T" if self.in_txn else b"I"))

    async def _answer(self, sql: str) -> Answer:
        """Session statements here; catalog probes on the probe connection; all else the gateway."""
        m = SESSION_RE.match(sql)
        if m:
            word = m.group(1).split()[0].upper()
            if m.group(1).upper().startswith("ROLLBACK") and len(m.group(1).split()) > 1:
                return Answer("ROLLBACK")  # to a savepoint: the transaction goes on
            if word in ("BEGIN", "START"):
                self.in_txn = True
            elif word in ("COMMIT", "END", "ROLLBACK", "ABORT"):
                self.in_txn = False
            elif word == "SET":
                self._set(sql)
            return Answer(COMMAND_TAGS[word])
        m = SHOW_RE.match(sql)
        if m:
            name = m.group(1).strip().strip('"')
            lower = {k.lower(): v for k, v in {**SERVER_PARAMS, **SHOW_EXTRA, **self.settings}.items()}
            return Answer("SHOW", pa.table({name.split()[0]: [lower.get(name.lower(), "")]}))
        fixed = FIXED_RE.match(sql)
        if fixed:
            value = VERSION if "version" in fixed.group(1).lower() else "marts"
            return Answer("SELECT 1", pa.table({fixed.group(1).split(".")[-1].rstrip("()"): [value]}))
        if PROBE_RE.search(sql):
            return await self._blocking(self._probe, sql)
        answer = await self._blocking(self._query, sql)
        if answer.result is not None:
            self.writer.write(answer_status(answer.result, self.settings))  # which data it reflects, and its notes
        return answer

    def _query(self, sql: str) -> Answer:
        """The gateway's answer, its first rows already read: a small result ends (and is settled
        and audited) here, in the same worker thread."""
        result = self.gateway.stream(self.key, sql)
        if result.outcome != "ok" or result.stream is None:
            return Answer("", error=refusal(result))
        answer = Answer("SELECT", stream=result.stream, result=result)
        rows = 0
        while rows < BATCH_ROWS and (batch := result.stream.next_batch()) is not None:
            answer.pending.append(batch)
            rows += batch.num_rows
        return answer

    def _set(self, sql: str) -> None:
        m = re.match(r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?([\w.]+)\s*(?:=|TO)\s*(.+?)\s*;?\s*$", sql, re.I | re.S)
        if m:
            self.settings[m.group(1)] = m.group(2).strip("'\"")

    def _probe_con(self) -> duckdb.DuckDBPyConnection:
        if self.probe is None:
            self.granted = self.gateway.granted_columns(self.key)
            self.probe = probe_connection(self.granted, self.gateway.manifest)
        return self.probe

    def _probe(self, sql: str) -> Answer:
        settings = {**SERVER_PARAMS, **SHOW_EXTRA, **self.settings}
        try:
            table = self._probe_con().execute(compat.rewrite(sql, self.user, settings)).fetch_arrow_table()
        except duckdb.Error:
            # A probe DuckDB cannot answer gets an empty answer, never DuckDB's text.
            self.stats.probe_fallbacks += 1
            table = pa.table({"?column?": pa.array([], pa.string())})
        return Answer(f"SELECT {len(table)}", table)

    def _shape(self, prepared: Prepared) -> pa.Schema | None:
        """A statement's columns before it is bound (pg8000, asyncpg, JDBC ask for them): planned on
        the probe connection, whose tables are empty copies of the team's grant, so describing
        reads no data and bills nothing; the real run still goes through the gateway."""
        probe = self._probe_con()
        if not all(prepared.param_oids):  # fill in what the client left unknown, as Postgres would
            inferred = parameter_types(prepared.sql, len(prepared.param_oids), self.granted, self._oid_of_type)
            prepared.param_oids = [o or inferred[i] for i, o in enumerate(prepared.param_oids)]
        try:
            sql = bind(prepared.sql, ["NULL"] * len(prepared.param_oids))
            return probe.execute(f"SELECT * FROM ({sql}) AS cf_shape LIMIT 0").fetch_arrow_table().schema
        except (duckdb.Error, BadParameter):
            return None

    def _oid_of_type(self, duckdb_type: str) -> int:
        return oid_of(self._probe_con().execute(f"SELECT CAST(NULL AS {duckdb_type}) AS v").fetch_arrow_table().schema[0].type)[0]

    async def _rows(self, answer: Answer, formats: list[int] | None = None, max_rows: int = 0) -> bool:
        """DataRows a batch at a time, each encoded on a worker thread as it is read and written
        before the next is read: only one batch exists at once. `formats`: per column 0 text or
        1 binary (asyncpg asks for binary). `max_rows` > 0 (an Execute's row limit) sends at most
        that many; returns False when rows are left for the next Execute. The tag, a notice for
        a cut answer and an error for a failed stream are set on `answer` when it ends."""
        schema = answer.schema
        formats = formats or [0] * len(schema)
        left = max_rows
        while True:
            chunk = await self._blocking(encoded, answer, formats, left)
            if chunk is None:
                break
            data, n = chunk
            self.writer.write(data)
            await self._drain(answer)
            answer.sent += n
            self.stats.rows += n
            self.stats.batches += 1
            if max_rows:
                left -= n
                if left <= 0:
                    more = await self._blocking(answer.next_batch)  # the portal is suspended only if rows are left
                    if more is not None:
                        answer.pending.insert(0, more)
                        return False
                    break
        self._ended(answer)
        return True

    async def _drain(self, answer: Answer) -> None:
        """A client that stops reading holds its team's slot at most until the team's timeout."""
        if answer.stream is None:
            await self.writer.drain()
            return
        try:
            await asyncio.wait_for(self.writer.drain(), timeout=max(0.05, answer.stream.seconds_left()))
        except TimeoutError:
            await self._blocking(answer.stream.close, TIMEOUT)
            raise ConnectionError("the client stopped reading past its team's timeout") from None

    def _ended(self, answer: Answer) -> None:
        answer.tag = f"SELECT {answer.sent}" if answer.tag == "SELECT" else answer.tag
        end = answer.stream.end if answer.stream is not None else None
        if end is None:
            return
        if answer.result is not None and answer.result.outcome != "ok":  # failed once rows had gone out, or its audit failed
            answer.error = refusal(answer.result)
        elif end.reason in (BYTES_CAP, ROWS_CAP):
            what = "max_result_bytes" if end.reason == BYTES_CAP else "max_result_rows"
            self.writer.write(codec.notice(f"the result was cut at your team's {what} after {end.rows} rows (audit {answer.result.audit_id})"))

    def close_answers(self) -> None:
        """Portals end (at a Sync outside a transaction): streams still open end here, settled and audited."""
        for portal in self.portals.values():
            if portal.answer is not None:
                portal.answer.close()
        self.portals.clear()

    async def end(self) -> None:
        """The connection is over."""
        await self._blocking(self.close_answers)
        self._worker.shutdown(wait=False)

    # ------------------------------------------------------------------ extended query
    async def _parse(self, buf: codec.Buffer) -> bool:
        name, sql = buf.cstr(), buf.cstr()
        oids = [buf.int32() for _ in range(buf.int16())]
        count = placeholder_count(sql)
        oids += [0] * (count - len(oids))
        self.statements[name] = Prepared(sql, oids)
        self.writer.write(codec.PARSE_COMPLETE)
        return True

    async def _bind(self, buf: codec.Buffer) -> bool:
        portal, name, formats, values, result_formats = codec.read_bind(buf)
        prepared = self.statements.get(name)
        if prepared is None:
            await self._send(codec.error_response("26000", f'prepared statement "{name}" does not exist'))
            return False
        if any(f not in (0, 1) for f in result_formats):
            await self._send(codec.error_response("08P01", "result format codes are 0 (text) or 1 (binary)"))
            return False
        try:
            binary = [(formats[i] if len(formats) > 1 else (formats[0] if formats else 0)) == 1 for i in range(len(values))]
            oids = prepared.param_oids + [0] * (len(values) - len(prepared.param_oids))
            sql = bind(prepared.sql, [literal(v, oids[i], binary[i]) for i, v in enumerate(values)])
        except (BadParameter, UnicodeDecodeError) as e:
            await self._send(codec.error_response("22023", str(e)))
            return False
        old = self.portals.pop(portal, None)
        if old is not None and old.answer is not None:
            await self._blocking(old.answer.close)
        self.portals[portal] = Portal(sql, result_formats)
        self.writer.write(codec.BIND_COMPLETE)
        return True

    async def _describe(self, buf: codec.Buffer) -> bool:
        what, name = buf.bytes_(1), buf.cstr()
        if what == b"S":
            prepared = self.statements.get(name)
            if prepared is None:
                await self._send(codec.error_response("26000", f'prepared statement "{name}" does not exist'))
                return False
            schema = await self._blocking(self._shape, prepared)
            out = codec.parameter_description([o or TEXT for o in prepared.param_oids])
            self.writer.write(out + (row_description(schema) if schema is not None and len(schema) else codec.NO_DATA))
            return True
        portal = self.portals.get(name)
        if portal is None:
            await self._send(codec.error_response("34000", f'portal "{name}" does not exist'))
            return False
        if portal.answer is None:
            portal.answer = await self._answer(portal.sql)  # billed once: Execute sends this answer
        if portal.answer.error is not None:
            await self._send(portal.answer.error)
            return False
        schema = portal.answer.schema
        self.writer.write(row_description(schema, portal.formats(len(schema))) if schema is not None else codec.NO_DATA)
        return True

    async def _execute(self, buf: codec.Buffer) -> bool:
        name = buf.cstr()
        max_rows = buf.int32()  # 0: all; else the portal is suspended after that many (JDBC's fetch size)
        portal = self.portals.get(name)
        if portal is None:
            await self._send(codec.error_response("34000", f'portal "{name}" does not exist'))
            return False
        answer = portal.answer = portal.answer or await self._answer(portal.sql)
        if answer.error is not None:
            portal.answer = None
            await self._send(answer.error)
            return False
        if answer.schema is not None:
            if not await self._rows(answer, portal.formats(len(answer.schema)), max(0, max_rows)):
                self.writer.write(codec.PORTAL_SUSPENDED)
                return True
            if answer.error is not None:
                portal.answer = None
                await self._send(answer.error)
                return False
        portal.answer = None
        self.writer.write(codec.command_complete(answer.tag) if portal.sql.strip() else codec.EMPTY_QUERY)
        return True
