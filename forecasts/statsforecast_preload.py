"""The fork server's preload for nights with statsforecast series (the blend's ETS, Croston, SES; pool.py names it).

The one module of forecasts/ that works when imported, because that is its job: a fork
server can only be told which modules to import before it forks the workers
(`set_forkserver_preload`), not which function to call. statsforecast's models are numba
functions compiled on their first call (~2 s per process, on top of a 6–10 s import);
compiling them once here lets every worker, and every recycled one, inherit both. Nothing
else imports this module.
"""

from forecasts.intermittent import warm_up

warm_up()
