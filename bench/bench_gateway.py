"""Gateway overhead and cost-estimate quality on the published marts.

Prints, over a workload of analyst queries on the marts of the home's published snapshot:
- the latency the gateway adds per query (key, plan, policy, ledger, audit, the profiled run)
  against the same query on a bare read-only DuckDB connection, median and p95 (target: < 10 ms
  at the median), and the ratio gateway / bare. Each query runs on both, one right after the
  other, in alternating order, so both see the same load (the machine is shared);
- where the added time goes (medians of the gateway's own timings);
- the estimate / actual cost ratio over every run (target: the estimate is never below).

    CIVICFLOW_HOME=/tmp/gw-home .venv/bin/python bench/bench_gateway.py [--repeat 30]

Needs a published snapshot (`civicflow demo`, or `civicflow simulate` + `civicflow run`) and
the dbt manifest (`dbt parse`). Governance state goes to a temporary folder, not the home.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from governance.gateway import Gateway  # noqa: E402
from governance.keys import create_key  # noqa: E402
from governance.rules import load_rules  # noqa: E402
from governance.state import GovernanceState  # noqa: E402
from warehouse.lake import use_lake  # noqa: E402
from warehouse.snapshots import current_snapshot, is_lake_snapshot, open_snapshot  # noqa: E402

WORKLOAD = [
    "SELECT category, sum(units) AS units FROM marts.neighbourhood_demand_daily GROUP BY 1 ORDER BY 1",
    "SELECT neighbourhood_id, avg(units) AS avg_units FROM marts.neighbourhood_demand_daily WHERE is_event_day GROUP BY 1",
    "SELECT demand_date, sum(units) FROM marts.neighbourhood_demand_daily WHERE demand_date >= DATE '2026-01-15' GROUP BY 1 ORDER BY 1",
    "SELECT * FROM marts.neighbourhood_demand_daily ORDER BY units DESC LIMIT 10",
    "SELECT hub_id, avg(stock_utilisation_ratio), sum(shortage_units) FROM marts.hub_utilisation_daily GROUP BY 1",
    "SELECT h.name, sum(u.pickup_units) FROM marts.hub_utilisation_daily u JOIN marts.dim_hubs h USING (hub_id) GROUP BY 1",
    "SELECT event_kind, avg(lift_ratio) FROM marts.event_demand_lift GROUP BY 1",
    "SELECT pass_type, home_neighbourhood_id, sum(passes_issued) AS passes FROM marts.pass_onboarding_funnel GROUP BY 1, 2",
    "SELECT count(*) FROM marts.dim_neighbourhoods",
    "SELECT n.name, count(*) FROM marts.hub_capacity c JOIN marts.dim_neighbourhoods n USING (neighbourhood_id) GROUP BY 1",
]

ROW_PAYLOAD = "x" * 1000  # about the bytes of one request's ledger + audit rows (SQL, plan columns, hashes)

RULES = """team: bench
budget: {per_day: 1000000, per_month: 10000000, per_query: 100000}
limits: {concurrency: 4, timeout_seconds: 60, max_result_rows: 100000}
allow: {schemas: [marts], tables: [], table_functions: []}
identity_clearance: false
min_group_size: 10
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bare_connection(snapshot: Path, tmp: Path) -> duckdb.DuckDBPyConnection:
    """The same data without the gateway. A DuckDB file is copied: one process cannot open a
    file with two configurations (the sandbox's is locked down)."""
    if is_lake_snapshot(snapshot):
        return use_lake(open_snapshot(snapshot).con)
    copy = tmp / "bare.duckdb"
    shutil.copyfile(snapshot, copy)
    return duckdb.connect(str(copy), read_only=True)


def timed(run) -> float:
    t = time.perf_counter()
    run()
    return (time.perf_counter() - t) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("CIVICFLOW_HOME", "./.civicflow"))
    parser.add_argument("--manifest", default=str(ROOT / "dbt_project" / "target" / "manifest.json"))
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    published = Path(args.home).resolve() / "published"
    snapshot = current_snapshot(published)
    if snapshot is None or not Path(args.manifest).exists():
        print(f"skipped: no published snapshot under {published} or no dbt manifest (run `civicflow demo` and `dbt parse`)")
        return 0

    bare_ms: dict[str, list[float]] = {q: [] for q in WORKLOAD}
    gw_ms: dict[str, list[float]] = {q: [] for q in WORKLOAD}
    parts: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {q: [] for q in WORKLOAD}
    commit_ms: dict[str, list[float]] = {q: [] for q in WORKLOAD}  # the disk's floor: one durable commit of a request's size, in the same loop
    below = 0  # runs whose estimate was below the actual
    with tempfile.TemporaryDirectory() as tmp:
        rules_dir = Path(tmp) / "rules"
        rules_dir.mkdir()
        (rules_dir / "bench.yml").write_text(RULES)
        state = GovernanceState(Path(tmp) / "governance.duckdb")
        gateway = Gateway(state, load_rules(rules_dir), published, Path(args.manifest))
        key, _ = create_key(state, "bench", "bench")
        bare = bare_connection(snapshot, Path(tmp))
        scratch = duckdb.connect(str(Path(tmp) / "scratch.duckdb"))
        scratch.execute("CREATE TABLE t (i BIGINT, s VARCHAR)")
        for q in WORKLOAD:  # warm both: the gateway opens the snapshot, builds the catalog and permissions (once per publish)
            bare.execute(q).to_arrow_table()
            gateway.query(key, q)
        for i in range(args.repeat):
            for q in WORKLOAD:
                results = []
                run_bare = lambda: bare.execute(q).to_arrow_table()  # noqa: E731
                run_gw = lambda: results.append(gateway.query(key, q))  # noqa: E731
                if i % 2:
                    gw_ms[q].append(timed(run_gw))
                    bare_ms[q].append(timed(run_bare))
                else:
                    bare_ms[q].append(timed(run_bare))
                    gw_ms[q].append(timed(run_gw))
                commit_ms[q].append(timed(lambda: scratch.execute("INSERT INTO t VALUES (1, ?)", [ROW_PAYLOAD])))
                r = results[0]
                if r.outcome != "ok":
                    print(f"refused [{r.rule}] {r.message}: {q}")
                    return 1
                below += r.estimate < r.actual
                if r.actual:
                    ratios[q].append(r.estimate / r.actual)
                for k, v in r.timings_ms.items():
                    if k != "run":
                        parts.setdefault(k, []).append(v)
        bare.close()
        scratch.close()
        gateway.close()
        state.close()

    added = [g - b for q in WORKLOAD for g, b in zip(gw_ms[q], bare_ms[q])]
    all_bare = [b for q in WORKLOAD for b in bare_ms[q]]
    all_gw = [g for q in WORKLOAD for g in gw_ms[q]]
    print(f"snapshot: {snapshot.name}; {len(WORKLOAD)} queries x {args.repeat} runs, bare and gateway interleaved")
    print(f"{'query':<70} {'bare ms':>8} {'gateway ms':>10} {'min est/act':>11}")
    for q in WORKLOAD:
        ratio = f"{min(ratios[q]):11.2f}" if ratios[q] else f"{'0 = 0':>11}"  # nothing scanned (e.g. count(*) from metadata)
        print(f"{q[:70]:<70} {statistics.median(bare_ms[q]):8.2f} {statistics.median(gw_ms[q]):10.2f} {ratio}")
    print(f"added latency per query: median {statistics.median(added):.2f} ms, p95 {pct(added, 0.95):.2f} ms (target: median < 10 ms)")
    print(f"gateway / bare: median {statistics.median(all_gw):.2f} ms / {statistics.median(all_bare):.2f} ms = {statistics.median(all_gw) / statistics.median(all_bare):.1f}x")
    print("  of which (median ms): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in parts.items()))
    # the gateway makes one durable commit per request (its ledger + audit rows): what is left is its own work
    commits = [c for q in WORKLOAD for c in commit_ms[q]]
    beyond = [a - c for a, c in zip(added, commits)]
    print(f"  reference, same run: one durable ~1 KB DuckDB commit on this disk: median {statistics.median(commits):.2f} ms, "
          f"p95 {pct(commits, 0.95):.2f} ms; added latency minus that commit: median {statistics.median(beyond):.2f} ms")
    flat = [x for v in ratios.values() for x in v]
    print(f"estimate / actual over {len(added)} runs: min {min(flat):.2f}, median {statistics.median(flat):.2f}, max {max(flat):.2f}; "
          f"{'never below 1' if not below else f'BELOW 1 in {below} runs: the estimate is not an upper bound'}")
    return 0 if not below else 1


if __name__ == "__main__":
    sys.exit(main())
