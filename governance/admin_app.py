"""The server side of the admin path: an admin listener on 127.0.0.1 beside the gateway, and
`serve`, which runs both and keeps the admin file (governance.admin) for exactly as long.

The admin listener is a separate socket bound to 127.0.0.1 whatever `--host` the gateway gets,
so key management is never reachable from the network; each request must also carry the token
from the admin file (readable by the home's owner only) and come from a loopback address.
Refused admin requests are audited; key creation and revocation are audited by the operations.
"""

from __future__ import annotations

import hmac
import inspect
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

from governance import audit
from governance.admin import ADMIN_PREFIX, AdminEndpoint, AdminError, admin_file, remove_admin_file, write_admin_file
from governance.admin_ops import OPS
from governance.audit import AuditEntry
from governance.gateway import Gateway
from governance.server import create_app

LOOPBACK = {"127.0.0.1", "::1"}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _already_stopping(signum, frame) -> None:
    """The server has shut down on this signal; the cleanup in `serve` finishes the job."""


def _refusal(request: Request, token: str) -> str | None:
    """Why this request may not use the admin API, or None when it may."""
    if request.client is None or request.client.host not in LOOPBACK:
        return "admin requests are accepted from this machine only"
    auth = request.headers.get("authorization") or ""
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return "missing or wrong admin token (it is in gateway-admin.json in the home)"
    return None


def create_admin_app(gateway: Gateway, token: str) -> FastAPI:
    app = FastAPI(title="civicflow gateway admin", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(ADMIN_PREFIX + "{op:path}")
    def admin(op: str, request: Request, args: dict = Body(default_factory=dict)):
        reason = _refusal(request, token)
        if reason is not None:
            entry = AuditEntry(outcome="refused", rule="admin_unauthenticated", message=f"POST {ADMIN_PREFIX}{op[:100]}: {reason}")
            audit.append(gateway.state, entry)
            return JSONResponse(status_code=401, content={"error": {"rule": "admin_unauthenticated", "message": reason, "audit_id": entry.audit_id}})
        fn = OPS.get(op)
        if fn is None:
            return JSONResponse(status_code=404, content={"error": {"rule": "unknown_op", "message": f"no admin operation {op!r} (known: {', '.join(OPS)})"}})
        try:
            inspect.signature(fn).bind(gateway.state, gateway.rules, **args)
        except TypeError:
            return JSONResponse(status_code=400, content={"error": {"rule": "bad_arguments", "message": f"wrong arguments for {op}: {sorted(args)}"}})
        try:
            return fn(gateway.state, gateway.rules, **args)
        except AdminError as e:
            return JSONResponse(status_code=400, content={"error": {"rule": "admin_refused", "message": str(e)}})

    return app


def serve(gateway: Gateway, governance_db: Path, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning") -> None:
    """Run the gateway on host:port and the admin listener on 127.0.0.1:<free port> until the
    gateway stops (Ctrl-C, SIGTERM); the admin file exists only while both listen."""
    token = secrets.token_urlsafe(32)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    admin_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    admin = uvicorn.Server(uvicorn.Config(create_admin_app(gateway, token), log_level=log_level, lifespan="off"))
    # In a thread: uvicorn leaves signals to the server of the main thread, which stops both.
    thread = threading.Thread(target=admin.run, kwargs={"sockets": [sock]}, name="gateway-admin", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not admin.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the admin listener did not start")
        time.sleep(0.02)
    path = admin_file(governance_db)
    write_admin_file(path, AdminEndpoint(admin_url, token, os.getpid(), f"http://{host}:{port}"))
    # uvicorn stops on SIGINT/SIGTERM and then re-raises the signal to the handler it found;
    # the default SIGTERM handler would end the process before the admin file is removed.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _already_stopping) for sig in STOP_SIGNALS} if main_thread else {}
    try:
        uvicorn.Server(uvicorn.Config(create_app(gateway), host=host, port=port, log_level=log_level)).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        remove_admin_file(path, token)
        admin.should_exit = True
        thread.join(timeout=10)
        sock.close()
