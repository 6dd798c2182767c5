"""Imported by the pool's fork server (pool.py) when a run has Croston or SES series.

statsforecast's models are numba functions compiled on their first call (~2 s per process
here, on top of a 6–10 s import). Importing and compiling them once in the fork server,
before it forks the workers, lets every worker — and every recycled one — inherit both.
"""

from forecasts.intermittent import warm_up

warm_up()
