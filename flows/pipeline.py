"""The main job, `pipeline`: the stages in order, each incremental.

1. sample data (synth) when no source is given   2. ingest   3. caption
4. embed / index / near-duplicates / pairs       5. train (skipped when a completed run
already trained on this dataset version)         6. evaluate + report (skipped when that
run already has an evaluation)
The data stages (2-4) run their tasks in the pipeline's own flow run: as subflows each paid
about 0.3 s of Prefect (a flow run and its tracking task run through the API), which was a
third of a small scheduled update's data time (`benchmarks/incremental_cost.py`). Training and
evaluation, minutes long, stay flows of their own (subflows here) with their own run pages.
Training policy on new data: a new run from the base weights on the new version (stated in
the summary); the previous runs stay in the registry.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.caption import caption_stage
from flows.embed import embed_stage
from flows.evaluate import evaluate_flow
from flows.ingest import ingest_stage
from flows.stages import run_stage
from flows.train import train_flow
from model.profiles import shared_roles
from storage.catalog import CATALOG_FILE
from storage.fs import open_location
from storage.shards import ShardStore
from tamer.config import SynthSettings, load_config
from tasks import pipeline_state


@task
def synthesize_sample(root: str, settings: SynthSettings) -> str:
    """Render the embedded sample dataset (no-op when already there); returns its folder."""
    return pipeline_state.synthesize_sample(root, settings)


@task
def trained_run(root: str) -> dict | None:
    """The completed run that trained on the current dataset version, if there is one."""
    return pipeline_state.trained_run(ShardStore(root))


@task
def evaluated_report(root: str, run_id: str) -> str | None:
    """The report of an evaluation already made of this training run, if there is one."""
    return pipeline_state.evaluated_report(ShardStore(root), run_id)


@flow(name="pipeline", log_prints=True)
def pipeline_flow(data: str | None = None, root: str | None = None,
                  config_file: str | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """`overrides` are dotted keys ({"profile": "tiny"}), passed on to every stage."""
    config = load_config(config_file, root=root, **(overrides or {}))
    root, stage = config.root, {"root": config.root, "config_file": config_file, "overrides": overrides}
    clock = _StageClock()
    source = data or synthesize_sample(root, config.synth)
    with shared_roles():  # small updates run in this process: caption's CLIP is embed's
        summary: dict = {"ingest": clock("ingest", ingest_stage, source, config)}
        summary["caption"] = clock("caption", caption_stage, config)
        summary["embed"] = clock("embed", embed_stage, config)

    run = trained_run(root)
    if run is None:
        report = clock("train", run_stage, train_flow, **stage)
        summary["train"] = {"policy": "trained a new run on this dataset version", **report}
        run_id, pipeline_uri = report["run_id"], report["pipeline_uri"]
    else:
        summary["train"] = {"policy": "skipped: already trained on this dataset version",
                            "run_id": run["run_id"], "pipeline_uri": run["pipeline_uri"]}
        run_id, pipeline_uri = run["run_id"], run["pipeline_uri"]

    report_path = evaluated_report(root, run_id)
    if report_path is None:
        evaluation = clock("evaluate", run_stage, evaluate_flow, run_id=run_id, **stage)
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
