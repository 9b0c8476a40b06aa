"""`tamer verify` and `tamer maintain`: check every committed file against the log; compact
small files and vacuum what no version within the retention still needs.

Verify reads only file listings and Parquet footers, never the data. It checks what the log
stores for each data file: its size and (from the file's statistics) its row count. Delta's
add actions carry no checksum of the file, so there is none to check; a same-size rewrite with
the same row count goes unnoticed here, and a read of its damaged pages fails naming the file. Maintain leaves every
version younger than the retention readable (time travel), and stretches a table's retention
back to the oldest version a training run pinned (`run_versions`), so re-building a run's plan
never breaks; uncommitted files of killed writers older than the retention are removed too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pyarrow.parquet as pq

from storage.schemas import TABLES
from storage.shards import ShardStore

DEFAULT_RETENTION_HOURS = 168  # a week: longer than any run that reads a pinned version


@dataclass(frozen=True)
class Problem:
    """One committed file that does not match the log."""

    table: str
    path: str
    problem: str  # missing | size | rows | unreadable
    detail: str


def verify(store: ShardStore) -> list[Problem]:
    """Every file of every table's current version: exists, size and row count as logged."""
    problems = []
    for table in TABLES:
        for info in store.shards(table):
            path = store.location.join(table, info.name)
            problem = _check_file(store, path, info.num_bytes, info.rows)
            if problem:
                problems.append(Problem(table, store.location.url(path), *problem))
    return problems


def _check_file(store: ShardStore, path: str, num_bytes: int, rows: int
                ) -> tuple[str, str] | None:
    if not store.fs.exists(path):
        return "missing", "named by the log, not on storage"
    size = store.fs.size(path)
    if size != num_bytes:
        return "size", f"{size} bytes, the log recorded {num_bytes}"
    try:
        with store.fs.open(path, "rb") as handle:
            found = pq.ParquetFile(handle).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - any footer failure is this file's problem
        return "unreadable", f"{type(exc).__name__}: {exc}"
    if found != rows:
        return "rows", f"{found} rows, the log recorded {rows}"
    return None


def maintain(store: ShardStore, retention_hours: int = DEFAULT_RETENTION_HOURS
             ) -> dict[str, dict[str, int]]:
    """Compact and vacuum every table; table -> files compacted, added, vacuumed, and the
    retention used (longer than asked where a run pinned an older version)."""
    if retention_hours < 0:
        raise ValueError(f"retention_hours must be >= 0, got {retention_hours}")
    oldest_pins = _oldest_pinned_versions(store)
    report = {}
    for table in TABLES:
        snapshot = store.snapshot(table)
        if snapshot is None:
            continue
        compacted = snapshot.optimize.compact()
        snapshot = store.snapshot(table)
        hours = max(retention_hours, _hours_since(snapshot, oldest_pins.get(table)))
        removed = snapshot.vacuum(retention_hours=hours, dry_run=False,
                                  enforce_retention_duration=False, full=True)
        report[table] = {"files_removed_by_compaction": compacted["numFilesRemoved"],
                         "files_added_by_compaction": compacted["numFilesAdded"],
                         "files_vacuumed": len(removed), "retention_hours": hours}
    return report


def _oldest_pinned_versions(store: ShardStore) -> dict[str, int]:
    """table -> the oldest version any training run pinned (a version of -1 pins nothing)."""
    oldest: dict[str, int] = {}
    for row in store.read("run_versions", ["table_name", "version"]).to_pylist():
        if row["version"] >= 0:
            oldest[row["table_name"]] = min(row["version"], oldest.get(row["table_name"], row["version"]))
    return oldest


def _hours_since(snapshot, version: int | None) -> int:
    """Whole hours (rounded up, plus one) since `version` was committed: a vacuum retention that
    keeps every file that version reads (their removal was logged after it); 0 for none."""
    if version is None:
        return 0
    committed_ms = next((c["timestamp"] for c in snapshot.history() if c.get("version") == version), None)
    if committed_ms is None:  # history no longer reaches it: keep everything the log knows
        committed_ms = min(c["timestamp"] for c in snapshot.history())
    return math.ceil((time.time() * 1000 - committed_ms) / 3_600_000) + 1
