"""The analysts' Python client: three lines in a notebook.

    from governance.client import Client
    gw = Client("http://127.0.0.1:8765", key)        # or Client() with CIVICFLOW_API_KEY set
    df = gw.query("SELECT category, sum(units) FROM marts.neighbourhood_demand_daily GROUP BY 1")

`query` returns a polars DataFrame (`.to_pandas()` for pandas, or `query_pandas`), read from
the gateway's Arrow stream; the last query's audit id and cost are on `client.last`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:  # imported where a frame is built: the CLI's JSON path starts without them
    import polars as pl
    import pyarrow as pa

DEFAULT_URL = "http://127.0.0.1:8765"


class GatewayError(Exception):
    def __init__(self, status: int, rule: str | None, message: str, audit_id: str | None):
        self.status, self.rule, self.message, self.audit_id = status, rule, message, audit_id
        super().__init__(f"[{rule}] {message} (audit id {audit_id})")


ARROW_END_KEY = "civicflow"  # custom metadata of an Arrow answer's last, empty batch: how it ended


@dataclass
class QueryInfo:
    audit_id: str
    estimate: float
    actual: float
    truncated: bool
    suppressed_groups: int
    snapshot: str | None = None  # the published snapshot the answer was read from
    as_of: str | None = None  # when it was published (UTC)
    data_date: str | None = None  # the last day of data it holds
    notes: list[str] = field(default_factory=list)  # e.g. the relations read that are published as merged cells


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 120.0):
        self.url = (url or os.environ.get("CIVICFLOW_GATEWAY_URL") or DEFAULT_URL).rstrip("/")
        self.key = key or os.environ.get("CIVICFLOW_API_KEY")
        if not self.key:
            raise ValueError("an API key is needed: Client(url, key) or CIVICFLOW_API_KEY")
        # A plain-HTTP gateway (the loopback default) needs no TLS context: building one loads the
        # CA bundle, most of a CLI query's start. An https:// gateway is verified as usual.
        plain = self.url.startswith("http://")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {self.key}"}, verify=not plain)
        self.last: QueryInfo | None = None

    def _send(self, method: str, path: str, **kw) -> httpx.Response:
        """The request, or GatewayError(rule "unreachable") when no gateway answers: callers see
        one exception type whatever went wrong."""
        try:
            return self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise GatewayError(0, "unreachable", f"the gateway at {self.url} cannot be reached ({type(e).__name__}); is `civicflow serve` running?", None) from None

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
            except Exception:
                err = {"rule": None, "message": f"HTTP {resp.status_code}", "audit_id": None}
            raise GatewayError(resp.status_code, err.get("rule"), err.get("message"), err.get("audit_id"))
        return resp

    def _query(self, sql: str, fmt: str) -> httpx.Response:
        resp = self._check(self._send("POST", "/v1/query", json={"sql": sql, "format": fmt}))
        h = resp.headers
        # A long answer streams: its cost and truncation come at its end (`_ended`).
        self.last = QueryInfo(h["x-audit-id"], float(h["x-cost-estimate"]), float(h.get("x-cost-actual", "nan")), h.get("x-truncated") == "true",
                              int(h.get("x-suppressed-groups", 0)), h.get("x-snapshot") or None, h.get("x-snapshot-as-of") or None,
                              h.get("x-data-date") or None, [n for n in h.get("x-notes", "").split(" | ") if n])
        return resp

    def _ended(self, end: dict) -> None:
        """A streamed answer's last word: its cost, whether it was cut, or why it failed."""
        if end.get("outcome") != "ok":
            raise GatewayError(200, end.get("rule"), end.get("message") or "the answer failed while streaming", end.get("audit_id"))
        self.last.actual = float(end["actual"]) if end.get("actual") is not None else self.last.actual
        self.last.truncated, self.last.suppressed_groups = bool(end.get("truncated")), int(end.get("suppressed_groups") or 0)

    def query_arrow(self, sql: str) -> pa.Table:
        import pyarrow as pa

        batches = []
        with pa.ipc.open_stream(self._query(sql, "arrow").content) as reader:
            while True:
                try:
                    batch, meta = reader.read_next_batch_with_custom_metadata()
                except StopIteration:
                    break
                if meta is not None and ARROW_END_KEY.encode() in meta:
                    self._ended(json.loads(meta[ARROW_END_KEY.encode()]))
                else:
                    batches.append(batch)
            return pa.Table.from_batches(batches, schema=reader.schema)

    def query_rows(self, sql: str) -> tuple[list[str], list[list]]:
        """Column names and rows as JSON values (what the CLI prints: no frame library needed)."""
        payload = self._query(sql, "json").json()
        return payload["columns_out"], payload["rows"]

    def query(self, sql: str) -> pl.DataFrame:
        import polars as pl

        return pl.from_arrow(self.query_arrow(sql))

    def query_pandas(self, sql: str):
        """A pandas DataFrame; DATE and TIMESTAMP columns come as datetime64 (pandas' default
        for Arrow dates is an object column of datetime.date, which resamples and plots badly)."""
        return self.query_arrow(sql).to_pandas(date_as_object=False)

    def estimate(self, sql: str) -> dict:
        return self._check(self._send("POST", "/v1/estimate", json={"sql": sql})).json()

    def catalog(self) -> dict:
        """What the key's team may query: {"snapshot", "snapshot_as_of", "data_date", "relations": [...]}."""
        return self._check(self._send("GET", "/v1/catalog")).json()

    def usage(self) -> dict:
        return self._check(self._send("GET", "/v1/usage")).json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
