"""Reading ahead: the next files of a contract hashed and parsed on worker threads while the
loader writes, in file order and within a byte budget.

Parsing (polars, DuckDB's JSON decoder) and writing (the warehouse) release the GIL, so the
workers parse the next files while the main thread writes a batch. Each file is read once:
its checksum and its rows come from the same bytes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ingest.config import IngestConfig
from ingest.contracts import Contract
from ingest.landing import sha256_of, sha256_of_bytes
from ingest.parsed import FileRefused, Known, ParseResult
from ingest.validate import validate_files

T = TypeVar("T")


def pack_in_order(items: Iterable[tuple[T, int]], budget: int, alone_over: int | None = None) -> list[list[T]]:
    """Consecutive (item, weight) pairs in groups of at most `budget` total weight, order kept;
    an item heavier than the budget, or than `alone_over`, is a group of its own."""
    groups: list[list[T]] = []
    size = 0
    for item, n in items:
        if alone_over is not None and n > alone_over:
            groups.append([item])
            size = budget  # nothing joins it
            continue
        if not groups or size + n > budget:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += n
    return groups


@dataclass
class Prepared:
    """A file read on a worker thread: its checksum and, when it fits in one chunk, its rows parsed.

    `size` and `mtime_ns` are the file's as it was read (taken before the read and found
    unchanged after it): the manifest records them with the checksum of those same bytes.
    """

    sha: str
    parts: list[ParseResult] | None = None  # None: bigger than a chunk, parsed while it is loaded
    error: Exception | None = None  # FileRefused (or a bug) while parsing: raised where the file is judged
    size: int = 0
    mtime_ns: int = 0

    @property
    def streamed(self) -> bool:
        return self.parts is None and self.error is None


def size_of(path: Path) -> int:
    """A file's size for read-ahead budgets; 0 for a file gone since it was listed (it is refused when read)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def still_being_written(path: Path) -> FileRefused:
    return FileRefused(f"{path.name}: still being written (its size or modification time changed while it was read); looked at again next run")


def unreadable(path: Path, exc: OSError) -> FileRefused:
    return FileRefused(f"{path.name}: could not be read ({exc.strerror or type(exc).__name__}); the other files go on")


def read_stable(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and its stat, both of one state of the file: raises FileRefused when
    it changed while it was read (an upload in progress) or cannot be read."""
    try:
        before = os.stat(path)
        data = path.read_bytes()
        after = os.stat(path)
    except OSError as exc:
        raise unreadable(path, exc) from None
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(data) != after.st_size:
        raise still_being_written(path)
    return data, before


def hash_stable(path: Path) -> tuple[str, os.stat_result]:
    """The checksum of a big file, read once, and its stat (as `read_stable`)."""
    try:
        before = os.stat(path)
        sha = sha256_of(path)
        after = os.stat(path)
    except OSError as exc:
        raise unreadable(path, exc) from None
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise still_being_written(path)
    return sha, before


def prepare(contract: Contract, paths: list[Path], known: Known | None, chunk_bytes: int) -> list[Prepared]:
    """Hash files and parse them, reading each once; a file bigger than a chunk is only hashed.

    `paths` is one big file, or small files validated together (`validate_files`). A file
    that cannot be read, or changes while it is read, is refused (`Prepared.error`).
    """
    if len(paths) == 1 and size_of(paths[0]) > chunk_bytes:  # a big file: parsed in chunks at load time
        try:
            sha, st = hash_stable(paths[0])
        except FileRefused as exc:
            return [Prepared(sha="", error=exc)]
        return [Prepared(sha=sha, size=st.st_size, mtime_ns=st.st_mtime_ns)]
    out: list[Prepared | None] = [None] * len(paths)
    files, where = [], []
    for n, p in enumerate(paths):
        try:
            data, st = read_stable(p)
        except FileRefused as exc:
            out[n] = Prepared(sha="", error=exc)
            continue
        out[n] = Prepared(sha=sha256_of_bytes(data), size=st.st_size, mtime_ns=st.st_mtime_ns)
        files.append((p, data))
        where.append(n)
    try:
        results = validate_files(contract, files, known) if files else []
    except Exception as exc:  # a bug: raised where the first of these files is judged
        results = [exc] * len(files)
    for n, r in zip(where, results):
        prepared = out[n]
        assert prepared is not None
        if isinstance(r, Exception):
            prepared.error = r
        else:
            prepared.parts = [r]
    return out  # type: ignore[return-value]


class ReadAhead:
    """The files of one contract, prepared in order on worker threads, up to `budget` bytes ahead.

    Bounded memory: at most about `budget` bytes of small files are held parsed ahead (a big
    file costs only its hash). Small files are parsed in groups of up to a chunk of bytes.
    A budget of 0 reads nothing ahead: each file is prepared when it is taken.
    """

    def __init__(
        self, pool: ThreadPoolExecutor, contract: Contract, paths: list[Path], known: Known | None,
        budget: int, config: IngestConfig,
    ):
        self._pool, self._contract, self._known, self._budget = pool, contract, known, budget
        self._chunk_bytes = config.chunk_bytes
        sizes = ((p, size_of(p)) for p in paths)
        group_bytes = config.chunk_bytes if budget else 0
        self._queue = deque(pack_in_order(sizes, group_bytes, alone_over=config.chunk_bytes))
        self._where: dict[Path, tuple[Future, int]] = {}
        self._cost: dict[Path, int] = {}
        self._bytes = 0

    def _refill(self) -> None:
        while self._queue and (not self._where or self._bytes < self._budget):
            group = self._queue.popleft()
            future = self._pool.submit(prepare, self._contract, group, self._known, self._chunk_bytes)
            for i, path in enumerate(group):
                self._where[path] = (future, i)
                self._cost[path] = min(size_of(path), self._chunk_bytes)
                self._bytes += self._cost[path]

    def take(self, path: Path) -> Prepared:
        self._refill()
        future, i = self._where.pop(path)
        self._bytes -= self._cost.pop(path)
        prepared = future.result()[i]
        self._refill()
        return prepared


_END = object()


def chunks_ahead(pool: ThreadPoolExecutor, parts: Iterator[ParseResult]) -> Iterator[ParseResult]:
    """A big file's chunks, the next one parsed on `pool` while the caller writes this one."""
    nxt = pool.submit(next, parts, _END)
    while True:
        part = nxt.result()
        if part is _END:
            return
        nxt = pool.submit(next, parts, _END)
        yield part
        del part
