"""One file's counts over its chunks, and the checks that refuse it whole once all are read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ingest.batch_header import check_batch_totals
from ingest.contracts import Contract
from ingest.manifest import FileOutcome
from ingest.parsed import FileRefused, ParseResult


@dataclass
class Tally:
    lines: int = 0
    good: int = 0
    bad: int = 0
    valid_total: int = 0  # the batch total field summed over the valid lines (files with a batch header)
    first_bad: dict | None = None
    header: dict = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)  # JSON keys outside the contract -> lines
    changed: int = 0  # good rows repeating a known natural key with other values: quarantined at insert

    def add(self, part: ParseResult, contract: Contract) -> None:
        self.header = self.header or part.header
        self.lines += part.lines
        if part.bad.height:
            self.first_bad = self.first_bad or part.bad.row(0, named=True)
            self.bad += part.bad.height
        if part.good.height:
            self.good += part.good.height
            if contract.batch_total_field is not None:
                self.valid_total += int(part.good[contract.batch_total_field].sum() or 0)
        for k, v in part.extra_keys.items():
            self.extra[k] = self.extra.get(k, 0) + v

    def check(self, contract: Contract, path: Path) -> None:
        """Raise FileRefused when the file as a whole fails its contract."""
        if contract.has_batch_header:
            check_batch_totals(self.header, self.lines, self.valid_total, self.bad, path)
        ratio = self.bad / self.lines if self.lines else 0.0
        if ratio > contract.max_reject_ratio:
            first = self.first_bad or {}
            raise FileRefused(
                f"{path.name}: {self.bad} of {self.lines} rows rejected "
                f"({ratio:.1%} > the {contract.name} contract's {contract.max_reject_ratio:.0%}); "
                f"first: line {first.get('line')}, field {first.get('field')}: {first.get('reason')}"
            )

    def fill(self, outcome: FileOutcome, contract: Contract, inserted: int, dates: set[date]) -> None:
        """The counts of a file that loads, into its outcome."""
        outcome.rows_in_file = self.lines
        outcome.loaded, outcome.affected_dates = inserted, sorted(dates)
        # A snapshot replaces its table: none of its rows is a duplicate.
        outcome.duplicate = self.good - inserted - self.changed if not contract.reference else 0
        outcome.quarantined = self.bad + self.changed
        outcome.extra_keys = sorted(self.extra)
