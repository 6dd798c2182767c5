"""Added latency of the PostgreSQL endpoint and of HTTP over a bare DuckDB connection, and
rows per second of a large result.

Builds its own small published warehouse in a temporary folder (marts.demand, 200k rows;
marts.big, 1M rows), starts the gateway's HTTP server (uvicorn) and Postgres endpoint on
127.0.0.1, and measures in the same run, interleaving the three paths so each sees the same
load (the machine is shared):

- a small aggregate query: median latency on a bare read-only DuckDB connection, over HTTP
  (httpx, JSON) and over the Postgres endpoint (psycopg, simple query), and the latency each
  adds to bare. Target: the Postgres endpoint adds no more than HTTP does + 2 ms (median).
- a 1M-row result (two BIGINT columns): rows/s of a bare DuckDB fetch into Arrow, over the
  Postgres endpoint as the endpoint delivers it (a wire reader in another process, as a client
  is, that only counts bytes up to ReadyForQuery: what the server streams, not what a client
  library parses), as psycopg
  (text rows into Python tuples) and asyncpg (binary rows into Records) read it, and over HTTP
  (Arrow stream). Target: the Postgres endpoint reaches at least half the bare rate. psycopg
  and asyncpg build a Python object per value, so they are bound by the client's own parsing
  (printed for reference, with their client-side rate to compare).
- where the endpoint's time goes, in the same run: DuckDB read in the endpoint's batches, those
  batches encoded as DataRows (text and binary), and a query's fixed governance cost; and the
  ratio the endpoint could reach at most were encoding and the socket free.
- the batch encoder against the one-row encoder (codec.data_row per row, each value by itself)
  on text, float, date and timestamp columns, in CPU time.

    .venv/bin/python bench/bench_pgwire.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from governance.gateway import Gateway  # noqa: E402
from governance.keys import create_key  # noqa: E402
from governance.pgwire import codec  # noqa: E402
from governance.pgwire.answer import batch_data_rows  # noqa: E402
from governance.pgwire.server import PgServer  # noqa: E402
from governance.pgwire.types import text_column  # noqa: E402
from governance.publication import publish_teams  # noqa: E402
from governance.rules import load_rules  # noqa: E402
from governance.sandbox import BATCH_ROWS  # noqa: E402
from governance.server import create_app  # noqa: E402
from governance.state import GovernanceState  # noqa: E402
from warehouse.backends import DuckDBFile  # noqa: E402
from warehouse.snapshots import current_snapshot  # noqa: E402

SMALL = "SELECT category, sum(units) AS units, count(*) AS n FROM marts.demand GROUP BY category ORDER BY category"
LARGE = "SELECT x, y FROM marts.big"
LARGE_ROWS = 1_000_000
RULES = """team: bench
budget: {per_day: 1000000, per_month: 10000000, per_query: 100000}
limits: {concurrency: 4, timeout_seconds: 120, max_result_rows: 1100000}
allow: {schemas: [marts], tables: [], table_functions: []}
identity_clearance: false
min_group_size: 5
"""


def build(root: Path) -> tuple[Path, Path, Path]:
    warehouse = root / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse))
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE TABLE marts.demand AS SELECT ['food', 'parcels', 'pharmacy'][1 + i % 3] AS category, (i * 7 % 23)::DOUBLE AS units FROM range(200000) t(i)")
    con.execute(f"CREATE TABLE marts.big AS SELECT i AS x, i % 97 AS y FROM range({LARGE_ROWS}) t(i)")
    con.close()
    nodes = {f"model.bench.{name}": {"resource_type": "model", "schema": "marts", "name": name, "alias": name,
                                     "columns": {c: {"name": c, "meta": {"privacy": "public"}} for c in cols}}
             for name, cols in (("demand", ("category", "units")), ("big", ("x", "y")))}
    (root / "manifest.json").write_text(json.dumps({"nodes": nodes}))
    (root / "rules").mkdir()
    (root / "rules" / "bench.yml").write_text(RULES)
    # the team's own file of the snapshot: what its queries run on (governance.publication)
    teams = load_rules(root / "rules").values()
    DuckDBFile(warehouse).publish(root / "published", prepare=lambda snap: publish_teams(snap, teams, root / "manifest.json", live_catalog="warehouse"))
    return root / "published", root / "manifest.json", root / "rules"


class Http:
    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wire_read(pgc: psycopg.Connection, sql: str) -> int:
    """Send a simple Query on psycopg's socket (it is idle) and read the answer's bytes up to
    ReadyForQuery without parsing them: the endpoint's own streaming rate."""
    fd = pgc.pgconn.socket
    os.set_blocking(fd, True)  # libpq keeps it non-blocking; it is given back so
    try:
        body = sql.encode() + b"\0"
        os.write(fd, b"Q" + struct.pack("!i", len(body) + 4) + body)
        tail, total = b"", 0
        while not tail.endswith(b"Z\x00\x00\x00\x05I"):
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise ConnectionError("the endpoint closed the connection")
            total += len(chunk)
            tail = (tail + chunk)[-16:]
        return total
    finally:
        os.set_blocking(fd, False)


def wire_reader(port: int) -> None:
    """The reader process (`--wire-reader PORT`, the key in BENCH_KEY): a client is never inside
    the server's process, and one that is would take the server's GIL. Reads the large result
    for every line on stdin and answers with the bytes it read."""
    pgc = psycopg.connect(host="127.0.0.1", port=port, user="bench-key", password=os.environ["BENCH_KEY"], dbname="civicflow", autocommit=True)
    for _ in sys.stdin:
        print(wire_read(pgc, LARGE), flush=True)
    pgc.close()


class WireReader:
    def __init__(self, port: int, key: str):
        self.proc = subprocess.Popen([sys.executable, __file__, "--wire-reader", str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env={**os.environ, "BENCH_KEY": key})

    def read(self) -> int:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


MIXED = ("SELECT category, units, units / 7 AS share, DATE '2024-01-01' + (units::INT) AS day, "
         "TIMESTAMP '2024-01-01 08:00:00' + to_microseconds((units * 1000003)::BIGINT) AS at FROM marts.demand")


def encoders(bare: duckdb.DuckDBPyConnection) -> str:
    """The batch encoder against the one-row encoder (each value converted by itself, each row
    by codec.data_row) on the same batches of text, float, date and timestamp columns, in CPU
    seconds (the machine is shared), best of three."""
    batches = list(bare.execute(MIXED).to_arrow_reader(BATCH_ROWS))
    rows = sum(b.num_rows for b in batches)

    def one_row_at_a_time() -> None:
        for b in batches:
            columns = [text_column(c) for c in b.columns]
            b"".join(codec.data_row([c[i] for c in columns]) for i in range(b.num_rows))

    def batch() -> None:
        for b in batches:
            batch_data_rows(b, [0] * b.num_columns)

    cpu = {}
    for name, fn in (("batch", batch), ("row", one_row_at_a_time)):
        runs = []
        for _ in range(3):
            t = time.process_time()
            fn()
            runs.append(time.process_time() - t)
        cpu[name] = min(runs) * 1_000_000 / rows * 1000
    return (f"text DataRows of (VARCHAR, DOUBLE, DOUBLE, DATE, TIMESTAMP), CPU ms per 1M rows: batch encoder {cpu['batch']:.0f}, "
            f"one row at a time {cpu['row']:.0f} ({cpu['row'] / cpu['batch']:.1f}×)")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


async def asyncpg_connect(port: int, key: str):
    import asyncpg

    return await asyncpg.connect(host="127.0.0.1", port=port, user="bench-key", password=key, database="civicflow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="runs of the small query per path")
    parser.add_argument("--large-repeat", type=int, default=3, help="runs of the 1M-row result per path")
    parser.add_argument("--wire-reader", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.wire_reader:
        wire_reader(args.wire_reader)
        return
    with tempfile.TemporaryDirectory() as tmp:
        published, manifest, rules_dir = build(Path(tmp))
        state = GovernanceState(Path(tmp) / "governance.duckdb")
        key, _ = create_key(state, "bench", "bench-key")
        gateway = Gateway(state, load_rules(rules_dir), published, manifest)
        http, pg = Http(create_app(gateway)), PgServer(gateway, port=0).start()
        # the same bytes under another name: one process cannot open one file with two configurations
        shutil.copyfile(current_snapshot(published), Path(tmp) / "bare.duckdb")
        bare = duckdb.connect(str(Path(tmp) / "bare.duckdb"), read_only=True)
        client = httpx.Client(base_url=f"http://127.0.0.1:{http.port}", headers={"Authorization": f"Bearer {key}"}, timeout=300)
        pgc = psycopg.connect(host="127.0.0.1", port=pg.port, user="bench-key", password=key, dbname="civicflow", autocommit=True)
        loop = asyncio.new_event_loop()
        apg = loop.run_until_complete(asyncpg_connect(pg.port, key))
        reader = WireReader(pg.port, key)
        try:
            paths = {
                "bare": lambda sql: bare.execute(sql).to_arrow_table(),
                "http": lambda sql: client.post("/v1/query", json={"sql": sql, "format": "json" if sql == SMALL else "arrow"}).raise_for_status(),
                "pgwire": lambda sql: pgc.execute(sql).fetchall(),
            }
            for fn in paths.values():  # warm: connections, plans, the probe
                fn(SMALL)
            small: dict[str, list[float]] = {p: [] for p in paths}
            order = list(paths)
            for i in range(args.repeat):
                for p in order[i % 3:] + order[:i % 3]:
                    small[p].append(timed(lambda p=p: paths[p](SMALL)))
            med = {p: statistics.median(v) for p, v in small.items()}
            added_http, added_pg = med["http"] - med["bare"], med["pgwire"] - med["bare"]
            print(f"small query, median of {args.repeat}: bare {med['bare']:.2f} ms, HTTP {med['http']:.2f} ms, Postgres {med['pgwire']:.2f} ms")
            print(f"  added over bare: HTTP +{added_http:.2f} ms, Postgres +{added_pg:.2f} ms")
            print(f"  Postgres added − HTTP added = {added_pg - added_http:+.2f} ms (target ≤ +2 ms): {'MET' if added_pg <= added_http + 2 else 'NOT MET'}")

            large_paths = {**paths, "wire": lambda sql: reader.read(), "asyncpg": lambda sql: loop.run_until_complete(apg.fetch(sql)),
                           # where the endpoint's time goes: DuckDB read in the endpoint's batches, then those encoded
                           "batches": lambda sql: list(bare.execute(sql).to_arrow_reader(BATCH_ROWS)),
                           "text": lambda sql: [batch_data_rows(b, [0, 0]) for b in batches],
                           "binary": lambda sql: [batch_data_rows(b, [1, 1]) for b in batches]}
            batches = list(bare.execute(LARGE).to_arrow_reader(BATCH_ROWS))
            large: dict[str, list[float]] = {p: [] for p in large_paths}
            names = list(large_paths)
            for fn in large_paths.values():  # warm: each path's first large answer pays its allocators' start
                fn(LARGE)
            for i in range(args.large_repeat):
                for p in names[i % len(names):] + names[:i % len(names)]:
                    large[p].append(timed(lambda p=p: large_paths[p](LARGE)) / 1000)
            rate = {p: LARGE_ROWS / statistics.median(v) for p, v in large.items()}
            print(f"1M-row result, median of {args.large_repeat}: bare DuckDB→Arrow {rate['bare']:,.0f} rows/s; Postgres endpoint "
                  f"{rate['wire']:,.0f} rows/s as sent, {rate['pgwire']:,.0f} rows/s into psycopg, {rate['asyncpg']:,.0f} rows/s into asyncpg; "
                  f"HTTP Arrow {rate['http']:,.0f} rows/s")
            ms = {p: statistics.median(v) * 1000 for p, v in large.items()}
            print(f"  where the endpoint's {ms['wire']:.0f} ms go: DuckDB read in {BATCH_ROWS:,}-row batches {ms['batches']:.0f} ms (as one Arrow table "
                  f"{ms['bare']:.0f} ms), DataRows encoded {ms['text']:.0f} ms text ({ms['binary']:.0f} ms binary), plan → policy → audit of a "
                  f"query ~{added_pg:.0f} ms (the small query's), the rest (socket, event loop, worker hand-offs, the reader) "
                  f"{ms['wire'] - ms['batches'] - ms['text'] - added_pg:.0f} ms")
            print(f"  with encoding and the socket free, endpoint / bare could be at most {ms['bare'] / (ms['batches'] + added_pg):.2f} "
                  "(a query's fixed governance cost plus DuckDB's batched read, against the bare fetch)")
            print(f"  {encoders(bare)}")
            ratio = rate["wire"] / rate["bare"]
            print(f"  Postgres endpoint / bare = {ratio:.3f} (target ≥ 0.5): {'MET' if ratio >= 0.5 else 'NOT MET'}; "
                  f"psycopg / bare = {rate['pgwire'] / rate['bare']:.3f}, asyncpg / bare = {rate['asyncpg'] / rate['bare']:.3f}, "
                  f"HTTP Arrow / bare = {rate['http'] / rate['bare']:.3f}")
        finally:
            reader.stop()
            loop.run_until_complete(apg.close())
            loop.close()
            pgc.close()
            client.close()
            bare.close()
            pg.stop()
            http.stop()
            gateway.close()
            state.close()


if __name__ == "__main__":
    main()
