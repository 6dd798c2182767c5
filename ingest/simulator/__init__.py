"""A synthetic city with known ground truth.

`simulate(out, size, days, start, seed, append, fault_rates, progress, truth_dir)` writes
exactly what the city's devices would drop in the landing zone `out` — telemetry,
pass scans, transactions, clearing batches (per delivery date) and reference snapshots —
and the ground truth (Parquet, outside the landing zone; default `out.parent /
"ground_truth"`). Same arguments → byte-identical files; `append=True` continues the
recorded run with its next `days` days. See docs/data-contracts.md.
"""

from .faults import DEFAULT_FAULT_RATES, FAULT_KINDS
from .run import SimulationSummary, simulate
from .sizes import SIZES, SizeSpec

__all__ = ["simulate", "SimulationSummary", "SIZES", "SizeSpec", "FAULT_KINDS", "DEFAULT_FAULT_RATES"]
