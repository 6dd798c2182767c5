"""Arrow (DuckDB) types → PostgreSQL type OIDs, values → Postgres text format, and bound
parameters → SQL literals."""

from __future__ import annotations

import json
import re
import struct
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from governance.pgwire.codec import WireColumn, window, words_of

BOOL, BYTEA, INT8, INT2, INT4, TEXT, JSON, FLOAT4, FLOAT8, UNKNOWN = 16, 17, 20, 21, 23, 25, 114, 700, 701, 705
VARCHAR, DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, NUMERIC, UUID = 1043, 1082, 1083, 1114, 1184, 1186, 1700, 2950


def oid_of(t: pa.DataType) -> tuple[int, int]:
    """(oid, typlen) of an Arrow type; lists, structs and maps go out as JSON text."""
    if pa.types.is_boolean(t):
        return BOOL, 1
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return INT2, 2
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return INT4, 4
    if pa.types.is_integer(t):
        return INT8, 8
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return FLOAT4, 4
    if pa.types.is_floating(t):
        return FLOAT8, 8
    if pa.types.is_decimal(t):
        return NUMERIC, -1
    if pa.types.is_date(t):
        return DATE, 4
    if pa.types.is_timestamp(t):
        return (TIMESTAMPTZ if t.tz else TIMESTAMP), 8
    if pa.types.is_time(t):
        return TIME, 8
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return INTERVAL, 16
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return BYTEA, -1
    if pa.types.is_nested(t):
        return JSON, -1
    return TEXT, -1


def _json_default(v):
    return v.isoformat() if isinstance(v, (date, datetime)) else str(v)


def text_column(col: pa.Array) -> list[bytes | None]:
    """One column of a batch in Postgres text format (NULL as None)."""
    t = col.type
    if pa.types.is_boolean(t):
        return [None if v is None else (b"t" if v else b"f") for v in col.to_pylist()]
    if pa.types.is_nested(t):
        return [None if v is None else json.dumps(v, default=_json_default).encode() for v in col.to_pylist()]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return [None if v is None else b"\\x" + v.hex().encode() for v in col.to_pylist()]
    if pa.types.is_timestamp(t) or pa.types.is_time(t):
        return [None if v is None else _clock(v).encode() for v in col.to_pylist()]
    if pa.types.is_floating(t):
        single = pa.types.is_float16(t) or pa.types.is_float32(t)
        return [None if v is None else _float(v, single).encode() for v in col.to_pylist()]
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return [None if v is None else str(v).encode() for v in col.to_pylist()]
    as_text = pc.cast(col, pa.string())  # ints, decimals, dates, times, timestamps: Arrow's ISO text
    return [None if v is None else v.encode() for v in as_text.to_pylist()]


def _clock(v: datetime | time) -> str:
    """PostgreSQL's text of a timestamp, timestamptz or time: ISO with a space, the fraction
    without its trailing zeros (none when whole), a zone as +HH or +HH:MM."""
    text = v.replace(tzinfo=None).isoformat(sep=" ") if isinstance(v, datetime) else v.isoformat()
    text = text.rstrip("0") if v.microsecond else text  # isoformat writes no fraction when whole, else six digits
    offset = v.utcoffset() if isinstance(v, datetime) else None
    if offset is None:
        return text
    minutes = int(offset.total_seconds()) // 60
    sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
    return text + sign + f"{minutes // 60:02d}" + (f":{minutes % 60:02d}" if minutes % 60 else "")


def _float(v: float, single: bool = False) -> str:
    """PostgreSQL's text of a float8 (or float4 if `single`): the shortest digits that read back
    as the same value, laid out as PostgreSQL's float8out/float4out do (positional while the
    decimal exponent is in [-4, 15), or [-4, 6) for float4; else d.ddde±XX)."""
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    shortest = np.format_float_scientific(np.float32(v) if single else np.float64(v), unique=True, trim="-")
    mantissa, exponent = shortest.split("e")
    sign, digits = ("-", mantissa[1:]) if mantissa.startswith("-") else ("", mantissa)
    digits = digits.replace(".", "").rstrip("0") or "0"
    e = int(exponent)
    if digits == "0":
        return sign + "0"
    if -4 <= e < (6 if single else 15):
        if e < 0:
            return sign + "0." + "0" * (-e - 1) + digits
        whole, frac = (digits + "0" * e)[:e + 1], digits[e + 1:]
        return sign + whole + ("." + frac if frac else "")
    return sign + digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + ("e-" if e < 0 else "e+") + f"{abs(e):02d}"


class BadParameter(ValueError):
    pass


def _quote(s: str) -> str:
    if "\0" in s:
        raise BadParameter("a parameter holds a NUL byte")
    return "'" + s.replace("'", "''") + "'"


def literal(value: bytes | None, oid: int, binary: bool) -> str:
    """A bound parameter as a SQL literal: validated by its type, quoted otherwise, so a value
    can never become SQL of its own."""
    if value is None:
        return "NULL"
    if binary:
        return _binary_literal(value, oid)
    text = value.decode()
    try:
        if oid in (INT2, INT4, INT8):
            return str(int(text))
        if oid in (FLOAT4, FLOAT8):
            return f"{float(text)!r}::DOUBLE"
        if oid == NUMERIC:
            return str(Decimal(text))
        if oid == BOOL:
            return "TRUE" if text.lower() in ("t", "true", "1", "on", "yes") else "FALSE"
        if oid == DATE:
            return f"DATE {_quote(date.fromisoformat(text).isoformat())}"
        if oid in (TIMESTAMP, TIMESTAMPTZ):
            return f"TIMESTAMP {_quote(datetime.fromisoformat(text).replace(tzinfo=None).isoformat(sep=' '))}"
    except (ValueError, ArithmeticError):
        raise BadParameter(f"parameter {text[:40]!r} is not a valid value of type oid {oid}") from None
    return _quote(text)


PG_EPOCH = date(2000, 1, 1)


def _binary_literal(value: bytes, oid: int) -> str:
    if oid == DATE and len(value) == 4:
        return f"DATE '{date.fromordinal(PG_EPOCH.toordinal() + struct.unpack('!i', value)[0]).isoformat()}'"
    if oid in (TIMESTAMP, TIMESTAMPTZ) and len(value) == 8:
        micros = struct.unpack("!q", value)[0]
        return f"TIMESTAMP '{(datetime(2000, 1, 1) + timedelta(microseconds=micros)).isoformat(sep=' ')}'"
    fmt = {INT2: "!h", INT4: "!i", INT8: "!q", FLOAT4: "!f", FLOAT8: "!d", BOOL: "!?"}.get(oid)
    if fmt is None or struct.calcsize(fmt) != len(value):
        if oid in (TEXT, VARCHAR, UNKNOWN, 0):
            return _quote(value.decode())
        raise BadParameter(f"binary parameters of type oid {oid} are not supported; send text")
    (v,) = struct.unpack(fmt, value)
    return ("TRUE" if v else "FALSE") if oid == BOOL else repr(v)


_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\$(\d+)(?!\d)", re.S)


def bind(sql: str, literals: list[str]) -> str:
    """Replace $1, $2, … outside strings, quoted names and comments."""

    def sub(m: re.Match) -> str:
        if m.group(1) is None:
            return m.group(0)
        n = int(m.group(1))
        if not 1 <= n <= len(literals):
            raise BadParameter(f"there is no parameter ${n}")
        return literals[n - 1]

    return _TOKENS.sub(sub, sql)


def placeholder_count(sql: str) -> int:
    return max((int(m.group(1)) for m in _TOKENS.finditer(sql) if m.group(1)), default=0)


# ---------------------------------------------------------------- binary result format
# asyncpg (and JDBC for some types) ask for results in binary. Each function turns one Arrow
# column into the Postgres binary value of the OID `oid_of` gives it.

_PG_EPOCH_DAYS = 10957  # 2000-01-01 as days since 1970-01-01
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86_400_000_000


def _numeric(value: Decimal) -> bytes:
    """Postgres NUMERIC binary: ndigits, weight, sign, dscale, then base-10000 digits."""
    if value.is_nan():
        return struct.pack("!hhhh", 0, 0, 0xC000 - 0x10000, 0)
    sign, digits, exponent = value.as_tuple()
    dscale = max(0, -exponent)
    text = "".join(map(str, digits))
    int_len = len(text) + exponent  # digits before the point (negative: zeros after it first)
    int_part = text[:int_len] if exponent < 0 else text + "0" * exponent
    frac_part = text[int_len:] if exponent < 0 else ""
    if int_len < 0:
        frac_part, int_part = "0" * -int_len + text, ""
    int_part = int_part.lstrip("0")
    int_part = "0" * (-len(int_part) % 4) + int_part
    frac_part = frac_part + "0" * (-len(frac_part) % 4)
    groups = [int(int_part[i:i + 4]) for i in range(0, len(int_part), 4)] + [int(frac_part[i:i + 4]) for i in range(0, len(frac_part), 4)]
    weight = len(int_part) // 4 - 1
    while groups and groups[-1] == 0:  # trailing zero groups carry nothing (dscale keeps the scale)
        groups.pop()
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    if not groups:
        weight = 0
    return struct.pack(f"!hhhh{len(groups)}h", len(groups), weight, 0x4000 if sign else 0, dscale, *groups)


_FIXED = {INT2: ">i2", INT4: ">i4", INT8: ">i8", FLOAT4: ">f4", FLOAT8: ">f8"}


def _binary_fixed(col: pa.Array) -> np.ndarray | None:
    """The column's binary values as big-endian numpy elements (NULLs as zeros, masked by the
    caller), or None for a type whose binary values vary in width."""
    t = col.type
    oid, _ = oid_of(t)
    if oid == BOOL:
        return col.fill_null(False).to_numpy(zero_copy_only=False).astype("u1")
    if oid in _FIXED:
        values = col.fill_null(0).to_numpy(zero_copy_only=False)
        if pa.types.is_uint64(t) and len(values) and values.max() > np.iinfo(np.int64).max:
            raise BadParameter("a UBIGINT value above 9223372036854775807 cannot be sent as int8 in binary; ask for text")
        return values.astype(_FIXED[oid])
    if oid == DATE:
        days = pc.cast(pc.cast(col, pa.date32()), pa.int32()).fill_null(0).to_numpy(zero_copy_only=False)
        return (days - _PG_EPOCH_DAYS).astype(">i4")
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        us = pc.cast(pc.cast(col, pa.timestamp("us", t.tz)), pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        return (us - _PG_EPOCH_US).astype(">i8")
    if oid == TIME:
        return pc.cast(pc.cast(col, pa.time64("us")), pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(">i8")
    return None


def binary_column(col: pa.Array) -> list[bytes | None]:
    """A variable-width column of a batch in Postgres binary format (NULL as None)."""
    oid, _ = oid_of(col.type)
    if oid == NUMERIC:
        return [None if v is None else _numeric(v) for v in col.to_pylist()]
    if oid == INTERVAL:
        out: list[bytes | None] = []
        for v in col.to_pylist():
            if v is None:
                out.append(None)
            elif isinstance(v, timedelta):
                out.append(struct.pack("!qii", v.seconds * 1_000_000 + v.microseconds, v.days, 0))
            else:  # MonthDayNano
                out.append(struct.pack("!qii", v.nanoseconds // 1000, v.days, v.months))
        return out
    if oid == BYTEA:
        return [None if v is None else bytes(v) for v in col.to_pylist()]
    return text_column(col)  # text, varchar, json: the binary format is the text


def _cast_by_arrow(t: pa.DataType) -> bool:
    """Types whose Postgres text is Arrow's own cast to string: one vectorised call."""
    return pa.types.is_decimal(t) or pa.types.is_date(t)


# the two digits of 0..99 as they lie in memory, first digit first (numpy is little-endian here)
_PAIRS = np.array([(48 + r // 10) | (48 + r % 10) << 8 for r in range(100)], dtype="<u2")


def _integer_words(col: pa.Array, nulls: np.ndarray) -> WireColumn:
    """Integers in decimal text, formatted by numpy for the whole column: the digits go right
    to left, two at a time, into a row of 8-byte words, right-aligned; a minus sign before
    them; then each row is shifted left by its own number of unused bytes. Faster than Arrow's
    cast to string, and no string array to copy from again."""
    values = col.fill_null(0).to_numpy(zero_copy_only=False)
    if not len(values):
        return WireColumn(nulls, words=np.zeros((0, 1), dtype=np.uint64), lengths=np.zeros(0, dtype=np.int64))
    if values.dtype.kind == "i":
        values = values.astype(np.int64)
        negative = values < 0
        magnitude = values.view(np.uint64).copy()
        np.negative(magnitude, out=magnitude, where=negative)  # two's complement: |INT64_MIN| fits a uint64
    else:
        negative, magnitude = np.zeros(len(values), dtype=bool), values.astype(np.uint64)
    digits_max = len(str(int(magnitude.max())))
    digits = np.ones(len(values), dtype=np.int64)
    for k in range(1, digits_max):
        digits += magnitude >= np.uint64(10 ** k)
    length = digits + negative
    words = -(-(digits_max + 1) // 8)
    width = 8 * words
    right = np.empty((len(values), width), dtype=np.uint8)
    pairs, rest = right.view("<u2"), magnitude
    for k in range(-(-digits_max // 2)):
        higher = rest // np.uint64(100)  # a division by a constant is fast in numpy; its remainder is not
        pairs[:, width // 2 - 1 - k] = _PAIRS[rest - higher * np.uint64(100)]
        rest = higher
    if negative.any():
        rows = np.flatnonzero(negative)
        right[rows, width - length[rows]] = ord("-")
    unused = width - length  # bytes before each row's text
    if words == 1:  # a shift moves each row's text to the start of its word
        left = (right.view("<u8")[:, 0] >> (unused.astype(np.uint64) * np.uint64(8)))[:, None]
    else:
        flat = np.concatenate([right.ravel(), np.zeros(width, dtype=np.uint8)])  # the last row's words read past it
        start = np.arange(len(values)) * width + unused
        left = np.stack([window(flat, "<u8")[start + 8 * j] for j in range(words)], axis=1)
    return WireColumn(nulls, words=left, lengths=np.where(nulls, 0, length))


def _float_text(col: pa.Array) -> pa.Array:
    """Floats in PostgreSQL's text (the layout `_float` documents) for the whole column. Arrow's
    cast to string writes each value's shortest digits, the same digits PostgreSQL writes, and
    lays them out as PostgreSQL does for every value PostgreSQL writes positionally between 1e-4
    and 1e15 (1e6 for float4) and every one it writes with a two-digit or longer exponent. The
    others (Arrow's `0.00001`, `1e+14`, `2.5e-7`; NaN and infinities) are written value by
    value; a thin band at each edge goes that way too, so rounding there cannot misplace one."""
    single = pa.types.is_float16(col.type) or pa.types.is_float32(col.type)
    col = pc.cast(col, pa.float32() if single else pa.float64())
    text = pc.cast(col, pa.string())
    size = np.abs(col.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.float64)
    exponent = pc.match_substring(text, "e").fill_null(False).to_numpy(zero_copy_only=False)
    high, margin = (1e6 if single else 1e15), 1 + 1e-6
    kept = np.where(exponent, (size >= high * margin) & ((size >= 1e10 * margin) | ~np.isfinite(size)) | (size < 1e-9 / margin),
                    (size == 0) | ((size >= 1e-4 * margin) & (size < high / margin)))
    kept &= np.isfinite(size)
    redo = ~kept & ~col.is_null().to_numpy(zero_copy_only=False)
    if not redo.any():
        return text
    again = [_float(v, single) for v in pc.filter(col, pa.array(redo)).to_pylist()]
    return pc.replace_with_mask(text, pa.array(redo), pa.array(again, pa.string()))


_UTC = ("UTC", "Etc/UTC", "+00:00", "Z")


def _clock_words(col: pa.Array, nulls: np.ndarray) -> WireColumn | None:
    """Timestamps (without a zone, or in UTC) and times of microseconds in PostgreSQL's text for
    the whole column: Arrow's cast writes six fraction digits; each row's length drops the
    fraction's trailing zeros, counted from the microseconds (the dot too when whole), and a
    UTC timestamp gets "+00" after it. None for other units and zones (value by value)."""
    t = col.type
    zoned = pa.types.is_timestamp(t) and t.tz is not None
    if t.unit != "us" or (zoned and t.tz not in _UTC):
        return None
    wall = col.cast(pa.timestamp("us")) if zoned else col  # UTC: the instant is the wall time
    text = pc.cast(wall, pa.string())
    n = len(text)
    if not n:
        return WireColumn(nulls, words=np.zeros((0, 1), dtype=np.uint64), lengths=np.zeros(0, dtype=np.int64))
    size = np.diff(np.frombuffer(text.buffers()[1], dtype=np.int32, count=n + 1, offset=text.offset * 4)).astype(np.int64)
    fraction = pc.cast(wall.fill_null(0), pa.int64()).to_numpy(zero_copy_only=False) % 1_000_000
    zeros = sum((fraction % 10 ** k == 0).astype(np.int64) for k in range(1, 7))
    length = size - np.where(fraction == 0, 7, zeros)
    words = words_of(text, int(size.max()) + (3 if zoned else 0))
    if zoned:
        raw = words.view(np.uint8).reshape(n, -1)
        rows = np.arange(n)
        for i, byte in enumerate(b"+00"):
            raw[rows, length + i] = byte
        length = length + 3
    return WireColumn(nulls, words=words, lengths=np.where(nulls, 0, length))


def wire_column(col: pa.Array, binary: bool) -> WireColumn:
    """One column of a batch in text or binary format, for codec.data_rows. Fixed-width binary
    values, booleans, integers, floats, decimals, dates, timestamps (without a zone or in UTC),
    times and strings are converted for the whole column at once; other types value by value."""
    nulls = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else np.zeros(len(col), dtype=bool)
    t = col.type
    if binary and (fixed := _binary_fixed(col)) is not None:
        return WireColumn(nulls, fixed=fixed)
    if not binary and (pa.types.is_timestamp(t) or pa.types.is_time(t)) and (clock := _clock_words(col, nulls)) is not None:
        return clock
    if not binary and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        out = col
    elif not binary and pa.types.is_boolean(t):
        out = pc.if_else(col, "t", "f")
    elif not binary and pa.types.is_integer(t):
        return _integer_words(col, nulls)
    elif not binary and pa.types.is_floating(t):
        out = _float_text(col)
    elif not binary and _cast_by_arrow(t):
        out = pc.cast(col, pa.string())
    else:
        values = binary_column(col) if binary else text_column(col)
        out = pa.array(values, pa.binary())
    out = out.view(pa.binary()) if pa.types.is_string(out.type) else out.cast(pa.binary())  # the same bytes: no copy
    return WireColumn(nulls, values=pc.fill_null(out, b"") if out.null_count else out)
