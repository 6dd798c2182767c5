"""The fast Prophet path (forecasts/prophet_direct.py) is Prophet's fit, not an imitation:
same Stan input, same binary and arguments, same numbers to the last bit — and it cleans up
after itself. (Speed itself is measured by bench/bench_forecasts.py, never asserted here:
the machine is shared.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from forecasts.prophet_model import fit_predict_prophet

ROOT = Path(__file__).resolve().parents[1]


def _daily(n: int, start: date = date(2023, 1, 1)) -> np.ndarray:
    return np.array([start + timedelta(days=k) for k in range(n)], dtype="datetime64[D]")


def _cases() -> list[tuple[str, dict]]:
    rng = np.random.default_rng(5)
    out = []
    # two years, events (holiday features) and attendance (a regressor), yearly + weekly: L-BFGS
    n, h = 730, 7
    ds = _daily(n + h)
    t = np.arange(n + h)
    ev_idx = list(range(3, n + h, 17))
    att = np.zeros(n + h)
    att[ev_idx] = rng.integers(500, 40000, len(ev_idx))
    mu = 30 + 8 * np.sin(2 * np.pi * t / 7) + 5 * np.sin(2 * np.pi * t / 365.25) + 1e-3 * att
    y = rng.poisson(mu).astype(float)
    events = [("event_match", ds[k].astype(object), ds[k].astype(object)) for k in ev_idx]
    out.append(("2y events+attendance", dict(ds=ds[:n], y=y[:n], future_ds=ds[n:], events=events,
                                             attendance_hist=att[:n], attendance_future=att[n:])))
    # 60 days: Newton (T < 100), weekly only
    out.append(("60 days", dict(ds=ds[:60], y=y[:60], future_ds=ds[60:67])))
    # 20 days: no seasonality at all (Prophet's placeholder column), fewer changepoints
    out.append(("20 days", dict(ds=ds[:20], y=y[:20], future_ds=ds[20:23])))
    # a constant history: Prophet skips Stan
    out.append(("constant", dict(ds=ds[:40], y=np.full(40, 4.0), future_ds=ds[40:47])))
    # hourly, three weeks: daily seasonality too
    hs = np.arange(np.datetime64("2024-03-01T00", "h"), np.datetime64("2024-03-22T00", "h"))
    hy = rng.poisson(5 + 4 * np.sin(np.arange(len(hs)) * 2 * np.pi / 24)).astype(float)
    out.append(("hourly", dict(ds=hs[:-24], y=hy[:-24], future_ds=hs[-24:], freq="H")))
    return out


@pytest.mark.slow  # imports Prophet (~3 s) and fits each case twice
@pytest.mark.parametrize("name,kw", _cases(), ids=[c[0] for c in _cases()])
def test_direct_fit_is_prophets_own_fit_bit_for_bit(name: str, kw: dict) -> None:
    direct = fit_predict_prophet(**kw)
    reference = fit_predict_prophet(**kw, engine="prophet")
    assert np.array_equal(direct.point, reference.point), name
    assert np.array_equal(direct.fitted, reference.fitted), name
    assert direct.used_regressor == reference.used_regressor == ("attendance" in name)
    assert np.all(direct.point >= 0) and len(direct.point) == len(kw["future_ds"])


def test_direct_fit_cleans_up_and_needs_neither_prophet_nor_cmdstanpy(tmp_path: Path) -> None:
    """In a fresh interpreter with its own temp dir: a fit leaves nothing behind, and the
    3 s of Prophet/cmdstanpy imports are not paid."""
    code = """
import json, os, sys
import numpy as np
from forecasts.model import SeriesTask, forecast_series
ds = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + 200)
y = 20 + 5 * np.sin(np.arange(200) * 2 * np.pi / 7)
r = forecast_series(SeriesTask("s", ds, y, ds[-7:] + 7))
print(json.dumps({"method": r.method, "reason": r.fallback_reason, "left": sorted(os.listdir(os.environ["TMPDIR"])),
                  "prophet": "prophet" in sys.modules, "cmdstanpy": "cmdstanpy" in sys.modules}))
"""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"method": "blend", "reason": None, "left": [], "prophet": False, "cmdstanpy": False}
