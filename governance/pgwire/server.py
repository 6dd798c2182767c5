"""The Postgres endpoint's listener: asyncio in a thread of its own, beside the HTTP server.
Gateway calls block, so each session hands them to a worker thread (asyncio.to_thread)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from governance.gateway import Gateway
from governance.pgwire.codec import ProtocolError
from governance.pgwire.session import Session, Stats


class PgServer:
    def __init__(self, gateway: Gateway, host: str = "127.0.0.1", port: int = 8766):
        self.gateway, self.host, self.port = gateway, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.stats = Stats()  # rows and DataRow batches sent, over all sessions

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self.gateway, reader, writer, stats=self.stats)
        try:
            if await session.start():
                await session.serve()
        except (asyncio.CancelledError, asyncio.IncompleteReadError, ConnectionError, ProtocolError, UnicodeDecodeError, ValueError, IndexError):
            pass  # the client went away, spoke nonsense, or the server stops: drop the connection
        finally:
            try:  # a stream still open ends here: settled, audited, its slot freed
                await session.end()
            except asyncio.CancelledError:  # the server stops: end it on this thread
                session.close_answers()
            except Exception:
                pass
            if session.probe is not None:
                session.probe.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        self._server.close()
        tasks = asyncio.all_tasks(loop)  # open sessions: end them so the loop closes clean
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks))
        loop.close()

    def start(self) -> PgServer:
        self._thread = threading.Thread(target=self._run, name="gateway-pgwire", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
