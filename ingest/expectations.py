"""Great Expectations suites for the raw tables, derived from the contracts.

The loader already refuses what breaks a contract row by row; these suites are the second
line: they look at what actually landed (nulls, allowed values, ranges, key uniqueness,
freshness) and catch drift or a loader bug. GX 1.x has no DuckDB engine and its SQL path is
broken (DESIGN.md traps), so each suite validates a pandas frame read from DuckDB, one
partition (the dates a run touched) at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ingest.contracts import Contract

if TYPE_CHECKING:
    from collections.abc import Callable

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


# Keyword arguments of an expectation that say where it looks, not what it expects.
_NOT_EXPECTED = {"column", "column_list", "batch_id", "result_format", "mostly", "catch_exceptions", "meta", "row_condition",
                 "condition_parser"}


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str
    success: bool
    unexpected_count: int
    element_count: int
    unit: str = "rows"  # what element_count counts: rows, or days for a partition's profile
    expected: str = ""  # the expectation's bounds or set, as a reader would write them
    observed: str = ""  # what was found: the offending values, or an aggregate's value
    aggregate: bool = False  # one value over the frame (a max, a mean), not a test per element

    def describe(self) -> str:
        if self.aggregate:
            return f"{self.expectation}({self.column}): observed {self.observed}, expected {self.expected}"
        text = f"{self.expectation}({self.column}): {self.unexpected_count} of {self.element_count} {self.unit} unexpected"
        # the days that broke a band name themselves; offending row values are a sample (Data Docs shows it)
        return f"{text} ({self.observed})" if self.observed and not self.success and self.unit != "rows" else text


def merge_outcomes(parts: list[list[ExpectationOutcome]]) -> list[ExpectationOutcome]:
    """One outcome per expectation over frames validated one after the other: the counts add
    up and it succeeds only if it succeeded on every frame."""
    merged: dict[tuple[str, str], ExpectationOutcome] = {}
    for outcomes in parts:
        for o in outcomes:
            m = merged.get((o.expectation, o.column))
            merged[(o.expectation, o.column)] = o if m is None else replace(
                m, success=m.success and o.success, unexpected_count=m.unexpected_count + o.unexpected_count,
                element_count=m.element_count + o.element_count)
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
    # A reading's value range and unit depend on its kind (a battery in percent 0–100, a
    # temperature in °C −40–70): one expectation each, on the rows of that kind.
    from great_expectations.expectations.row_conditions import Column

    for kind, (unit, low, high) in (contract.reading_kinds or {}).items():
        where = Column("kind") == kind
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(column="value", min_value=low, max_value=high, row_condition=where))
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeInSet(column="unit", value_set=[unit], row_condition=where))
    if len(contract.natural_key) == 1:
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeUnique(column=contract.natural_key[0]))
    else:
        suite.add_expectation(gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=list(contract.natural_key)))
    if now is not None:
        suite.add_expectation(gx.expectations.ExpectColumnMaxToBeBetween(column="_loaded_at", min_value=now - FRESHNESS))
    return suite


def shown_value(value) -> str:
    """A value as a reader writes it: whole numbers with thousands separators, dates without a midnight."""
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:.4g}"
    if isinstance(value, datetime):  # a date the frame holds as a midnight timestamp reads as a date
        return value.date().isoformat() if value == datetime.combine(value.date(), datetime.min.time()) else value.isoformat(sep=" ")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list | tuple | set):
        return "{" + ", ".join(shown_value(v) for v in value) + "}"
    return str(value)


def expected_text(kwargs: dict) -> str:
    """The bounds or set an expectation holds a column to, e.g. `min_value 0.3, max_value 5`."""
    return ", ".join(f"{k} {shown_value(v)}" for k, v in kwargs.items() if k not in _NOT_EXPECTED and v is not None)


def _where(condition) -> str:
    """` where kind = battery` for an expectation on some rows only (GX keeps the condition as a dict)."""
    if not condition:
        return ""
    if isinstance(condition, dict) and {"column", "operator", "parameter"} <= set(condition):
        op = "=" if condition["operator"] == "==" else condition["operator"]
        return f" where {condition['column']['name']} {op} {shown_value(condition['parameter'])}"
    return f" where {condition}"


def run_suite(frame: "pd.DataFrame", build: "Callable[[], gx.ExpectationSuite]", unit: str = "rows") -> list[ExpectationOutcome]:
    """Validate one pandas frame against the suite `build` makes (in an ephemeral context, which
    GX wants before a suite exists); one outcome per expectation."""
    gx = _gx()
    context = gx.get_context(mode="ephemeral")
    suite = build()
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(suite.name)
    batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("partition").get_batch(
        batch_parameters={"dataframe": frame}
    )
    result = batch.validate(suite)
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        kwargs = cfg.kwargs
        column = (kwargs.get("column") or ",".join(kwargs.get("column_list", []))) + _where(kwargs.get("row_condition"))
        stats = r.result or {}
        aggregate = "observed_value" in stats
        sample = stats.get("partial_unexpected_list") or []
        outcomes.append(
            ExpectationOutcome(
                expectation=cfg.type,
                column=column,
                success=bool(r.success),
                unexpected_count=int(stats.get("unexpected_count") or (0 if r.success else len(frame))),
                element_count=int(stats.get("element_count") or len(frame)),
                unit=unit,
                expected=expected_text(kwargs),
                observed=shown_value(stats["observed_value"]) if aggregate else ", ".join(shown_value(v) for v in sample[:5]),
                aggregate=aggregate,
            )
        )
    return outcomes


def validate_frame(contract: Contract, frame: "pd.DataFrame", now: datetime | None = None) -> list[ExpectationOutcome]:
    """Run the contract's row suite on one frame; one outcome per expectation."""
    return run_suite(frame, lambda: suite_for(contract, now))
