"""How the loader is tuned: one typed value, built at the edge and passed down.

The CLI and the Dagster definitions build an `IngestConfig` (from the environment, with
`ingest_config_from_env`) and hand it to `load_landing`; nothing in `ingest/` reads the
environment itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from warehouse.settings import env_value

BATCH_BYTES_ENV = "CIVICFLOW_INGEST_BATCH_BYTES"
CHUNK_BYTES_ENV = "CIVICFLOW_INGEST_CHUNK_BYTES"
PARSE_WORKERS_ENV = "CIVICFLOW_INGEST_PARSE_WORKERS"
FAULT_ENV = "CIVICFLOW_INGEST_FAULT"

VARIABLES = {
    BATCH_BYTES_ENV: "input bytes of small files of one source committed in one transaction (default 64 MiB)",
    CHUNK_BYTES_ENV: "bytes of a file read and validated at a time; a bigger file is loaded alone, chunk by chunk (default 16 MiB)",
    PARSE_WORKERS_ENV: "threads parsing the next files while the loader writes (default 2)",
    FAULT_ENV: "crash tests only: `<point>:<marker file>` makes a run stop at a fault point (ingest, dbt or publish) to be killed (unset in production)",
}


@dataclass(frozen=True)
class IngestConfig:
    """The loader's knobs. The defaults are the measured ones (`bench/bench_ingest.py`)."""

    # Input bytes of small files of one source committed together. Each file keeps its own
    # manifest row and checksum; a crash loses the whole batch and the re-run loads each of
    # its files whole. A transaction per 2 MB file cost a WAL write and an fsync each and kept
    # every insert below DuckDB's row group (122,880 rows), so rows went through the WAL and
    # again through the checkpoint; a batch of ~300,000 rows is written once, to the file.
    batch_bytes: int = 64 << 20
    # Bytes read at a time; a chunk always ends on a line end, and a file bigger than a chunk
    # is loaded alone, chunk by chunk. Parsing a chunk takes many times its size at its peak
    # (lines, decoded fields, typed columns; one chunk parsed ahead while one is written): at
    # 16 MiB the loader peaked at ~780 MB for a 1 GB and for a 2 GB file alike.
    chunk_bytes: int = 16 << 20
    # Threads parsing the next files while the main thread writes. With one, the writer
    # waited for the parser a third of the run (a parse is partly Python holding the GIL).
    parse_workers: int = 2
    # Fault injection for the crash tests, `<point>:<marker file>`: at that point the run
    # writes its pid to the marker file and waits to be killed (`stop_at`). Points of the
    # loader: `in_transaction` (a file's own transaction, after each chunk is written) and
    # `in_batch` (a batch of files, everything written, before COMMIT); of the nightly job:
    # `in_dbt` (dbt build running, its first model built) and `in_publish` (the snapshot
    # copied to its temporary name, CURRENT not switched yet). None in production.
    fault: str | None = None
    # The first delivery day the partitions have (the settings' start date): a landing folder
    # dated before it is reported as misplaced, never loaded. None: any day.
    first_day: date | None = None


def stop_at(fault: str | None, point: str) -> None:
    """Fault injection for the crash tests: at `point`, write this pid to the marker file and
    wait to be killed. A no-op unless `fault` (`IngestConfig.fault`) names this point."""
    if not fault or not fault.startswith(point + ":"):
        return
    Path(fault.split(":", 1)[1]).write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def ingest_config_from_env(env: Mapping[str, str]) -> IngestConfig:
    """The config the given environment asks for (the caller passes `os.environ` or a test's dict)."""
    defaults = IngestConfig()

    def number(name: str, default: int) -> int:
        value = env_value(env, name)
        return int(value) if value else default

    return IngestConfig(
        batch_bytes=number(BATCH_BYTES_ENV, defaults.batch_bytes),
        chunk_bytes=number(CHUNK_BYTES_ENV, defaults.chunk_bytes),
        parse_workers=number(PARSE_WORKERS_ENV, defaults.parse_workers),
        fault=env_value(env, FAULT_ENV),
    )
