"""Arrow (DuckDB) types → PostgreSQL type OIDs, values → Postgres text format, and bound
parameters → SQL literals."""

from __future__ import annotations

import json
import re
import struct
from datetime import date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

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
    if pa.types.is_timestamp(t) and t.tz:
        return [None if v is None else v.isoformat(sep=" ").encode() for v in col.to_pylist()]
    if pa.types.is_floating(t):
        return [None if v is None else _float(v).encode() for v in col.to_pylist()]
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return [None if v is None else str(v).encode() for v in col.to_pylist()]
    as_text = pc.cast(col, pa.string())  # ints, decimals, dates, times, timestamps: Arrow's ISO text
    return [None if v is None else v.encode() for v in as_text.to_pylist()]


def _float(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


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
