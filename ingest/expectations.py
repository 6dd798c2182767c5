"""Great Expectations suites for the raw tables, derived from the contracts.

The loader already refuses what breaks a contract row by row; these suites are the second
line: they look at what actually landed (nulls, allowed values, ranges, key uniqueness,
freshness) and catch drift or a loader bug. GX 1.x has no DuckDB engine and its SQL path is
broken (DESIGN.md traps), so each suite validates a pandas frame read from DuckDB, one
partition (the dates a run touched) at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ingest.contracts import Contract

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

FRESHNESS = timedelta(hours=36)  # a nightly source not loaded for a day and a half is stale


def _gx():
    """GX takes seconds to import: load it when a suite runs, not when the pipeline loads."""
    import great_expectations

    # No network here. The GX the lock file pins (1.24) has no analytics; earlier 1.x releases
    # would try to send usage statistics: switched off through GX's own config, not the
    # environment (ingest reads and writes none).
    try:
        from great_expectations.analytics.config import ENV_CONFIG
    except ImportError:
        pass
    else:
        ENV_CONFIG.gx_analytics_enabled = False

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    return great_expectations


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str
    success: bool
    unexpected_count: int
    element_count: int

    def describe(self) -> str:
        return f"{self.expectation}({self.column}): {self.unexpected_count} of {self.element_count} rows unexpected"


def merge_outcomes(parts: list[list[ExpectationOutcome]]) -> list[ExpectationOutcome]:
    """One outcome per expectation over frames validated one after the other: the counts add
    up and it succeeds only if it succeeded on every frame."""
    merged: dict[tuple[str, str], ExpectationOutcome] = {}
    for outcomes in parts:
        for o in outcomes:
            m = merged.get((o.expectation, o.column))
            merged[(o.expectation, o.column)] = o if m is None else ExpectationOutcome(
                o.expectation, o.column, m.success and o.success,
                m.unexpected_count + o.unexpected_count, m.element_count + o.element_count)
    return list(merged.values())


def suite_for(contract: Contract, now: datetime | None = None) -> "gx.ExpectationSuite":
    """Every rule of the contract that can be checked on landed rows, as GX expectations."""
    gx = _gx()
    suite = gx.ExpectationSuite(name=f"raw_{contract.name}")
    for f in contract.fields:
        if f.required:
            suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column=f.name))
        if f.allowed is not None:
            suite.add_expectation(gx.expectations.ExpectColumnValuesToBeInSet(column=f.name, value_set=list(f.allowed)))
        if f.min is not None or f.max is not None:
            suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min, max_value=f.max))
    if len(contract.natural_key) == 1:
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeUnique(column=contract.natural_key[0]))
    else:
        suite.add_expectation(gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=list(contract.natural_key)))
    if now is not None:
        suite.add_expectation(gx.expectations.ExpectColumnMaxToBeBetween(column="_loaded_at", min_value=now - FRESHNESS))
    return suite


def validate_frame(contract: Contract, frame: "pd.DataFrame", now: datetime | None = None) -> list[ExpectationOutcome]:
    """Run the contract's suite on one frame; one outcome per expectation."""
    gx = _gx()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(f"raw_{contract.name}")
    batch = source.add_dataframe_asset(contract.name).add_batch_definition_whole_dataframe("partition").get_batch(
        batch_parameters={"dataframe": frame}
    )
    result = batch.validate(suite_for(contract, now))
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        kwargs = cfg.kwargs
        column = kwargs.get("column") or ",".join(kwargs.get("column_list", []))
        stats = r.result or {}
        outcomes.append(
            ExpectationOutcome(
                expectation=cfg.type,
                column=column,
                success=bool(r.success),
                unexpected_count=int(stats.get("unexpected_count") or (0 if r.success else len(frame))),
                element_count=int(stats.get("element_count") or len(frame)),
            )
        )
    return outcomes
