"""The team files a gateway has open: per request, the file published for the caller's team in
the CURRENT snapshot. A team's SQL runs only on that file (governance.publication): it holds
nothing the team may not see, so no SQL shape can reach more. When CURRENT moves, the old
snapshot's files are retired and close when their last query ends."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import duckdb

from governance.policy import Permissions, permissions_for
from governance.publication import TeamPublication, read_team_publication
from governance.rules import TeamRules
from governance.sandbox import Sandbox, SandboxLimits
from warehouse.catalog_url import CatalogUrl
from warehouse.snapshots import current_snapshot, team_snapshot


class TeamFiles:
    def __init__(self, published_dir: Path, limits: SandboxLimits, credentials: Sequence[CatalogUrl], concurrency: dict[str, int]):
        self.published_dir, self.limits, self.credentials, self.concurrency = Path(published_dir), limits, tuple(credentials), concurrency
        self._sandboxes: dict[Path, Sandbox] = {}
        self._published: dict[Path, TeamPublication] = {}  # team file -> what it holds (its <team>.json)
        self._perms: dict[tuple[Path, str], Permissions] = {}
        self._lock = threading.Lock()

    def acquire(self, team: str) -> Sandbox | None:
        """The team's file in the current snapshot, held until `release`; None when none is published."""
        current = current_snapshot(self.published_dir)
        path = team_snapshot(current, team) if current is not None else None
        if path is None or not path.exists():
            return None
        with self._lock:
            sb = self._sandboxes.get(path)
            if sb is None:
                sb = Sandbox(path, self.limits, self.credentials, self.concurrency)
                self._published[path] = read_team_publication(path)
                for old_path, old in list(self._sandboxes.items()):
                    if old_path.parent == path.parent:
                        continue  # another team's file of the same snapshot
                    old.retired = True
                    if old._users == 0:
                        old.close()
                    del self._sandboxes[old_path]
                    self._published.pop(old_path, None)
                self._sandboxes[path] = sb
            sb.acquire()
        return sb

    def release(self, sb: Sandbox) -> None:
        with self._lock:
            if sb.release():
                sb.close()

    def publication(self, sb: Sandbox) -> TeamPublication:
        """What the held file holds: its relations' privacy classes, cells and data date."""
        return self._published[sb.snapshot]

    def permissions(self, sb: Sandbox, rules: TeamRules, cur: duckdb.DuckDBPyConnection) -> Permissions:
        key = (sb.snapshot, rules.team)
        perms = self._perms.get(key)
        if perms is None:
            perms = permissions_for(rules, sb.catalog, self.publication(sb).manifest, cur)
            self._perms[key] = perms
        return perms

    def close(self) -> None:
        with self._lock:
            for sb in self._sandboxes.values():
                sb.close()
            self._sandboxes.clear()
