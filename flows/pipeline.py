"""The main job, `pipeline`: every stage is its own flow, run in order, each incremental.

1. sample data (synth) when no source is given   2. ingest   3. caption
4. embed / index / near-duplicates / pairs       5. train (skipped when a completed run
already trained on this dataset version)         6. evaluate + report (skipped when that
run already has an evaluation)
Training policy on new data: a new run from the base weights on the new version (stated in
the summary); the previous runs stay in the registry.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow, task

from flows.caption import caption_flow
from flows.embed import embed_flow
from flows.evaluate import evaluate_flow
from flows.ingest import ingest_flow
from flows.train import train_flow
from storage.catalog import CATALOG_FILE
from storage.fs import open_location
from storage.shards import ShardStore
from tamer.config import config_hash, load_config
from tasks import evaluate as protocol
from tasks.runs import COMPLETED, list_runs


@task
def synthesize_sample(root: str, config_file: str | None) -> str:
    """Render the embedded sample dataset (no-op when already there); returns its folder.

    A local root keeps it next to the shards (`<root>/sources/synth`). A remote root cannot
    hold a folder ingest reads, so the sample goes to the local synth cache,
    `$TAMER_SYNTH_CACHE` (default `~/.cache/tamer/synth`), one folder per synth settings:
    never into the working folder.
    """
    from tamer.synth import generate

    config = load_config(config_file, root=root)
    location = open_location(config.root)
    if location.is_local:
        out = Path(location.join("sources", "synth"))
    else:
        cache = Path(os.environ.get("TAMER_SYNTH_CACHE", "~/.cache/tamer/synth")).expanduser()
        out = cache / config_hash(config.synth)
    s = config.synth
    generate(out, n_objects=s.objects, views=s.views, size=s.size, seed=s.seed,
             held_out_fraction=s.held_out_fraction, workers=1, progress=True)
    return str(out)


@task
def trained_run(root: str) -> dict | None:
    """The completed run that trained on the current dataset version, if there is one."""
    store = ShardStore(root)
    fingerprint = store.fingerprint()
    return next((run for run in list_runs(store) if run["status"] == COMPLETED
                 and run["dataset_fingerprint"] == fingerprint and run["pipeline_uri"]), None)


@task
def evaluated_report(root: str, run_id: str) -> str | None:
    """The report of an evaluation already made of this training run, if there is one."""
    store = ShardStore(root)
    rows = store.read("eval_results", ["eval_run_id", "model_run_id", "created_at"]).to_pylist()
    done = sorted((r for r in rows if r["model_run_id"] == run_id), key=lambda r: r["created_at"])
    return f"{protocol.report_dir(store, done[-1]['eval_run_id'])}/index.html" if done else None


@flow(name="pipeline", log_prints=True)
def pipeline_flow(data: str | None = None, root: str | None = None,
                  config_file: str | None = None, profile: str | None = None) -> dict:
    config = load_config(config_file, root=root, profile=profile)
    root, profile = config.root, config.profile
    clock = _StageClock()
    source = data or synthesize_sample(root, config_file)
    summary: dict = {"ingest": clock("ingest", ingest_flow, source, root=root,
                                     config_file=config_file)}
    summary["caption"] = clock("caption", caption_flow, root, config_file, profile)
    summary["embed"] = clock("embed", embed_flow, root, config_file, profile)

    run = trained_run(root)
    if run is None:
        report = clock("train", train_flow, root, config_file)
        summary["train"] = {"policy": "trained a new run on this dataset version", **report}
        run_id, pipeline_uri = report["run_id"], report["pipeline_uri"]
    else:
        summary["train"] = {"policy": "skipped: already trained on this dataset version",
                            "run_id": run["run_id"], "pipeline_uri": run["pipeline_uri"]}
        run_id, pipeline_uri = run["run_id"], run["pipeline_uri"]

    report_path = evaluated_report(root, run_id)
    if report_path is None:
        evaluation = clock("evaluate", evaluate_flow, root, config_file, profile, run_id=run_id)
        summary["evaluate"] = {"policy": "evaluated the run", **evaluation}
        report_path = evaluation["report"]
    else:
        summary["evaluate"] = {"policy": "skipped: this run is already evaluated"}

    location = open_location(root)
    summary["seconds"] = clock.seconds
    summary["locations"] = {
        "dataset root": str(Path(root).resolve()) if location.is_local else root,
        "catalog": location.join(CATALOG_FILE) if location.is_local else "(in memory)",
        "checkpoint": pipeline_uri,
        "report": report_path,
    }
    return summary


class _StageClock:
    """Runs a stage and keeps its wall time, so every run reports where its time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, function, *args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[stage] = round(time.perf_counter() - start, 2)
