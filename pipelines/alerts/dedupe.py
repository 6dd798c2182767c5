"""What was sent: `<home>/alerts-state.json`, one entry per open condition (key → level, when).

An alert is sent when its key is not in the state or its level changed; a key whose condition
no longer holds is dropped (cleared), so the condition alerts again when it returns. A key is
recorded only once a delivery succeeded: an alert nobody received is tried again next time.
Readers and writers take an exclusive `flock` beside the file (the nightly run's sensor and a
`civicflow alerts check` may meet), and the file is replaced whole, never half-written.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from pipelines.alerts.model import Alert


@dataclass(frozen=True)
class SentAlert:
    level: str
    sent_at: str  # ISO, UTC
    title: str = ""


@dataclass
class DeliveryPlan:
    send: list[Alert] = field(default_factory=list)  # new, or at a new level
    repeated: list[Alert] = field(default_factory=list)  # already sent at this level: not sent again
    cleared: list[str] = field(default_factory=list)  # keys whose condition no longer holds


def kind_of(key: str) -> str:
    return key.split(":", 1)[0]


def plan_delivery(current: list[Alert], state: dict[str, SentAlert], evaluated: Iterable[str] | None) -> DeliveryPlan:
    """What to send of `current` given what was sent; keys of the `evaluated` kinds (None: none)
    that no longer hold are cleared, those of kinds not evaluated this time are kept."""
    plan = DeliveryPlan()
    for alert in current:
        sent = state.get(alert.key)
        (plan.repeated if sent is not None and sent.level == alert.level else plan.send).append(alert)
    now_keys = {a.key for a in current}
    kinds = set(evaluated or ())
    plan.cleared = sorted(k for k in state if k not in now_keys and kind_of(k) in kinds)
    return plan


def _read(path: Path) -> dict[str, SentAlert]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}  # a damaged file: start over (at worst an open condition alerts once more)
    return {k: SentAlert(**v) for k, v in data.items() if isinstance(v, dict)}


def _write(path: Path, state: dict[str, SentAlert]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in sorted(state.items())}, indent=1))
    os.replace(tmp, path)


@dataclass
class SentState:
    path: Path
    entries: dict[str, SentAlert]

    def record(self, alert: Alert, at: datetime) -> None:
        self.entries[alert.key] = SentAlert(alert.level, at.isoformat(timespec="seconds"), alert.title)

    def clear(self, keys: Iterable[str]) -> None:
        for k in keys:
            self.entries.pop(k, None)


@contextmanager
def sent_state(path: Path, write: bool = True) -> Iterator[SentState]:
    """The state, locked for this process until the block ends and written back; with `write`
    False, only read (a dry run leaves no file behind, not even the lock)."""
    if not write:
        yield SentState(path, _read(path))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        state = SentState(path, _read(path))
        yield state
        _write(path, state.entries)
    finally:
        os.close(fd)
