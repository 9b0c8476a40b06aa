"""The run registry (`runs`) and the training metrics table (`train_metrics`): read and write.

Shards are append-only, so a run appends rows: "running" when it starts, again every
`train.heartbeat_s` (the lease: the newest row's `recorded_at` is its heartbeat) and with every
checkpoint (rank 0 registers it, with its step, in one atomic commit once it is fully written),
then "completed" / "failed". `list_runs` keeps the newest row per run id, with the newest
registered checkpoint; a "running" run silent for `STALE_BEATS` heartbeats lost its process
(killed, crashed machine) and reads as "interrupted": a plain re-run resumes it.
Metrics rows may repeat a step after a restart; `read_metrics` keeps the newest per step.
A run pins the version of every table it reads (`run_versions`, written once when it
registers); `pinned_store` reads them back, so its plan, resume and evaluation see those rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from storage.pinned import PinnedStore, current_versions
from storage.schemas import schema_for
from storage.shards import ShardStore
from storage.splits import record_splits
from tamer.config import TamerConfig, TrainSettings, config_hash

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
INTERRUPTED = "interrupted"  # read-side only: a running run whose heartbeat stopped
STALE_BEATS = 3  # missed heartbeats before a run counts as interrupted


def new_run_id() -> str:
    return f"train-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@functools.cache
def code_version() -> str:
    """The git commit of this checkout (+ "-dirty"), else the installed package version."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{commit}-dirty" if dirty else commit
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"tamer-{version('tamer')}"


def training_config_hash(config: TamerConfig) -> str:
    """What decides the trained weights besides data and code: the profile and train settings
    (not the heartbeat, which decides nothing, nor any other section's defaults: a new
    evaluation method must not orphan a finished or interrupted run)."""
    train = config.train.model_copy(update={"heartbeat_s": TrainSettings().heartbeat_s})
    return config_hash({"profile": config.profile, "train": train.model_dump(mode="json")})


def record_run(store: ShardStore, run_id: str, status: str, config: TamerConfig, fingerprint: str,
               started_at: dt.datetime, **fields: Any) -> None:
    """Append one registry row; `fields`: ended_at, step, final_metrics (dict), checkpoint_uri,
    pipeline_uri, error."""
    metrics = fields.pop("final_metrics", None)
    row = dict.fromkeys(schema_for("runs").names) | {
        "run_id": run_id, "status": status, "dataset_fingerprint": fingerprint,
        "config_hash": training_config_hash(config), "code_version": code_version(),
        "started_at": started_at, "config": config.model_dump_json(),
        "final_metrics": json.dumps(metrics) if metrics is not None else None,
        "recorded_at": dt.datetime.now(dt.UTC), **fields}
    store.write("runs", pa.Table.from_pylist([row]), run_id=run_id)


@contextlib.contextmanager
def heartbeat(store: ShardStore, run_id: str, config: TamerConfig, fingerprint: str,
              started_at: dt.datetime) -> Iterator[None]:
    """Append a "running" row every `train.heartbeat_s` while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(config.train.heartbeat_s):
            try:
                record_run(store, run_id, RUNNING, config, fingerprint, started_at)
            except OSError as exc:  # a missed beat is survivable; STALE_BEATS allows for it
                print(f"heartbeat of {run_id} not recorded: {exc}", flush=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def pin_versions(store: ShardStore) -> dict[str, int]:
    """The versions a new run will read: every input table's latest, with the held-out split
    recorded for every subject of the pinned `images` first (the plan must not write it)."""
    versions = current_versions(store)
    versions.pop("splits")
    record_splits(PinnedStore(store, versions))  # splits unpinned: recorded, then read back
    return versions | current_versions(store, ["splits"])


def record_versions(store: ShardStore, run_id: str, versions: dict[str, int]) -> None:
    now = dt.datetime.now(dt.UTC)
    store.write("run_versions", pa.Table.from_pylist(
        [{"run_id": run_id, "table_name": table, "version": version, "recorded_at": now}
         for table, version in sorted(versions.items())]), run_id=run_id)


def read_versions(store: ShardStore) -> dict[str, dict[str, int]]:
    """run id -> {table: pinned version}; the first rows recorded for a run win."""
    pinned: dict[str, dict[str, int]] = {}
    for row in store.read("run_versions").to_pylist():
        pinned.setdefault(row["run_id"], {}).setdefault(row["table_name"], row["version"])
    return pinned


def pinned_store(store: ShardStore, run: dict | None) -> PinnedStore:
    """The tables as `run` (a `list_runs` row) read them; no run, or one recorded before runs
    pinned versions, reads the current versions (pinned now)."""
    return PinnedStore(store, (run or {}).get("table_versions") or pin_versions(store))


def list_runs(store: ShardStore, now: dt.datetime | None = None) -> list[dict]:
    """The current state of every run, newest start first: the newest row, its `heartbeat_at`,
    the newest registered checkpoint (`step`, `checkpoint_uri`), "interrupted" when silent,
    and the `table_versions` it pinned ({} for runs recorded before runs pinned versions)."""
    now = now or dt.datetime.now(dt.UTC)
    latest: dict[str, dict] = {}
    checkpointed: dict[str, dict] = {}
    for row in store.read("runs").to_pylist():
        run_id = row["run_id"]
        if run_id not in latest or row["recorded_at"] >= latest[run_id]["recorded_at"]:
            latest[run_id] = row
        if row["checkpoint_uri"] and (run_id not in checkpointed
                                      or (row["step"] or 0) > (checkpointed[run_id]["step"] or 0)):
            checkpointed[run_id] = row
    pinned = read_versions(store)
    for run_id, row in latest.items():
        row["table_versions"] = pinned.get(run_id, {})
        row["heartbeat_at"] = row["recorded_at"] if row["status"] == RUNNING else None
        if run_id in checkpointed:
            row["step"] = checkpointed[run_id]["step"]
            row["checkpoint_uri"] = checkpointed[run_id]["checkpoint_uri"]
        silent = (now - row["recorded_at"]).total_seconds()
        if row["status"] == RUNNING and silent > STALE_BEATS * _heartbeat_s(row):
            row["status"] = INTERRUPTED
    return sorted(latest.values(), key=lambda row: row["started_at"], reverse=True)


def get_run(store: ShardStore, run_id: str) -> dict | None:
    return next((row for row in list_runs(store) if row["run_id"] == run_id), None)


def interrupted_run(store: ShardStore, config: TamerConfig, fingerprint: str) -> dict | None:
    """The newest interrupted run of these training settings on this dataset version."""
    wanted = training_config_hash(config)
    return next((row for row in list_runs(store) if row["status"] == INTERRUPTED
                 and row["dataset_fingerprint"] == fingerprint and row["config_hash"] == wanted),
                None)


def _heartbeat_s(row: dict) -> float:
    """The run's own interval (parsed loosely: rows written by older code lack the field)."""
    return json.loads(row["config"]).get("train", {}).get("heartbeat_s", TrainSettings().heartbeat_s)


def write_metrics(store: ShardStore, run_id: str, rows: list[dict]) -> None:
    """Commit metric rows (dicts of TRAIN_METRICS columns without run_id/recorded_at)."""
    now = dt.datetime.now(dt.UTC)
    store.write("train_metrics", pa.Table.from_pylist(
        [{"run_id": run_id, "recorded_at": now, **row} for row in rows]), run_id=run_id)


def read_metrics(store: ShardStore, run_id: str) -> list[dict]:
    """One row per step (the newest when a restart wrote it twice), in step order."""
    by_step: dict[int, dict] = {}
    for row in store.read("train_metrics").to_pylist():
        if row["run_id"] == run_id and (row["step"] not in by_step
                                        or row["recorded_at"] >= by_step[row["step"]]["recorded_at"]):
            by_step[row["step"]] = row
    return [by_step[step] for step in sorted(by_step)]
