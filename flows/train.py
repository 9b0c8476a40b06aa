"""The `train` flow: 1. pin the version of every table it reads, 2. register the run (with its
pins), 3. build the datasets from those versions, 4. train on Ray Train (resuming the run's
newest checkpoint), 5. export the pipeline, 6. close the registry row, 7. publish metrics as
Prefect artifacts, 8. announce the run (the evaluation deployment triggers on it).

A new run pins the current versions; data committed while it trains is not read (Delta time
travel). Starting a run id again (`resume`) continues it from its checkpoint, with its
recorded config and pinned versions, however much was committed since; without `resume`, an
interrupted run (its process died) of the same settings on the current version is continued
rather than started over. Any other dataset version is refused by name. While it trains, the
run's registry heartbeat is refreshed (tasks/runs.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.events import emit_training_completed
from storage.shards import ShardStore
from tamer.config import TamerConfig, load_config
from tasks import runs, train_run
from tasks.train import FaultInjection

METRIC_COLUMNS = ("step", "loss", "diffusion", "identity", "lr", "grad_norm", "samples_per_s", "data_share")


@task
def resolve_run(config: TamerConfig, overrides: dict[str, Any], dataset: str | None,
                resume: str | None) -> tuple[str, TamerConfig, str, dict[str, int]]:
    """(run id, its config, dataset fingerprint, pinned table versions); refuses a dataset
    version it cannot read."""
    return train_run.resolve_run(ShardStore(config.root), config, overrides, dataset, resume)


@task
def register(config: TamerConfig, run_id: str, fingerprint: str,
             versions: dict[str, int]) -> dt.datetime:
    """Record the run's pinned versions (once) and append the "running" row; returns the start
    time the end row repeats."""
    started = dt.datetime.now(dt.UTC)
    store = ShardStore(config.root)
    if run_id not in runs.read_versions(store):
        runs.record_versions(store, run_id, versions)
    runs.record_run(store, run_id, runs.RUNNING, config, fingerprint, started)
    return started


@task
def train(config: TamerConfig, run_id: str, fingerprint: str, versions: dict[str, int],
          started: dt.datetime, fault: FaultInjection | None) -> dict:
    """Build the datasets from the pinned versions, run the trainer, export the pipeline."""
    return train_run.train_run(ShardStore(config.root), run_id, config, fingerprint, versions,
                               started, fault)


@task
def complete(config: TamerConfig, report: dict, started: dt.datetime) -> None:
    """Append the "completed" row: final metrics, checkpoint and pipeline locations."""
    runs.record_run(ShardStore(config.root), report["run_id"], runs.COMPLETED, config,
                    report["dataset_fingerprint"], started, ended_at=dt.datetime.now(dt.UTC),
                    step=report["step"], final_metrics=report["metrics"],
                    checkpoint_uri=report["checkpoint_uri"], pipeline_uri=report["pipeline_uri"])


@task
def publish(root: str, report: dict) -> None:
    """Metrics table and a run summary, visible on the flow run's Artifacts tab."""
    run_id = report["run_id"]
    rows = [{k: row[k] for k in METRIC_COLUMNS} for row in runs.read_metrics(ShardStore(root), run_id)]
    key = run_id.lower()
    create_table_artifact(rows, key=f"{key}-metrics", description=f"training metrics of {run_id}")
    summary = "\n".join(f"| {k} | {v} |" for k, v in report.items() if k != "metrics")
    create_markdown_artifact(f"# Training run {run_id}\n\n| field | value |\n|---|---|\n{summary}\n",
                             key=f"{key}-summary", description="run registry entry")


@flow(name="train", log_prints=True)
def train_flow(root: str | None = None, config_file: str | None = None, overrides: dict[str, Any] | None = None,
               dataset: str | None = None, resume: str | None = None,
               fault: FaultInjection | None = None) -> dict:
    """Train on the current dataset version; `overrides` are dotted keys ({"train.steps": 500})."""
    config = load_config(config_file, root=root, **(overrides or {}))
    run_id, config, fingerprint, versions = resolve_run(config, overrides or {}, dataset, resume)
    started = register(config, run_id, fingerprint, versions)
    report = train(config, run_id, fingerprint, versions, started, fault)
    complete(config, report, started)
    publish(config.root, report)
    emit_training_completed(config.root, run_id, fingerprint, report["pipeline_uri"])
    return report
