"""DataRows encoded for a whole record batch at once (codec.data_rows, types.wire_column) are
byte for byte what the one-row encoder (codec.data_row) gives, value by value: every type the
endpoint maps, NULLs, empty strings, unicode, values across the copy's 8-byte words, sliced
batches, text and binary format. The clients' side of the same bytes is tests/test_pgwire*.py."""

from __future__ import annotations

import random
import struct
from datetime import UTC, date, datetime, time

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from governance.pgwire import codec
from governance.pgwire.answer import batch_data_rows
from governance.pgwire.types import (
    BOOL,
    DATE,
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    TIME,
    TIMESTAMP,
    TIMESTAMPTZ,
    binary_column,
    oid_of,
    text_column,
    wire_column,
)

# every type the endpoint maps, each column with NULLs among its values
ALL_TYPES = """
SELECT
  CASE WHEN i % 5 = 0 THEN NULL ELSE (i % 100 - 50)::TINYINT END AS tiny,
  CASE WHEN i % 6 = 0 THEN NULL ELSE (i * 7 - 3000)::SMALLINT END AS small,
  CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 104729 - 2000000000)::INTEGER END AS int,
  CASE WHEN i % 4 = 0 THEN NULL ELSE (i * 9007199254 - 1000000000000)::BIGINT END AS big,
  (i % 250)::UTINYINT AS utiny, (i * 3)::USMALLINT AS usmall, (i * 1000003)::UINTEGER AS uint, (i * 12345678901)::UBIGINT AS ubig,
  CASE WHEN i % 3 = 0 THEN NULL ELSE i % 2 = 0 END AS flag,
  CASE WHEN i % 9 = 0 THEN NULL ELSE (i / 7.0)::FLOAT END AS real,
  CASE WHEN i % 8 = 0 THEN NULL WHEN i % 8 = 1 THEN 'nan'::DOUBLE WHEN i % 8 = 2 THEN '-inf'::DOUBLE
       WHEN i % 8 = 3 THEN 1e300 * i ELSE i / 3.0 - 40 END AS dbl,
  CASE WHEN i % 5 = 1 THEN NULL ELSE (i * 1.234 - 99)::DECIMAL(12, 3) END AS dec,
  CASE WHEN i % 6 = 1 THEN NULL ELSE DATE '1999-12-25' + (i * 37)::INT END AS day,
  CASE WHEN i % 7 = 1 THEN NULL ELSE TIME '00:00:00' + to_microseconds(i * 1234567) END AS clock,
  CASE WHEN i % 4 = 1 THEN NULL ELSE TIMESTAMP '1999-12-31 23:59:58' + to_microseconds(i * 987654321) END AS ts,
  CASE WHEN i % 3 = 1 THEN NULL ELSE TIMESTAMPTZ '2024-03-31 00:30:00+00' + to_microseconds(i * 600000001) END AS tstz,
  CASE WHEN i % 5 = 2 THEN NULL ELSE to_days((i % 40)::INT) + to_microseconds(i * 1001) END AS span,
  CASE WHEN i % 4 = 2 THEN NULL WHEN i % 4 = 3 THEN '' ELSE repeat('€ä', (i % 13)::INT) || i::VARCHAR END AS txt,
  CASE WHEN i % 6 = 2 THEN NULL ELSE ('\\x00\\xff' || i::VARCHAR)::BLOB END AS raw,
  CASE WHEN i % 7 = 2 THEN NULL ELSE [i, i + 1] END AS list,
  CASE WHEN i % 8 = 4 THEN NULL ELSE {'k': i, 'when': DATE '2024-01-01' + (i % 9)::INT} END AS rec
FROM range(600) t(i)
"""


@pytest.fixture(scope="module")
def batch() -> pa.RecordBatch:
    con = duckdb.connect()
    try:
        return con.execute(ALL_TYPES).to_arrow_table().combine_chunks().to_batches()[0]
    finally:
        con.close()


def one_row_at_a_time(batch: pa.RecordBatch, values_of) -> bytes:
    """The reference: each row's values converted one by one and encoded by codec.data_row."""
    columns = [values_of(c) for c in batch.columns]
    return b"".join(codec.data_row([c[i] for c in columns]) for i in range(batch.num_rows))


PG_EPOCH = datetime(2000, 1, 1)


def binary_value(v, oid: int) -> bytes:
    """Postgres binary format of one fixed-width value, as the protocol documents it."""
    if oid == BOOL:
        return b"\x01" if v else b"\x00"
    if oid in (INT2, INT4, INT8):
        return struct.pack({INT2: "!h", INT4: "!i", INT8: "!q"}[oid], v)
    if oid in (FLOAT4, FLOAT8):
        return struct.pack("!f" if oid == FLOAT4 else "!d", v)
    if oid == DATE:
        return struct.pack("!i", (v - PG_EPOCH.date()).days)
    if oid == TIME:
        return struct.pack("!q", ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond)
    epoch = PG_EPOCH.replace(tzinfo=UTC) if v.tzinfo else PG_EPOCH
    delta = v - epoch
    return struct.pack("!q", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def binary_values(col: pa.Array) -> list[bytes | None]:
    oid, _ = oid_of(col.type)
    if oid in (BOOL, INT2, INT4, INT8, FLOAT4, FLOAT8, DATE, TIME, TIMESTAMP, TIMESTAMPTZ):
        if oid == FLOAT4:  # the float32's own bits, not the double Python widens it to
            return [None if v is None else struct.pack("!f", v) for v in col.to_pylist()]
        return [None if v is None else binary_value(v, oid) for v in col.to_pylist()]
    return binary_column(col)


def test_every_mapped_type_in_text_is_the_one_row_encoding(batch):
    assert batch_data_rows(batch, [0] * batch.num_columns) == one_row_at_a_time(batch, text_column)


def test_every_mapped_type_in_binary_is_the_one_row_encoding(batch):
    assert batch_data_rows(batch, [1] * batch.num_columns) == one_row_at_a_time(batch, binary_values)


def test_mixed_formats_and_a_sliced_batch(batch):
    """An Execute with a row limit sends a slice of a batch (its arrays keep an offset)."""
    part = batch.slice(37, 401)
    formats = [i % 2 for i in range(part.num_columns)]

    columns = [binary_values(c) if f else text_column(c) for c, f in zip(part.columns, formats)]
    expected = b"".join(codec.data_row([c[i] for c in columns]) for i in range(part.num_rows))
    assert batch_data_rows(part, formats) == expected


def test_text_forms(batch):
    """What a psql user sees: t/f, ISO dates, NULL as a -1 length, '' as a 0 length."""
    first = batch.slice(0, 4)
    wire = {name: wire_column(first.column(name), binary=False) for name in ("flag", "day", "txt", "big")}
    flags = wire["flag"]
    assert flags.nulls.tolist() == [True, False, False, True]
    assert flags.values.to_pylist()[1:3] == [b"f", b"t"]
    assert wire["day"].values.to_pylist()[0] == b"1999-12-25"
    assert wire["big"].nulls.tolist() == [True, False, False, False]
    big = [None, b"-990992800746", b"-981985601492", b"-972978402238"]
    assert codec.data_rows([wire["big"]]) == b"".join(codec.data_row([v]) for v in big)
    txt = wire["txt"]
    assert txt.nulls.tolist() == [False, False, True, False]
    assert codec.data_rows([txt]) == (  # the protocol's bytes, written out
        b"D\0\0\0\x0b\0\x01" + b"\0\0\0\x01" + b"0"
        + b"D\0\0\0\x10\0\x01" + b"\0\0\0\x06" + "€ä1".encode()
        + b"D\0\0\0\x0a\0\x01" + b"\xff\xff\xff\xff"  # NULL
        + b"D\0\0\0\x0a\0\x01" + b"\0\0\0\0")  # ''


def test_values_of_every_length_across_words():
    """Random strings from 0 to 300 bytes (the copy goes by 8-byte words, and byte by byte past
    64), NULLs, several columns: a word that runs past its value is always overwritten."""
    rng = random.Random(16)
    n = 3000
    columns = []
    for _ in range(4):
        values = [None if rng.random() < 0.15 else "".join(rng.choice("aé€𝄞 ") for _ in range(rng.choice([0, 1, 7, 8, 9, 15, 16, 17, rng.randrange(300)]))) for _ in range(n)]
        columns.append(values)
    wire = [wire_column(pa.array(v, pa.string()), binary=False) for v in columns]
    expected = b"".join(codec.data_row([None if c[i] is None else c[i].encode() for c in columns]) for i in range(n))
    assert codec.data_rows(wire) == expected


def test_single_fixed_column_with_nulls_and_no_rows():
    col = pa.array([1, None, -(2**63), 2**63 - 1], pa.int64())
    expected = b"".join(codec.data_row([None if v is None else struct.pack("!q", v)]) for v in col.to_pylist())
    assert codec.data_rows([wire_column(col, binary=True)]) == expected
    assert codec.data_rows([wire_column(pa.array([], pa.int64()), binary=True)]) == b""
    assert codec.data_rows([wire_column(pa.array([], pa.int64()), binary=False), wire_column(pa.array([], pa.string()), binary=False)]) == b""
    assert codec.data_rows([codec.WireColumn(np.zeros(0, dtype=bool), values=pa.array([], pa.binary()))]) == b""


def test_unsigned_bigint_above_int8_is_refused_in_binary_not_wrapped():
    with pytest.raises(ValueError, match="cannot be sent as int8"):
        wire_column(pa.array([2**63], pa.uint64()), binary=True)
    assert codec.data_rows([wire_column(pa.array([2**63], pa.uint64()), binary=False)]) == codec.data_row([b"9223372036854775808"])


def test_dates_and_times_bounds():
    days = pa.array([date(1, 1, 1), date(2000, 1, 1), date(9999, 12, 31)], pa.date32())
    clock = pa.array([time(0, 0), time(23, 59, 59, 999999)], pa.time64("us"))
    assert codec.data_rows([wire_column(days, binary=True)]) == one_row_at_a_time(pa.record_batch([days], ["d"]), binary_values)
    assert codec.data_rows([wire_column(clock, binary=True)]) == one_row_at_a_time(pa.record_batch([clock], ["t"]), binary_values)


@pytest.mark.parametrize("arrow_type", [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()])
def test_integers_in_text_at_their_bounds(arrow_type):
    """numpy's decimal text is Arrow's (and Postgres'), across every digit count and sign."""
    info = np.iinfo(arrow_type.to_pandas_dtype())
    values = sorted({int(info.min), int(info.max), 0, 1, -1, *(s * (10 ** k + d) for k in range(20) for d in (-1, 0) for s in (1, -1))})
    values = [v for v in values if info.min <= v <= info.max]
    col = pa.array(values + [None], arrow_type)
    expected = [None if v is None else str(v).encode() for v in col.to_pylist()]
    assert text_column(col) == expected
    assert codec.data_rows([wire_column(col, binary=False)]) == b"".join(codec.data_row([v]) for v in expected)


# what PostgreSQL 16 printed for these (SELECT v::float8::text / v::float4::text), kept as fixtures
PG_FLOAT8 = dict(zip(
    ["1.0", "0.1", "1e15", "1e14", "1e16", "1e-5", "1e-4", "123.456", "1e300", "-0.0", "NaN", "Infinity", "-Infinity", "5e-324",
     "1.2345678901234567e20", "2.5e-7", "100", "1234567", "123456789012345", "1234567890123456", "0.00012345", "1.5e-5",
     "1.7976931348623157e308", "-1.5e+100"],
    "1 0.1 1e+15 100000000000000 1e+16 1e-05 0.0001 123.456 1e+300 -0 NaN Infinity -Infinity 5e-324 1.2345678901234567e+20 "
    "2.5e-07 100 1234567 123456789012345 1.234567890123456e+15 0.00012345 1.5e-05 1.7976931348623157e+308 -1.5e+100".split()))
PG_FLOAT4 = dict(zip(
    ["1e5", "1e6", "123456", "1234567", "12345678", "1e14", "1e-4", "1e-5", "0.85714287", "-0", "3.4028235e38", "1.4e-45", "100",
     "1.5e7", "1.0", "0.1", "1e15", "123.456"],
    "100000 1e+06 123456 1.234567e+06 1.2345678e+07 1e+14 0.0001 1e-05 0.85714287 -0 3.4028235e+38 1e-45 100 1.5e+07 1 0.1 1e+15 "
    "123.456".split()))


@pytest.mark.parametrize("arrow_type, printed", [(pa.float64(), PG_FLOAT8), (pa.float32(), PG_FLOAT4)])
def test_floats_in_text_are_postgres_own(arrow_type, printed):
    """PostgreSQL's float8out/float4out: shortest digits, positional for exponents in [-4, 15)
    ([-4, 6) for float4), else d.ddde±XX; the column at once and value by value alike."""
    col = pa.array([float(v) for v in printed] + [None], pa.float64()).cast(arrow_type)
    expected = [v.encode() for v in printed.values()] + [None]
    assert text_column(col) == expected
    assert codec.data_rows([wire_column(col, binary=False)]) == b"".join(codec.data_row([v]) for v in expected)


def test_floats_of_every_magnitude_and_bit_pattern_in_text():
    """Random doubles from 1e-30 to 1e30, random bit patterns (subnormals, NaNs, infinities) and
    2-decimal amounts, as double and as float4: the column at once equals value by value."""
    rng = np.random.default_rng(16)
    values = np.concatenate([rng.standard_normal(3000) * 10.0 ** rng.integers(-30, 30, 3000),
                             np.frombuffer(rng.bytes(8 * 3000), dtype=np.float64),
                             np.round(rng.random(2000) * 1000, 2), 10.0 ** np.arange(-12, 20), -(10.0 ** np.arange(-12, 20))])
    for arrow_type in (pa.float64(), pa.float32()):
        col = pa.array(list(values) + [None], pa.float64()).cast(arrow_type, safe=False)
        expected = text_column(col)
        assert codec.data_rows([wire_column(col, binary=False)]) == b"".join(codec.data_row([v]) for v in expected)


def test_timestamps_and_times_in_text_are_postgres_own():
    """As PostgreSQL 16 printed them (TimeZone UTC, and Asia/Kolkata for a zone of its own):
    no trailing zeros in the fraction, none at all when whole, the zone as +00 or +05:30."""
    plain = pa.array([datetime(2024, 1, 2, 3, 4, 5, 500000), datetime(2024, 1, 2, 3, 4, 5), datetime(2024, 1, 2, 3, 4, 5, 1),
                      datetime(1969, 12, 31, 23, 59, 59, 120000), datetime(2024, 2, 29, 0, 0, 0, 123456), None], pa.timestamp("us"))
    utc = pa.array([datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC), datetime(2024, 7, 2, 1, 4, tzinfo=UTC)],
                   pa.timestamp("us", "Etc/UTC"))
    kolkata = pa.array([datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)], pa.timestamp("us", "UTC")).cast(pa.timestamp("us", "Asia/Kolkata"))
    clock = pa.array([time(3, 4, 5, 500000), time(0, 0), time(23, 59, 59, 999999)], pa.time64("us"))
    printed = [
        (plain, [b"2024-01-02 03:04:05.5", b"2024-01-02 03:04:05", b"2024-01-02 03:04:05.000001", b"1969-12-31 23:59:59.12",
                 b"2024-02-29 00:00:00.123456", None]),
        (utc, [b"2024-01-02 03:04:05.5+00", b"2024-07-02 01:04:00+00"]),
        (kolkata, [b"2024-01-02 08:34:05.25+05:30"]),
        (clock, [b"03:04:05.5", b"00:00:00", b"23:59:59.999999"]),
    ]
    for col, expected in printed:
        assert text_column(col) == expected
        assert codec.data_rows([wire_column(col, binary=False)]) == b"".join(codec.data_row([v]) for v in expected)
