"""The landing zone: which files wait for a contract, the day each was delivered, its checksum.

The layout is validated, not trusted (docs/data-contracts.md "Landing layout"): event files
live in `<contract>/<YYYY-MM-DD>/<name>.<ext>`, reference snapshots in
`reference/<contract>/<name>.csv`. Everything else the zone holds is *misplaced* and reported
by name with the reason — a folder no contract owns, a delivery day before the partitions
start or more than a day ahead, a subfolder, a compressed file (`.gz` is refused: deliver it
uncompressed), an extension in the wrong case, a symbolic link (never followed), a file that
cannot be read — and never stops the other files. Names starting with a dot are uploads in
progress (or our own temporary files) and are not looked at.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ingest.contracts import CONTRACTS, EVENT_CONTRACTS, REFERENCE_CONTRACTS, Contract

REFERENCE_DIR = "reference"
# Files with no contract are recorded in raw._load_manifest under this contract name.
NO_CONTRACT = "landing"


def sha256_of(path: Path) -> str:
    """A file's identity (DESIGN.md "Effectively-once ingest"), read 1 MiB at a time."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_of_bytes(data: bytes) -> str:
    """The same identity for a file already read (its rows are parsed from the same bytes)."""
    return hashlib.sha256(data).hexdigest()


def delivery_date(path: Path) -> date | None:
    """The delivery day of an event file: the name of its folder, `<contract>/<YYYY-MM-DD>/`."""
    return _day(path.parent.name)


def _day(name: str) -> date | None:
    if len(name) != 10:  # date.fromisoformat also takes 20260105 and 2026-W01-1
        return None
    try:
        return date.fromisoformat(name)
    except ValueError:
        return None


@dataclass(frozen=True)
class Misplaced:
    """Something in the landing zone that is not a file to load, and why."""

    path: str  # relative to the landing zone
    contract: str  # the contract whose folder holds it, or NO_CONTRACT
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class DayWindow:
    """Delivery days a landing folder may carry: from the partitions' first day to tomorrow."""

    first: date | None = None
    last: date | None = None

    @classmethod
    def ending_tomorrow(cls, first: date | None, today: date | None = None) -> DayWindow:
        return cls(first, (today or datetime.now(UTC).date()) + timedelta(days=1))

    def why_not(self, day: date) -> str | None:
        if self.first is not None and day < self.first:
            return f"delivery day {day} is before the partitions' first day {self.first} (CIVICFLOW_START_DATE)"
        if self.last is not None and day > self.last:
            return f"delivery day {day} is more than a day in the future"
        return None


def _file_problem(path: Path, contract: Contract) -> str | None:
    """Why a file in a contract's folder is not one of its files, or None when it is."""
    name = path.name
    if path.is_symlink():
        return "a symbolic link: links are not followed (deliver the file itself)"
    if path.is_dir():
        return "a subfolder: files must lie directly in the folder"
    if not path.is_file():
        return "not a regular file"
    if name.lower().endswith(".gz"):
        return f"compressed files are not loaded: deliver it uncompressed ({contract.filename_glob})"
    if not fnmatch.fnmatchcase(name, contract.filename_glob):
        if fnmatch.fnmatchcase(name.lower(), contract.filename_glob):
            return f"extension in the wrong case: the {contract.name} contract takes {contract.filename_glob} (lower case)"
        return f"not a {contract.filename_glob} file of the {contract.name} contract"
    if not os.access(path, os.R_OK):
        return "unreadable: permission denied"
    return None


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def _closest(name: str) -> str:
    known = [c.name for c in EVENT_CONTRACTS] + [REFERENCE_DIR]
    same = [k for k in known if k.lower() == name.lower()]
    hint = f" (did you mean {same[0]}?)" if same else ""
    return f"no contract named {name!r}{hint}; known folders: {', '.join(known)}"


@dataclass
class Layout:
    """What a scan of the landing zone found: files per contract (oldest delivery first) and
    everything misplaced."""

    files: dict[str, list[Path]]
    misplaced: list[Misplaced]

    def days(self) -> list[date]:
        """Delivery days of the event files found (valid folders of known sources only)."""
        return sorted({d for name, paths in self.files.items() if not CONTRACTS[name].reference for p in paths if (d := delivery_date(p))})


def scan(landing: Path, window: DayWindow = DayWindow()) -> Layout:
    """Walk the landing zone once: every contract's files, and what does not belong."""
    files: dict[str, list[Path]] = {c.name: [] for c in EVENT_CONTRACTS + REFERENCE_CONTRACTS}
    misplaced: list[Misplaced] = []
    if not landing.is_dir():
        return Layout(files, misplaced)

    def rel(p: Path) -> str:
        return str(p.relative_to(landing))

    def take(folder: Path, contract: Contract) -> None:
        for p in _entries(folder):
            problem = _file_problem(p, contract)
            if problem is None:
                files[contract.name].append(p)
            else:
                misplaced.append(Misplaced(rel(p), contract.name, problem))

    by_dir = {c.name: c for c in EVENT_CONTRACTS}
    references = {c.name: c for c in REFERENCE_CONTRACTS}
    for top in _entries(landing):
        if top.name == REFERENCE_DIR and top.is_dir() and not top.is_symlink():
            for sub in _entries(top):
                contract = references.get(sub.name)
                if contract is None or not sub.is_dir() or sub.is_symlink():
                    misplaced.append(Misplaced(rel(sub), NO_CONTRACT, f"no reference contract named {sub.name!r}; known: {', '.join(references)}"))
                else:
                    take(sub, contract)
            continue
        contract = by_dir.get(top.name)
        if contract is None or not top.is_dir() or top.is_symlink():
            misplaced.append(Misplaced(rel(top), NO_CONTRACT, _closest(top.name) if top.is_dir() else "a file outside every contract's folder"))
            continue
        for day_dir in _entries(top):
            day = _day(day_dir.name)
            if day is None or not day_dir.is_dir() or day_dir.is_symlink():
                what = "a symbolic link" if day_dir.is_symlink() else ("a folder" if day_dir.is_dir() else "a file")
                misplaced.append(Misplaced(rel(day_dir), contract.name, f"{what} outside a delivery-day folder ({contract.name}/YYYY-MM-DD/)"))
                continue
            why = window.why_not(day)
            if why is not None:
                misplaced.append(Misplaced(rel(day_dir), contract.name, why))
                continue
            take(day_dir, contract)
    return Layout(files, misplaced)


def waiting(layout: Layout, contract: Contract, delivery_dates: set[date] | None = None) -> list[Path]:
    """Files waiting for a contract, oldest delivery first (folder names are delivery dates).

    `delivery_dates` restricts event files to those delivered on these days (one partition or
    a range); reference snapshots have no delivery day and are always looked at.
    """
    found = layout.files[contract.name]
    if delivery_dates is None or contract.reference:
        return found
    return [p for p in found if delivery_date(p) in delivery_dates]
