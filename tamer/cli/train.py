"""Training command: train on the current dataset version with Ray Train."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tamer.cli.common import JsonFlag, console, fail, print_json, state


def train(
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray Train workers (DDP ranks).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Rows per worker per micro-batch.")] = None,
    gpu: Annotated[Optional[bool], typer.Option("--gpu/--cpu", help="One GPU per worker.")] = None,
    dataset: Annotated[Optional[str], typer.Option(
        help="Dataset fingerprint to train on; default (and only readable): the current one.")] = None,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", help="Continue RUN_ID from its newest checkpoint, with its recorded config.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train on the current dataset version with Ray Train; checkpoints under <root>/runs."""
    config, overrides = state.resolve(**{"train.steps": steps, "train.num_workers": workers,
                                         "train.batch_size": batch_size, "train.use_gpu": gpu})
    from flows.train import train_flow

    try:
        report = train_flow(root=config.root, config_file=state.config_path(), dataset=dataset,
                            resume=resume, overrides=overrides)
    except ValueError as exc:
        fail(str(exc), 2)
    except Exception as exc:  # noqa: BLE001 - the run is registered as failed; say why and exit 1
        fail(f"training failed: {type(exc).__name__}: {exc}", 1)
    if as_json:
        print_json(report)
        return
    console.print(f"run [bold]{report['run_id']}[/bold]: step {report['step']} "
                  f"(started at {report['start_step']}), "
                  f"loss {report['metrics'].get('loss', float('nan')):.4f}")
    console.print(f"pipeline: [bold]{report['pipeline_uri']}[/bold]")
