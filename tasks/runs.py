"""The run registry (`runs`) and the training metrics table (`train_metrics`): read and write.

Shards are append-only, so a run writes one row when it starts ("running") and one when it ends
("completed" / "failed"); `list_runs` keeps the newest `recorded_at` per run id. Metrics rows may
repeat a step after a restart; `read_metrics` keeps the newest per step.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.schemas import schema_for
from storage.shards import ShardStore
from tamer.config import TamerConfig, config_hash

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"


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
    """What decides the trained weights besides data and code: the profile and train settings."""
    return config_hash(TamerConfig(profile=config.profile, train=config.train))


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


def list_runs(store: ShardStore) -> list[dict]:
    """The current row of every run, newest start first."""
    latest: dict[str, dict] = {}
    for row in store.read("runs").to_pylist():
        if row["run_id"] not in latest or row["recorded_at"] >= latest[row["run_id"]]["recorded_at"]:
            latest[row["run_id"]] = row
    return sorted(latest.values(), key=lambda row: row["started_at"], reverse=True)


def get_run(store: ShardStore, run_id: str) -> dict | None:
    return next((row for row in list_runs(store) if row["run_id"] == run_id), None)


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
