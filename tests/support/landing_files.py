"""Small landing zones for the loader's tests: a two-device reference, readings, files."""

from __future__ import annotations

import json
from pathlib import Path

from ingest.contracts import PASS_SCANS

DEVICES_CSV = "device_id,device_type,hub_id,location_id,neighbourhood_id\nD1,locker,H1,H1,N1\nD2,locker,H1,H1,N1\n"
SCAN_HEADER = ",".join(PASS_SCANS.field_names)


def reading(seq: int, device: str = "D1", day: int = 5, **over) -> dict:
    """One valid locker-pickup telemetry reading; `over` replaces fields."""
    row = {
        "device_id": device, "hub_id": "H1", "seq": seq,
        "device_time": f"2026-01-{day:02d}T08:00:00+01:00", "received_at": f"2026-01-{day:02d}T07:00:02Z",
        "kind": "locker_pickup", "category": "grocery", "value": 2, "unit": "item",
    }
    row.update(over)
    return row


def jsonl(rows: list) -> bytes:
    """JSON lines; a str row is written as is (a broken line)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def put(landing: Path, rel: str, data: bytes) -> Path:
    p = landing / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p
