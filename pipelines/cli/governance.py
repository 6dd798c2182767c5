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
from rich.console import Console
from rich.table import Table

from pipelines.cli.options import HomeOpt, print_table, settings_for
from pipelines.home import DBT_PROJECT_DIR, RULES_DIR

console = Console()
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
        home: HomeOpt = None,
    ) -> None:
        """Run SQL through the gateway and print the result, its cost and its audit id."""
        from governance.client import Client, GatewayError

        settings = settings_for(home)
        try:
            client = Client(url or settings.gateway_url, key or settings.api_key)
        except ValueError as e:
            _fail(str(e))
        try:
            with client:
                if estimate:
                    console.print_json(json.dumps(client.estimate(sql)))
                    return
                columns, rows = client.query_rows(sql)
                info = client.last
        except GatewayError as e:
            _fail(f"refused [{e.rule}]: {e.message}\naudit id: {e.audit_id}", code=2)
        except Exception as e:  # connection refused etc.
            _fail(f"could not reach the gateway at {client.url}: {type(e).__name__}")
        table = Table(*columns)
        for row in rows[:200]:
            table.add_row(*("" if v is None else str(v) for v in row))
        print_table(console, table)
        notes = [f"{len(rows)} rows"] + (["truncated to the team's max_result_rows"] if info.truncated else []) + ([f"{info.suppressed_groups} small groups suppressed"] if info.suppressed_groups else [])
        console.print(f"{'; '.join(notes)} · cost {info.actual:.4f} units (estimate {info.estimate:.4f}) · audit id {info.audit_id}")

    @app.command()
    def budget(rules: RulesOpt = RULES_DIR, home: HomeOpt = None) -> None:
        """Each team's spend today and this month against its budget."""
        print_table(console, budget_table(_home(home), rules))

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

    @gov_app.command("verify-audit")
    def verify_audit(home: HomeOpt = None) -> None:
        """Re-compute the audit log's hash chain; exit 1 if any row was changed, removed or inserted."""
        answer = admin(_home(home), "audit/verify")
        n, problems = answer["rows"], answer["problems"]
        for p in problems:
            console.print(f"[red]{p}[/red]")
        if problems:
            console.print(f"[red]audit chain BROKEN: {len(problems)} problem(s) in {n} rows[/red]")
            raise typer.Exit(1)
        console.print(f"audit chain intact: {n} rows")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `civicflow` command")
