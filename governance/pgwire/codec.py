"""PostgreSQL v3 messages: reading frontend messages from a stream, building backend ones.

Every backend message is a type byte, an int32 length (itself included) and a body."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

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


@dataclass
class WireColumn:
    """One result column of a batch as DataRow fields: where the NULLs are, and each value's
    wire bytes in one of three forms (a NULL's value is empty in each):

    - fixed: one numpy element per row, already in network byte order (binary numbers, dates);
    - words: text formatted by numpy, `lengths` bytes per row at the start of a row of 8-byte
      words (shape rows × words; what follows a value in its words is never sent);
    - values: an Arrow binary or string array (what Arrow casts, strings, JSON, …)."""

    nulls: np.ndarray  # bool per row
    fixed: np.ndarray | None = None
    words: np.ndarray | None = None
    lengths: np.ndarray | None = None
    values: pa.Array | None = None


WORD = 8  # bytes a variable-width value is copied by
LONG_VALUE = 64  # past this many bytes a column's values are copied byte by byte, not by words


def data_rows(columns: Sequence[WireColumn]) -> bytes:
    """Many DataRows at once, the same bytes as `b"".join(data_row(r) for r in rows)` without a
    Python loop per row or value. Every field's length and every row's size are numpy arrays;
    their cumulative sum places each row in one preallocated buffer; then each column is
    written for all rows at once by numpy fancy assignment through unaligned views of that
    buffer: its length prefix with its fixed-width value or first 8-byte word as one element,
    then any further words. A word may run up to 8 bytes past its value's end; the passes go in
    field order and the rows' headers (11 bytes: type, length, column count, first prefix) are
    written last, so every stray byte is overwritten by the field it belongs to."""
    if not columns:
        raise ValueError("data_rows needs at least one column (a row of none is data_row([]))")
    n = len(columns[0].nulls)
    if n == 0:
        return b""
    lengths = [_lengths(c) for c in columns]
    size = np.full(n, 1 + 4 + 2 + 4 * len(columns), dtype=np.int64)  # type byte, length, column count, prefixes
    for length in lengths:
        size += length
    ends = np.cumsum(size)
    starts = ends - size
    total = int(ends[-1])
    out = np.empty(total + WORD, dtype=np.uint8)  # a word written at the last value may run past the end
    pos = starts + 7  # where each row's first length prefix goes
    for j, (col, length) in enumerate(zip(columns, lengths, strict=True)):
        _write_field(out, pos, col, length, with_prefix=j > 0)  # the first prefix goes with the header
        pos += 4 + length
    head = np.empty(n, dtype=np.dtype([("kind", "u1"), ("length", ">i4"), ("columns", ">i2"), ("first", ">i4")]))
    head["kind"], head["length"], head["columns"] = ord("D"), size - 1, len(columns)
    head["first"] = np.where(columns[0].nulls, -1, lengths[0])
    window(out, "V11")[starts] = head.view("V11")
    return out[:total].tobytes()


def _lengths(col: WireColumn) -> np.ndarray:
    """Bytes each value takes on the wire (0 for a NULL)."""
    if col.fixed is not None:
        return np.where(col.nulls, 0, col.fixed.dtype.itemsize)
    if col.words is not None:
        return col.lengths.astype(np.int64)
    return np.diff(_offsets(col.values)).astype(np.int64)


def _offsets(values: pa.Array) -> np.ndarray:
    if values.type not in (pa.binary(), pa.string()):
        raise TypeError(f"data_rows takes binary or string values, not {values.type}")
    return np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values) + 1, offset=values.offset * 4)


def window(buf: np.ndarray, dtype: str) -> np.ndarray:
    """`buf` seen as overlapping elements of `dtype`, one starting at every byte: element k is
    buf[k:k + itemsize]. Writing it at an index writes those bytes, unaligned."""
    width = np.dtype(dtype).itemsize
    return np.ndarray(shape=(len(buf) - width + 1,), dtype=dtype, buffer=buf, strides=(1,))


def _write_field(out: np.ndarray, pos: np.ndarray, col: WireColumn, length: np.ndarray, with_prefix: bool) -> None:
    """One column's field in every row: `pos` is where its length prefix goes."""
    if col.values is not None and int(length.max()) > LONG_VALUE:
        if with_prefix:
            window(out, ">i4")[pos] = np.where(col.nulls, -1, length)
        _copy_bytes(out, pos + 4, col.values, length)
        return
    if col.fixed is not None:
        first, more = col.fixed.view(f"V{col.fixed.dtype.itemsize}"), None
    else:
        words = col.words if col.words is not None else words_of(col.values, int(length.max()))
        first, more = words[:, 0].view("V8"), words
    if with_prefix:
        field = np.empty(len(first), dtype=[("prefix", ">i4"), ("value", first.dtype)])
        field["prefix"], field["value"] = np.where(col.nulls, -1, length), first
        first, at = field.view(f"V{field.dtype.itemsize}"), pos
    else:
        at = pos + 4
    if col.fixed is not None and col.nulls.any():  # a NULL's field is its prefix alone
        keep = ~col.nulls
        window(out, first.dtype.str)[at[keep]] = first[keep]
        if with_prefix:
            window(out, ">i4")[pos[col.nulls]] = -1
    else:
        window(out, first.dtype.str)[at] = first
    if more is not None:
        view = window(out, "V8")
        for k in range(1, more.shape[1]):
            longer = length > k * WORD
            view[pos[longer] + 4 + k * WORD] = more[longer, k].view("V8")


def words_of(values: pa.Array, longest: int) -> np.ndarray:
    """Each value's bytes from the start of a row of 8-byte words, gathered from the Arrow
    data buffer through an overlapping view (what follows a value in its last word is the next
    value's bytes, never sent)."""
    offsets = _offsets(values)
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.empty(last - first + longest + WORD, dtype=np.uint8)  # room for the last value's whole words
    if last > first:
        data[:last - first] = np.frombuffer(values.buffers()[2], dtype=np.uint8, count=last - first, offset=first)
    source = offsets[:-1] - first
    view = window(data, "<u8")
    return np.stack([view[source + k * WORD] for k in range(max(1, -(-longest // WORD)))], axis=1)


def _copy_bytes(out: np.ndarray, at: np.ndarray, values: pa.Array, length: np.ndarray) -> None:
    """Long values: one index per byte (exact writes, and no pass per word of a long value)."""
    offsets = _offsets(values)
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8, count=last - first, offset=first)
    out[np.repeat(at - (offsets[:-1] - first), length) + np.arange(last - first)] = data


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
