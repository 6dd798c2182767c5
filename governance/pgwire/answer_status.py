"""What a PostgreSQL client is told about each answer besides its rows.

* Which data it reflects, as ParameterStatus messages (the way a server reports `TimeZone` or
  `server_version`): `civicflow.data_date` (the last day of data in the snapshot),
  `civicflow.snapshot` and `civicflow.snapshot_published`. They are sent before an answer's rows
  whenever they differ from what the session last reported (so after the first query, and again
  when the data team publishes a new snapshot); drivers keep the latest value
  (`conn.info.parameter_status("civicflow.data_date")` in psycopg, `SHOW civicflow.data_date`
  anywhere).
* The answer's notes (the relations read that are published as merged cells) as NoticeResponse
  messages, which psql prints as `NOTICE:` and drivers hand to their notice handlers."""

from __future__ import annotations

from collections.abc import MutableMapping

from governance.gateway import Result
from governance.pgwire import codec

DATA_DATE, SNAPSHOT, PUBLISHED = "civicflow.data_date", "civicflow.snapshot", "civicflow.snapshot_published"


def answer_status(result: Result, reported: MutableMapping[str, str]) -> bytes:
    """The ParameterStatus messages whose value changed (recorded in `reported`, the session's
    parameters, which SHOW reads) and a NoticeResponse per note."""
    out = b""
    for name, value in ((DATA_DATE, result.data_date or "unknown"), (SNAPSHOT, result.snapshot), (PUBLISHED, result.as_of)):
        if value is not None and reported.get(name) != value:
            reported[name] = value
            out += codec.parameter_status(name, value)
    return out + b"".join(codec.notice(note) for note in result.notes)
