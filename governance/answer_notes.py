"""What an answer says besides its rows: which relations it read are published as cells, and
where small cells were merged, so an analyst reads a NULL dimension as "other", not as missing.

The notes come from the team's `<team>.json` (what publication built), never from the data."""

from __future__ import annotations

from collections.abc import Iterable

from governance.publication import TeamPublication
from governance.rules import TeamRules


def cell_notes(tables: Iterable[str], publication: TeamPublication, rules: TeamRules) -> list[str]:
    """One line per relation read that is published as cells (rows are cells of at least the
    team's `min_group_size` people, never people)."""
    out = []
    for rel in sorted(set(tables)):
        info = publication.cells.get(rel)
        if info is None:
            continue
        count = publication.manifest.group_weight.get(rel, "people")
        dims = ", ".join(info.get("dimensions", [])) or "its dimensions"
        merged = int(info.get("merged_cells", 0))
        line = f"{rel} is published as cells of at least {rules.min_group_size} people (sum `{count}`)"
        if merged:
            line += f"; {merged} small cell{'s' if merged != 1 else ''} merged at publish: NULL in {dims} means 'other'"
        out.append(line)
    return out


def header_value(notes: list[str]) -> str:
    """The notes as one HTTP header value (latin-1, one line)."""
    return " | ".join(notes).encode("latin-1", "replace").decode("latin-1")
