"""One training run around the trainer: which run and dataset version it is, the run's
configuration (a resumed run's recorded one, with this call's overrides on top), training
with failures registered, and the exported pipeline. The train flow only calls these."""

from __future__ import annotations

import datetime as dt
import tempfile
from typing import Any

from storage.pinned import PinnedStore
from storage.shards import ShardStore
from tamer.config import TamerConfig, load_config
from tasks import runs
from tasks.train import PIPELINE, FaultInjection, export_pipeline, run_training
from tasks.train_data import build_datasets, build_plan


def resolve_run(store: ShardStore, config: TamerConfig, overrides: dict[str, Any],
                dataset: str | None, resume: str | None) -> tuple[str, TamerConfig, str, dict[str, int]]:
    """(run id, its config, dataset fingerprint, pinned table versions); refuses a dataset
    version it cannot read. A resumed (or interrupted) run keeps its recorded config, with
    `overrides` (dotted keys) on top."""
    current = store.fingerprint()
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
        config = recorded_config(previous["config"], {**overrides, "root": config.root})
        dataset = dataset or previous["dataset_fingerprint"]
    versions = versions or runs.pin_versions(store)
    fingerprint = PinnedStore(store, versions).fingerprint()
    if dataset and dataset != fingerprint:
        why = f"run {resume} trained on it" if previous else "it was requested"
        raise ValueError(f"dataset version {dataset} is not the current one ({fingerprint}) but "
                         f"{why}: a run reads the versions it pinned, a new run the current ones. "
                         "Start a new run on the current version instead.")
    return run_id, config, fingerprint, versions


def recorded_config(config_json: str, overrides: dict[str, Any]) -> TamerConfig:
    """A run's recorded config with `overrides` (dotted keys) on top, validated again."""
    recorded = TamerConfig.model_validate_json(config_json).model_dump()
    return load_config(None, **{**_flatten(recorded), **overrides})


def train_run(store: ShardStore, run_id: str, config: TamerConfig, fingerprint: str,
              versions: dict[str, int], started: dt.datetime, fault: FaultInjection | None) -> dict:
    """Build the datasets from the pinned versions, train, export the pipeline; a failure is
    registered, then raised."""
    from tasks.ray_runtime import ensure_ray

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
        pipeline = export_run_pipeline(store, run_id, directory)
    return {"run_id": run_id, "step": result.step, "start_step": result.start_step,
            "metrics": result.metrics, "checkpoint_uri": result.checkpoint.path,
            "pipeline_uri": pipeline, "caption_source": plan.caption_source,
            "pair_source": plan.pair_source, "dataset_fingerprint": fingerprint}


def export_run_pipeline(store: ShardStore, run_id: str, checkpoint_dir: str) -> str:
    """The run's TamerPipeline at <root>/runs/<run_id>/pipeline (uploaded for remote roots)."""
    target = store.location.join("runs", run_id, PIPELINE)
    if store.location.is_local:
        return export_pipeline(checkpoint_dir, target)
    with tempfile.TemporaryDirectory() as local:
        export_pipeline(checkpoint_dir, local)
        store.fs.put(f"{local}/", target, recursive=True)
    return store.location.url(target)


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"steps": 5}} -> {"train.steps": 5}; `model` settings stay one dict."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "model":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
