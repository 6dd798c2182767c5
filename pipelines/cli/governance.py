"""The governance commands of `civicflow`: keys, serve, query, budget, governance check/verify-audit.

`register(app)` adds them to the main Typer app (pipelines/cli/__init__.py calls it).

The admin commands (keys, budget, verify-audit) work with or without a running `civicflow
serve`: governance.admin_ops asks the server over its loopback admin listener when it runs (it
holds governance.duckdb), and opens the file directly when it does not.
"""


from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.options import HomeOpt, cli_console, print_table, settings_for
from pipelines.home import DBT_PROJECT_DIR, RULES_DIR

console = cli_console()
MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"

RulesOpt = Annotated[Path, typer.Option("--rules", help="Folder of team rule files.")]
ManifestOpt = Annotated[Path, typer.Option("--manifest", help="dbt manifest with the columns' meta.privacy (built by `dbt parse`).")]


def _fail(message: str, code: int = 1) -> None:
    from rich.markup import escape

    console.print(f"[red]{escape(message)}[/red]")
    raise typer.Exit(code)


def _load_rules(rules_dir: Path):
    from governance.rules import RuleFileError, load_rules

    try:
        return load_rules(rules_dir)
    except RuleFileError as e:
        _fail(f"rule file refused: {e.path}:{e.line}: {e.reason}")


def admin(home, op: str, args: dict | None = None, rules_dir: Path = RULES_DIR) -> dict:
    """Run an admin operation through the running gateway, or on governance.duckdb when none
    runs. Rules are read from `rules_dir` only in the second case (the server has its own)."""
    from governance.admin import AdminError
    from governance.admin_ops import run
    from governance.state import StateBusy

    try:
        return run(home.governance_db, op, args or {}, lambda: _load_rules(rules_dir))
    except (AdminError, StateBusy) as e:
        _fail(str(e))


def budget_table(home, rules_dir: Path) -> Table:
    """Each team's spend today and this month against its budgets (for `budget` and `status`),
    in-flight reservations included when a server is running."""
    answer = admin(home, "budget", rules_dir=rules_dir)
    table = Table("team", "today", "daily budget", "left today", "this month", "monthly budget", "left this month", "running", title=f"Spend in cost units (1 unit = 1 MB scanned), {answer['day']}")
    for u in answer["teams"]:
        table.add_row(u["team"], f"{u['day_spent']:.3f}", f"{u['day_budget']:g}", f"{u['day_left']:.3f}",
                      f"{u['month_spent']:.3f}", f"{u['month_budget']:g}", f"{u['month_left']:.3f}", str(u["in_flight"]))
    return table


def _cell(value) -> str:
    """A value as the table prints it: floats to 4 decimals without trailing zeros."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if value == value and abs(value) != float("inf") else str(value)
    return str(value)


def _rows_text(columns: list[str], rows: list[list], fmt: str) -> str:
    import csv
    import io

    if fmt == "json":
        return json.dumps([dict(zip(columns, r, strict=True)) for r in rows], indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue()


def _snapshot_text(snapshot: str | None, published: str | None, data_date: str | None) -> str:
    """Which data an answer reflects: its data date first (what an analyst asks), then the snapshot."""
    return f"data as of {data_date or 'unknown'} · snapshot {snapshot} (published {published})"


def _query_footer(n: int, info) -> str:
    notes = (["truncated to the team's max_result_rows"] if info.truncated else []) + ([f"{info.suppressed_groups} small groups suppressed"] if info.suppressed_groups else [])
    return "; ".join(notes + [f"cost {info.actual:.4f} units (estimate {info.estimate:.4f})", _snapshot_text(info.snapshot, info.as_of, info.data_date),
                              f"audit id {info.audit_id}"])


def _print_notes(notes: list[str], to_stderr: bool) -> None:
    for note in notes:  # e.g. which relations read are published as merged cells (NULL = other)
        print(f"note: {note}", file=sys.stderr) if to_stderr else console.print(f"note: {note}", markup=False)


def _client(url: str | None, key: str | None, home: Path | None):
    """The analysts' client for these options (the settings fill what is not given), or one line."""
    from governance.client import Client

    settings = settings_for(home)
    try:
        return Client(url or settings.gateway_url, key or settings.api_key)
    except ValueError as e:
        _fail(str(e))


def register(app: typer.Typer) -> None:
    def _home(home):
        return settings_for(home).home

    keys_app = typer.Typer(help="API keys for the query gateway (only their hash is stored).", no_args_is_help=True)
    gov_app = typer.Typer(help="Governance rules and the audit trail.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")
    app.add_typer(gov_app, name="governance")

    @keys_app.command("create")
    def keys_create(
        team: Annotated[str, typer.Option(help="Team the key belongs to (a rules file must exist).")],
        name: Annotated[str, typer.Option(help="Name of the key's holder, e.g. ana.lopez.")],
        rules: RulesOpt = RULES_DIR,
        home: HomeOpt = None,
    ) -> None:
        """Create a key and print it once: it cannot be shown again."""
        created = admin(_home(home), "keys/create", {"team": team, "name": name}, rules)
        console.print(f"Key {created['key_id']} for {name} (team {team}). Shown once, store it now:")
        print(created["key"])

    @keys_app.command("list")
    def keys_list(home: HomeOpt = None) -> None:
        """List keys (id, team, name, created, revoked); never the keys themselves."""
        table = Table("id", "team", "name", "created (UTC)", "revoked (UTC)")
        for k in admin(_home(home), "keys/list")["keys"]:
            table.add_row(k["key_id"], k["team"], k["name"], k["created_at"][:16].replace("T", " "), (k["revoked_at"] or "")[:16].replace("T", " "))
        print_table(console, table)

    @keys_app.command("revoke")
    def keys_revoke(name_or_id: Annotated[str, typer.Argument(help="Key name or id.")], home: HomeOpt = None) -> None:
        """Revoke a key: every later request with it is refused (and audited)."""
        n = admin(_home(home), "keys/revoke", {"name_or_id": name_or_id})["revoked"]
        if n == 0:
            _fail(f"no active key named or with id {name_or_id!r}")
        console.print(f"revoked {n} key(s)")

    @app.command()
    def serve(
        port: Annotated[int, typer.Option(help="Port.")] = 8765,
        pg_port: Annotated[int | None, typer.Option("--pg-port", help="Port of the PostgreSQL endpoint on 127.0.0.1 (default: $CIVICFLOW_GATEWAY_PG_PORT or 8766; 0: off).", show_default=False)] = None,
        host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1 keeps it local).")] = "127.0.0.1",
        rules: RulesOpt = RULES_DIR,
        manifest: ManifestOpt = MANIFEST,
        home: HomeOpt = None,
    ) -> None:
        """Start the query gateway (HTTP) on the home's published snapshot.

        An admin listener on 127.0.0.1 serves `civicflow keys|budget|governance verify-audit`
        while it runs."""
        from governance.admin_app import serve as serve_gateway
        from governance.server import build_gateway
        from governance.state import StateBusy

        settings = settings_for(home)
        h = settings.home
        _load_rules(rules)  # refuse a malformed file with its line before anything starts
        if not manifest.exists():
            _fail(f"{manifest} not found: build it with `dbt parse` (the privacy classes come from it)")
        try:
            gateway = build_gateway(h.governance_db, rules, h.published, manifest, credentials=settings.warehouse.reader_credentials())
        except StateBusy as e:
            _fail(str(e))
        from governance.pgwire.server import PgServer

        pg_port = settings.gateway_pg_port if pg_port is None else pg_port
        # The Postgres endpoint always binds loopback: SCRAM without TLS is for this machine only.
        pg = PgServer(gateway, "127.0.0.1", pg_port).start() if pg_port else None
        pg_note = f", postgresql://127.0.0.1:{pg.port}" if pg else ""
        console.print(f"query gateway on http://{host}:{port}{pg_note} (home {h.root}, {len(gateway.rules)} teams)")
        try:
            serve_gateway(gateway, h.governance_db, host, port)
        finally:
            if pg is not None:
                pg.stop()
            gateway.close()
            gateway.state.close()

    @app.command()
    def query(
        sql: Annotated[str, typer.Argument(help="One SELECT statement.")],
        key: Annotated[str | None, typer.Option("--key", help="API key (default: $CIVICFLOW_API_KEY).", show_default=False)] = None,
        url: Annotated[str | None, typer.Option("--url", help="Gateway URL (default: $CIVICFLOW_GATEWAY_URL or http://127.0.0.1:8765).", show_default=False)] = None,
        estimate: Annotated[bool, typer.Option("--estimate", help="Dry run: show the cost estimate only.")] = False,
        fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
        out: Annotated[Path | None, typer.Option("--out", help="Write the rows to this file (every row) instead of the terminal.", show_default=False)] = None,
        show: Annotated[int, typer.Option("--show", help="With --format table on the terminal: rows to print (the rest are counted, not dropped silently).")] = 200,
        home: HomeOpt = None,
    ) -> None:
        """Run SQL through the gateway and print the result, its cost, snapshot and audit id."""
        from governance.client import GatewayError

        if fmt not in ("table", "csv", "json"):
            _fail(f"--format must be table, csv or json, not {fmt!r}")
        client = _client(url, key, home)
        try:
            with client:
                if estimate:
                    e = client.estimate(sql)
                    console.print(f"estimate {e['estimate']:.4f} units (1 unit = 1 MB scanned) · reads {', '.join(e['tables']) or 'no table'} "
                                  f"· {_snapshot_text(e.get('snapshot'), e.get('snapshot_as_of'), e.get('data_date'))} · audit id {e['audit_id']}", markup=False)
                    return
                columns, rows = client.query_rows(sql)
                info = client.last
        except GatewayError as e:
            _fail(f"refused [{e.rule}]: {e.message}" + (f"\naudit id: {e.audit_id}" if e.audit_id else ""), code=2)
        footer = _query_footer(len(rows), info)
        if out is not None or fmt != "table":
            text = _rows_text(columns, rows, "csv" if fmt == "table" else fmt)
            _print_notes(info.notes, to_stderr=out is None)
            if out is not None:
                out.write_text(text)
                console.print(f"{len(rows)} rows written to {out} · {footer}", markup=False)
            else:
                sys.stdout.write(text)
                print(footer, file=sys.stderr)  # stdout stays pure data
            return
        from rich.text import Text

        table = Table()
        for c in columns:
            table.add_column(Text(c))  # a name from the data, never read as markup
        for row in rows[:show]:
            table.add_row(*(Text(_cell(v)) for v in row))
        print_table(console, table)
        _print_notes(info.notes, to_stderr=False)
        held = len(rows) - min(len(rows), show)
        shown = f"{len(rows)} rows" if not held else f"showing {show} of {len(rows)} rows ({held} held back: --show N, or --format csv --out FILE for all)"
        console.print(f"{shown} · {footer}", markup=False)

    @app.command()
    def catalog(
        fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
        key: Annotated[str | None, typer.Option("--key", help="API key (default: $CIVICFLOW_API_KEY).", show_default=False)] = None,
        url: Annotated[str | None, typer.Option("--url", help="Gateway URL (default: $CIVICFLOW_GATEWAY_URL or http://127.0.0.1:8765).", show_default=False)] = None,
        home: HomeOpt = None,
    ) -> None:
        """List what your team may query: relations, columns, types, privacy, descriptions, rows."""
        from governance.client import GatewayError

        if fmt not in ("table", "json"):
            _fail(f"--format must be table or json, not {fmt!r}")
        client = _client(url, key, home)
        try:
            with client:
                answer = client.catalog()
        except GatewayError as e:
            _fail(f"refused [{e.rule}]: {e.message}" + (f"\naudit id: {e.audit_id}" if e.audit_id else ""), code=2)
        if fmt == "json":
            print(json.dumps(answer, indent=2))
            return
        from rich.text import Text

        for rel in answer["relations"]:
            rows = "view" if rel["rows"] is None else f"{rel['rows']:,} rows"
            console.print(Text(f"{rel['name']} ({rows})" + (f": {rel['description']}" if rel["description"] else ""), style="bold"))
            table = Table("column", "type", "privacy", "description")
            for c in rel["columns"]:
                table.add_row(Text(c["name"]), Text(c["type"]), c["privacy"], Text(c["description"] or ""))
            print_table(console, table)
        console.print(f"{len(answer['relations'])} relations · {_snapshot_text(answer['snapshot'], answer['snapshot_as_of'], answer.get('data_date'))} "
                      f"· audit id {answer['audit_id']}", markup=False)

    @app.command()
    def budget(
        by: Annotated[str, typer.Option("--by", help="team: spend against budgets; key: spend per key; day: spend per day and team.")] = "team",
        days: Annotated[int, typer.Option("--days", help="With --by day: how many days back, today included.")] = 30,
        rules: RulesOpt = RULES_DIR,
        home: HomeOpt = None,
    ) -> None:
        """Spend in cost units: per team against its budget, per key, or per day."""
        if by not in ("team", "key", "day"):
            _fail(f"--by must be team, key or day, not {by!r}")
        if days < 1:
            _fail("--days must be at least 1")
        if by == "team":
            print_table(console, budget_table(_home(home), rules))
            return
        from rich.text import Text

        if by == "key":
            answer = admin(_home(home), "budget/keys")
            table = Table("team", "key", "today", "queries today", "this month", "queries this month", title=f"Settled spend per key in cost units, {answer['day']}")
            for k in answer["keys"]:
                table.add_row(Text(k["team"]), Text(k["key"] or "-"), f"{k['day_spent']:.3f}", str(k["day_queries"]), f"{k['month_spent']:.3f}", str(k["month_queries"]))
            print_table(console, table)
            return
        answer = admin(_home(home), "budget/days", {"days": days})
        teams = sorted({r["team"] for r in answer["spend"]})
        table = Table("day", *teams, "total", title=f"Settled spend per day in cost units, last {days} days to {answer['day']}")
        per_day: dict[str, dict[str, float]] = {}
        for r in answer["spend"]:
            per_day.setdefault(r["day"], {})[r["team"]] = r["spent"]
        for day in sorted(per_day):
            values = per_day[day]
            table.add_row(day, *(f"{values.get(t, 0.0):.3f}" for t in teams), f"{sum(values.values()):.3f}")
        if teams:
            print_table(console, table)
        else:
            console.print(f"no settled spend in the last {days} days")

    @gov_app.command("check")
    def check(rules: RulesOpt = RULES_DIR, manifest: ManifestOpt = MANIFEST, home: HomeOpt = None) -> None:
        """Validate every rule file, then check them against the published warehouse."""
        from governance.catalog import load_manifest
        from governance.checks import check_rules
        from warehouse.snapshots import current_snapshot

        teams = _load_rules(rules)
        console.print(f"{len(teams)} rule file(s) parsed: {', '.join(sorted(teams))}")
        settings = settings_for(home)
        h = settings.home
        snap = current_snapshot(h.published)
        if snap is None or not snap.exists():
            _fail(f"no published snapshot in {h.published}: run the nightly job first")
        if not manifest.exists():
            _fail(f"{manifest} not found: build it with `dbt parse`")
        findings = check_rules(teams, snap, load_manifest(manifest), settings.warehouse.reader_credentials())
        for f in findings:
            console.print(f"[{'red' if f.level == 'error' else 'yellow'}]{f.level}[/] {f.team}: {f.message}")
        errors = sum(f.level == "error" for f in findings)
        console.print(f"{errors} error(s), {len(findings) - errors} warning(s) against {snap.name}")
        if errors:
            raise typer.Exit(1)

    audit_app = typer.Typer(help="Read the audit trail.", no_args_is_help=True)
    gov_app.add_typer(audit_app, name="audit")

    @audit_app.command("show")
    def audit_show(audit_id: Annotated[str, typer.Argument(help="The audit id an answer or refusal quoted.")], home: HomeOpt = None) -> None:
        """Show one audit row: who, when, the SQL, the rule, the cost, the snapshot."""
        from rich.text import Text

        e = admin(_home(home), "audit/show", {"audit_id": audit_id})["entry"]
        table = Table("field", "value", show_header=False)
        for field in ("audit_id", "ts", "team", "key_name", "outcome", "rule", "message", "sql", "tables", "columns",
                      "estimate", "actual", "result_rows", "duration_ms", "snapshot", "seq"):
            value = e.get(field)
            if isinstance(value, float):
                value = f"{value:.4f}" if field != "duration_ms" else f"{value:.1f} ms"
            table.add_row(field, Text("" if value is None else str(value)))
        print_table(console, table)

    @gov_app.command("verify-audit")
    def verify_audit(home: HomeOpt = None) -> None:
        """Check the keyed audit chain against its anchors, the ledger and the keys.

        Exit status 1 if anything was changed, removed or inserted. Anchors: audit.anchor in
        the home and the heads the daily usage exports recorded.
        """
        h = _home(home)
        heads = sorted(str(p) for p in (h.exports / "usage").glob("usage-*.audit-head.json"))
        answer = admin(h, "audit/verify", {"anchors": heads})
        n, problems = answer["rows"], answer["problems"]
        for p in problems:
            console.print(f"[red]{p}[/red]")
        if problems:
            console.print(f"[red]audit chain BROKEN: {len(problems)} problem(s) in {n} rows[/red]")
            raise typer.Exit(1)
        console.print(f"audit chain intact: {n} rows")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `civicflow` command")
