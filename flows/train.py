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
import tempfile
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.events import emit_training_completed
from storage.pinned import PinnedStore
from storage.shards import ShardStore
from tamer.config import TamerConfig, load_config
from tasks import runs
from tasks.train import PIPELINE, FaultInjection, export_pipeline, run_training
from tasks.train_data import build_datasets, build_plan

METRIC_COLUMNS = ("step", "loss", "diffusion", "identity", "lr", "grad_norm", "samples_per_s", "data_share")


@task
def resolve_run(root: str, config_file: str | None, overrides: dict[str, Any], dataset: str | None,
                resume: str | None) -> tuple[str, str, str, dict[str, int]]:
    """(run id, config JSON, dataset fingerprint, pinned table versions); refuses a dataset
    version it cannot read."""
    store = ShardStore(root)
    current = store.fingerprint()
    config = load_config(config_file, root=root, **overrides)
    previous = runs.get_run(store, resume) if resume else None
    if resume is None and dataset in (None, current):
        previous = runs.interrupted_run(store, config, current)
        resume = previous and previous["run_id"]
        if previous:
            print(f"continuing interrupted run {resume} from step {previous['step'] or 0}")
    if previous is not None and previous["status"] == runs.RUNNING:
        raise ValueError(f"run {resume} is still running (heartbeat at {previous['heartbeat_at']:%X})")
    run_id = resume or runs.new_run_id()
    versions = previous["table_versions"] if previous is not None else {}
    if previous is not None:
        recorded = TamerConfig.model_validate_json(previous["config"]).model_dump()
        config = load_config(None, **{**_flatten(recorded), **overrides})
        dataset = dataset or previous["dataset_fingerprint"]
    versions = versions or runs.pin_versions(store)
    fingerprint = PinnedStore(store, versions).fingerprint()
    if dataset and dataset != fingerprint:
        why = f"run {resume} trained on it" if previous else "it was requested"
        raise ValueError(f"dataset version {dataset} is not the current one ({fingerprint}) but "
                         f"{why}: a run reads the versions it pinned, a new run the current ones. "
                         "Start a new run on the current version instead.")
    return run_id, config.model_dump_json(), fingerprint, versions


@task
def register(root: str, run_id: str, config_json: str, fingerprint: str,
             versions: dict[str, int]) -> dt.datetime:
    """Record the run's pinned versions (once) and append the "running" row; returns the start
    time the end row repeats."""
    started = dt.datetime.now(dt.UTC)
    store = ShardStore(root)
    if run_id not in runs.read_versions(store):
        runs.record_versions(store, run_id, versions)
    runs.record_run(store, run_id, runs.RUNNING, TamerConfig.model_validate_json(config_json),
                    fingerprint, started)
    return started


@task
def train(root: str, run_id: str, config_json: str, fingerprint: str, versions: dict[str, int],
          started: dt.datetime, fault: FaultInjection | None) -> dict:
    """Build the datasets from the pinned versions and run the trainer; a failure is
    registered, then raised."""
    from tasks.ray_runtime import ensure_ray

    config = TamerConfig.model_validate_json(config_json)
    store = ShardStore(root)
    try:
        with runs.heartbeat(store, run_id, config, fingerprint, started):
            ensure_ray(config.ray)
            pinned = PinnedStore(store, versions)
            plan = build_plan(pinned)
            datasets = build_datasets(pinned, plan, config.profile, config.train.data_cpus)
            result = run_training(config, run_id, fingerprint, datasets, fault, started)
    except Exception as exc:  # the registry keeps its newest registered checkpoint
        runs.record_run(store, run_id, runs.FAILED, config, fingerprint, started,
                        ended_at=dt.datetime.now(dt.UTC), error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    with result.checkpoint.as_directory() as directory:
        pipeline = _export(store, run_id, directory)
    return {"run_id": run_id, "step": result.step, "start_step": result.start_step,
            "metrics": result.metrics, "checkpoint_uri": result.checkpoint.path,
            "pipeline_uri": pipeline, "caption_source": plan.caption_source,
            "pair_source": plan.pair_source, "dataset_fingerprint": fingerprint}


@task
def complete(root: str, config_json: str, report: dict, started: dt.datetime) -> None:
    """Append the "completed" row: final metrics, checkpoint and pipeline locations."""
    runs.record_run(ShardStore(root), report["run_id"], runs.COMPLETED, TamerConfig.model_validate_json(config_json),
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
    root = load_config(config_file, root=root).root
    run_id, config_json, fingerprint, versions = resolve_run(root, config_file, overrides or {},
                                                             dataset, resume)
    started = register(root, run_id, config_json, fingerprint, versions)
    report = train(root, run_id, config_json, fingerprint, versions, started, fault)
    complete(root, config_json, report, started)
    publish(root, report)
    emit_training_completed(root, run_id, fingerprint, report["pipeline_uri"])
    return report


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"steps": 5}} -> {"train.steps": 5}; `model` settings stay one dict."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "model":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _export(store: ShardStore, run_id: str, checkpoint_dir: str) -> str:
    """The run's TamerPipeline at <root>/runs/<run_id>/pipeline (uploaded for remote roots)."""
    target = store.location.join("runs", run_id, PIPELINE)
    if store.location.is_local:
        return export_pipeline(checkpoint_dir, target)
    with tempfile.TemporaryDirectory() as local:
        export_pipeline(checkpoint_dir, local)
        store.fs.put(f"{local}/", target, recursive=True)
    return store.location.url(target)

