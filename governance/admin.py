"""How admin commands find a running gateway: the admin file in the home, and the HTTP call.

`civicflow serve` holds governance.duckdb for writing, and DuckDB allows one such process per
file, so `civicflow keys …`, `budget`, `governance verify-audit` and the daily usage report
cannot open it while the server runs. The server therefore writes `gateway-admin.json` beside
governance.duckdb — the URL of an admin listener bound to 127.0.0.1 and a random token, mode
0600 so only the owner of the home can read it — and removes it at shutdown. A command that
finds the file asks the server; one that does not (or whose server is gone) opens the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_FILE = "gateway-admin.json"
ADMIN_PREFIX = "/v1/admin/"


class AdminError(Exception):
    """An admin request the server (or the operation) refused; the message is for the operator."""


@dataclass(frozen=True)
class AdminEndpoint:
    url: str  # the admin listener, http://127.0.0.1:<port>
    token: str
    pid: int
    gateway_url: str


def admin_file(governance_db: Path) -> Path:
    return Path(governance_db).with_name(ADMIN_FILE)


def write_admin_file(path: Path, endpoint: AdminEndpoint) -> None:
    """Written 0600 from the first byte (never readable by others, not even briefly), then
    renamed into place so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": endpoint.url, "token": endpoint.token, "pid": endpoint.pid, "gateway_url": endpoint.gateway_url}, f)
    os.replace(tmp, path)


def read_admin_file(path: Path) -> AdminEndpoint | None:
    try:
        data = json.loads(Path(path).read_text())
        return AdminEndpoint(str(data["url"]), str(data["token"]), int(data["pid"]), str(data.get("gateway_url", "")))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def remove_admin_file(path: Path, token: str) -> None:
    """Only our own file: a second server on the same home cannot have written one (it fails to
    open governance.duckdb first), but a stale file must not take a live one with it."""
    found = read_admin_file(path)
    if found is not None and found.token == token:
        Path(path).unlink(missing_ok=True)


def ask_server(governance_db: Path, op: str, args: dict, timeout: float = 30.0) -> dict | None:
    """The running server's answer to `op`, or None when no server runs for this home (no admin
    file, or a stale one left by a server that was killed: nothing listens on its port)."""
    endpoint = read_admin_file(admin_file(governance_db))
    if endpoint is None:
        return None
    try:
        resp = httpx.post(f"{endpoint.url}{ADMIN_PREFIX}{op}", json=args, headers={"Authorization": f"Bearer {endpoint.token}"}, timeout=timeout)
    except httpx.ConnectError:
        return None
    if resp.status_code != 200:
        try:
            message = resp.json()["error"]["message"]
        except Exception:
            message = f"HTTP {resp.status_code}"
        raise AdminError(f"the gateway at {endpoint.gateway_url or endpoint.url} refused: {message}")
    return resp.json()
