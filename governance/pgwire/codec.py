"""PostgreSQL v3 messages: reading frontend messages from a stream, building backend ones.

Every backend message is a type byte, an int32 length (itself included) and a body."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_V3 = 196608
MAX_MESSAGE = 16 * 1024 * 1024  # a bounded read: no client makes the server buffer more


class ProtocolError(Exception):
    pass


async def read_startup(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(code, body) of the untyped first message: SSLRequest, CancelRequest or StartupMessage."""
    (length,) = struct.unpack("!i", await reader.readexactly(4))
    if not 8 <= length <= 10_000:
        raise ProtocolError("bad startup length")
    body = await reader.readexactly(length - 4)
    return struct.unpack("!i", body[:4])[0], body[4:]


def startup_params(body: bytes) -> dict[str, str]:
    parts = body.split(b"\0")
    return {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2) if parts[i]}


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    if not 4 <= length <= MAX_MESSAGE:
        raise ProtocolError("bad message length")
    return kind, await reader.readexactly(length - 4)


class Buffer:
    """Reads the fields of one frontend message's body."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def cstr(self) -> str:
        end = self.data.index(b"\0", self.pos)
        out = self.data[self.pos:end].decode()
        self.pos = end + 1
        return out

    def int16(self) -> int:
        (v,) = struct.unpack_from("!h", self.data, self.pos)
        self.pos += 2
        return v

    def int32(self) -> int:
        (v,) = struct.unpack_from("!i", self.data, self.pos)
        self.pos += 4
        return v

    def bytes_(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        if len(out) != n:
            raise ProtocolError("truncated message")
        self.pos += n
        return out


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def auth_sasl(mechanisms: Sequence[str]) -> bytes:
    return message(b"R", struct.pack("!i", 10) + b"".join(cstr(m) for m in mechanisms) + b"\0")


def auth_sasl_continue(data: bytes) -> bytes:
    return message(b"R", struct.pack("!i", 11) + data)


def auth_sasl_final(data: bytes) -> bytes:
    return message(b"R", struct.pack("!i", 12) + data)


def auth_ok() -> bytes:
    return message(b"R", struct.pack("!i", 0))


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!ii", pid, secret))


def ready_for_query(status: bytes = b"I") -> bytes:
    return message(b"Z", status)


def row_description(fields: Sequence[tuple[str, int, int]], formats: Sequence[int] = ()) -> bytes:
    """fields: (name, type oid, type size); formats: 0 text / 1 binary per field (default text)."""
    body = struct.pack("!h", len(fields))
    for i, (name, oid, size) in enumerate(fields):
        body += cstr(name) + struct.pack("!ihihih", 0, 0, oid, size, -1, formats[i] if i < len(formats) else 0)
    return message(b"T", body)


def data_row(values: Sequence[bytes | None]) -> bytes:
    parts = [struct.pack("!h", len(values))]
    for v in values:
        parts.append(b"\xff\xff\xff\xff" if v is None else struct.pack("!i", len(v)) + v)
    return message(b"D", b"".join(parts))


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def error_response(sqlstate: str, text: str, severity: str = "ERROR") -> bytes:
    body = b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(sqlstate) + b"M" + cstr(text) + b"\0"
    return message(b"E", body)


def notice(text: str) -> bytes:
    return message(b"N", b"S" + cstr("NOTICE") + b"V" + cstr("NOTICE") + b"C" + cstr("00000") + b"M" + cstr(text) + b"\0")


def parameter_description(oids: Sequence[int]) -> bytes:
    return message(b"t", struct.pack("!h", len(oids)) + b"".join(struct.pack("!i", o) for o in oids))


PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
EMPTY_QUERY = message(b"I")
PORTAL_SUSPENDED = message(b"s")


def data_rows(columns: Sequence, nulls: Sequence) -> bytes:
    """Many DataRows at once: `columns` are Arrow binary/string arrays of the values' wire bytes
    (nulls filled with empty values), `nulls` a boolean numpy mask per column. Each row's header
    and each value's length prefix are built as fixed-width Arrow arrays with numpy, then Arrow
    joins them element-wise; the joined array's data buffer is the rows back to back. The same
    bytes as `b"".join(data_row(r) for r in rows)`, without a Python loop per value and with no
    temporary bigger than the batch's own bytes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(columns[0]) if columns else 0
    if n == 0:
        return b""
    row_length = np.full(n, 4 + 2 + 4 * len(columns), dtype=np.int64)  # the length counts itself and the column count
    parts = []
    for col, null in zip(columns, nulls, strict=True):
        col = col if col.type == pa.binary() else col.cast(pa.binary())
        length = pc.binary_length(col).to_numpy(zero_copy_only=False)
        row_length += length
        prefix = np.where(null, -1, length) if null.any() else length
        parts += [_fixed_width(prefix.astype(">i4").tobytes(), 4, n), col]
    head = np.empty(n, dtype=np.dtype([("kind", "u1"), ("length", ">i4"), ("columns", ">i2")]))
    head["kind"], head["length"], head["columns"] = ord("D"), row_length, len(columns)
    joined = pc.binary_join_element_wise(_fixed_width(head.tobytes(), 7, n), *parts, b"")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset:joined.offset + n + 1]
    return joined.buffers()[2][int(offsets[0]):int(offsets[-1])].to_pybytes()


def _fixed_width(raw: bytes, width: int, n: int):
    import pyarrow as pa

    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(raw)]).cast(pa.binary())


def read_bind(buf: Buffer) -> tuple[str, str, list[int], list[bytes | None], list[int]]:
    """A Bind message: portal, statement, parameter format codes, values (None for NULL) and
    the result format codes."""
    portal, name = buf.cstr(), buf.cstr()
    formats = [buf.int16() for _ in range(buf.int16())]
    values: list[bytes | None] = []
    for _ in range(buf.int16()):
        n = buf.int32()
        values.append(None if n < 0 else buf.bytes_(n))
    return portal, name, formats, values, [buf.int16() for _ in range(buf.int16())]
