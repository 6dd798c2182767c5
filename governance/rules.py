"""Team rules as data: one YAML file per team in governance_rules/.

A malformed file is refused at load with its path, line and reason (RuleFileError), so the
gateway never starts on a rule it misread. Cost units: 1 unit = 1 MB (10^6 bytes) scanned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

COST_UNIT_BYTES = 1_000_000


class RuleFileError(ValueError):
    def __init__(self, path: Path, line: int, reason: str):
        self.path, self.line, self.reason = Path(path), line, reason
        super().__init__(f"{path}:{line}: {reason}")


@dataclass(frozen=True)
class TeamRules:
    team: str
    budget_per_day: float
    budget_per_month: float
    per_query_cap: float
    concurrency: int = 2
    timeout_seconds: float = 30.0
    max_result_rows: int = 10_000
    max_result_bytes: int = 50_000_000
    schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    table_functions: tuple[str, ...] = ()
    identity_clearance: bool = False
    min_group_size: int = 10
    source: Path | None = field(default=None, compare=False)

    def allows_relation(self, qualified: str) -> bool:
        schema = qualified.split(".", 1)[0]
        return schema in self.schemas or qualified in self.tables


_NUM = (int, float)
# key -> (type check, description); nested mappings are listed with their own keys.
_SCHEMA: dict[str, object] = {
    "team": (str, "a team name"),
    "budget": {
        "per_day": (_NUM, "cost units per day"),
        "per_month": (_NUM, "cost units per month"),
        "per_query": (_NUM, "cost units per query (cap)"),
    },
    "limits": {
        "concurrency": (int, "queries in flight"),
        "timeout_seconds": (_NUM, "seconds"),
        "max_result_rows": (int, "rows"),
        "max_result_bytes": (int, "bytes (Arrow size of the result a query may send; a stream is cut there)"),
    },
    "allow": {
        "schemas": (list, "a list of schema names"),
        "tables": (list, "a list of schema.table names"),
        "table_functions": (list, "a list of table function names"),
    },
    "identity_clearance": (bool, "true or false"),
    "min_group_size": (int, "an integer >= 1"),
}
_REQUIRED = {("team",), ("budget", "per_day"), ("budget", "per_month"), ("budget", "per_query")}
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_QUALIFIED = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")


def _check_mapping(path: Path, node: yaml.Node, schema: dict, prefix: tuple[str, ...], out: dict) -> None:
    if not isinstance(node, yaml.MappingNode):
        raise RuleFileError(path, node.start_mark.line + 1, f"{'.'.join(prefix) or 'the file'} must be a mapping")
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = key_node.value
        line = key_node.start_mark.line + 1
        if key in seen:
            raise RuleFileError(path, line, f"duplicate key {'.'.join(prefix + (key,))!r}")
        seen.add(key)
        if key not in schema:
            raise RuleFileError(path, line, f"unknown key {'.'.join(prefix + (key,))!r} (allowed: {', '.join(schema)})")
        spec = schema[key]
        if isinstance(spec, dict):
            _check_mapping(path, value_node, spec, prefix + (key,), out)
            continue
        expected, what = spec
        value = yaml.safe_load(yaml.serialize(value_node))
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected == _NUM:
            ok = isinstance(value, _NUM) and not isinstance(value, bool) and value >= 0
        if expected is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise RuleFileError(path, value_node.start_mark.line + 1, f"{'.'.join(prefix + (key,))} must be {what}, got {value!r}")
        out[prefix + (key,)] = (value, value_node.start_mark.line + 1)


def load_rule_file(path: Path) -> TeamRules:
    path = Path(path)
    try:
        root = yaml.compose(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise RuleFileError(path, (mark.line + 1) if mark else 1, f"not valid YAML: {getattr(e, 'problem', e)}") from None
    if root is None:
        raise RuleFileError(path, 1, "empty rule file")
    values: dict[tuple[str, ...], tuple[object, int]] = {}
    _check_mapping(path, root, _SCHEMA, (), values)
    for req in sorted(_REQUIRED):
        if req not in values:
            raise RuleFileError(path, root.end_mark.line + 1, f"missing required key {'.'.join(req)!r}")
    get = lambda *k, default=None: values.get(k, (default, 0))[0]  # noqa: E731
    team, team_line = values[("team",)]
    if not _NAME.match(team):
        raise RuleFileError(path, team_line, f"team must match {_NAME.pattern}, got {team!r}")
    if team != path.stem:
        raise RuleFileError(path, team_line, f"team {team!r} must match the file name ({path.stem}.yml)")
    for key, pattern in ((("allow", "schemas"), _NAME), (("allow", "tables"), _QUALIFIED), (("allow", "table_functions"), _NAME)):
        for item in get(*key, default=[]):
            if not pattern.match(item):
                raise RuleFileError(path, values[key][1], f"{'.'.join(key)}: {item!r} is not a valid name")
    for key in (("limits", "concurrency"), ("limits", "max_result_rows"), ("limits", "max_result_bytes"), ("min_group_size",)):
        if key in values and values[key][0] < 1:
            raise RuleFileError(path, values[key][1], f"{'.'.join(key)} must be >= 1")
    if ("limits", "timeout_seconds") in values and values[("limits", "timeout_seconds")][0] <= 0:
        raise RuleFileError(path, values[("limits", "timeout_seconds")][1], "limits.timeout_seconds must be > 0")
    per_day, per_month, per_query = get("budget", "per_day"), get("budget", "per_month"), get("budget", "per_query")
    if per_query > per_day or per_day > per_month:
        raise RuleFileError(path, values[("budget", "per_query")][1], "budget must satisfy per_query <= per_day <= per_month")
    return TeamRules(
        team=team,
        budget_per_day=float(per_day),
        budget_per_month=float(per_month),
        per_query_cap=float(per_query),
        concurrency=get("limits", "concurrency", default=2),
        timeout_seconds=float(get("limits", "timeout_seconds", default=30.0)),
        max_result_rows=get("limits", "max_result_rows", default=10_000),
        max_result_bytes=get("limits", "max_result_bytes", default=50_000_000),
        schemas=tuple(get("allow", "schemas", default=[])),
        tables=tuple(get("allow", "tables", default=[])),
        table_functions=tuple(f.lower() for f in get("allow", "table_functions", default=[])),
        identity_clearance=get("identity_clearance", default=False),
        min_group_size=get("min_group_size", default=10),
        source=path,
    )


def load_rules(rules_dir: Path) -> dict[str, TeamRules]:
    """Every `*.yml` / `*.yaml` in the folder, by team. Raises RuleFileError on the first bad file."""
    rules: dict[str, TeamRules] = {}
    for path in sorted(Path(rules_dir).glob("*.y*ml")):
        team_rules = load_rule_file(path)
        rules[team_rules.team] = team_rules
    return rules
