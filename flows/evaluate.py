"""The `evaluate` flow: 1. pick the TamerPipeline to evaluate (a training run's, else a given
directory), 2. run the protocol against the baselines and commit `eval_results`, 3. write the
HTML report, 4. refresh the catalog.

Triggered by `tamer.training.completed` (prefect.yaml) with the run's id; `tamer eval` runs it
on demand. `overrides` are dotted keys, as every flow takes them (e.g. {"eval.subjects": 2}).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.ingest import refresh_catalog
from storage.shards import ShardStore
from tamer.config import TamerConfig, load_config
from tamer.progress import stage_progress
from tasks import eval_report, evaluate as protocol
from tasks.runs import get_run


@task
def resolve_model(root: str, run_id: str | None, pipeline: str | None) -> dict:
    """The run (or directory) whose TamerPipeline is evaluated; JSON-safe for Prefect."""
    model = protocol.resolve_model(ShardStore(root), run_id, pipeline)
    return {"run_id": model["run_id"], "pipeline_uri": model["pipeline_uri"]}


@task
def run_protocol(config: TamerConfig, model: dict, eval_run_id: str) -> dict:
    """Every method x subject x prompt x seed, scored and committed (long: shows progress)."""
    run = get_run(ShardStore(config.root), model["run_id"]) if model["run_id"] else None
    with stage_progress(f"evaluate {eval_run_id}") as update:
        return protocol.run_evaluation(config, {**model, "run": run}, eval_run_id, progress=update)


@task
def write_report(config: TamerConfig, eval_run_id: str) -> str:
    """Tables, plots and image grids of the run as HTML; returns the index.html path."""
    return eval_report.write_report(ShardStore(config.root), eval_run_id, config.eval)


@flow(name="evaluate", log_prints=True)
def evaluate_flow(root: str | None = None, config_file: str | None = None, run_id: str | None = None,
                  overrides: dict[str, Any] | None = None) -> dict:
    config = load_config(config_file, root=root, **(overrides or {}))  # fails here on a bad setting
    model = resolve_model(config.root, run_id, config.eval.pipeline)
    eval_run_id = protocol.new_eval_run_id()
    summary = run_protocol(config, model, eval_run_id)
    summary["report"] = write_report(config, eval_run_id)
    refresh_catalog(config.root)
    print(f"evaluation {eval_run_id}: {summary['rows']} images; report {summary['report']}")
    return summary
