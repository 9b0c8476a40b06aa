"""Evaluation command: ours vs Textual Inversion and DreamBooth-LoRA on the DreamBench protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tamer.cli.common import JsonFlag, console, fail, print_json, state


def evaluate(
    data: Annotated[Optional[str], typer.Option(
        help="DreamBench-layout or synth folder; default: the dataset's held-out subjects.")] = None,
    pipeline: Annotated[Optional[str], typer.Option(
        help="TamerPipeline directory; default: the latest completed training run's.")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Training run to evaluate.")] = None,
    methods: Annotated[Optional[str], typer.Option(
        help="Comma-separated: ours, ti (textual_inversion), lora (dreambooth_lora), real.")] = None,
    subjects: Annotated[Optional[int], typer.Option(help="First N subjects.")] = None,
    prompts: Annotated[Optional[int], typer.Option(help="First N prompts per subject.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Images (seeds) per prompt.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps.")] = None,
    ti_steps: Annotated[Optional[int], typer.Option(help="Textual Inversion steps.")] = None,
    lora_steps: Annotated[Optional[int], typer.Option(help="DreamBooth-LoRA steps.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Model profile (tiny, sd15, ...).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Evaluate against Textual Inversion and DreamBooth-LoRA (DreamBench protocol) + report."""
    config, overrides = state.resolve(profile=profile, **{
        "eval.data": data, "eval.pipeline": pipeline, "eval.methods": methods,
        "eval.subjects": subjects, "eval.prompts": prompts, "eval.seeds": seeds,
        "eval.steps": steps, "eval.textual_inversion.steps": ti_steps,
        "eval.dreambooth_lora.steps": lora_steps})
    if config.eval.data and not Path(config.eval.data).is_dir():
        fail(f"data folder {config.eval.data} does not exist", 2)
    from flows.evaluate import evaluate_flow

    try:
        summary = evaluate_flow(root=config.root, config_file=state.config_path(),
                                run_id=run_id, overrides=overrides)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc), 1)
    if as_json:
        print_json(summary)
        return
    console.print(f"evaluation [bold]{summary['eval_run_id']}[/bold]: {summary['rows']} images of "
                  f"{summary['subjects']} subjects by {', '.join(summary['methods'])}")
    console.print(f"report: [bold]{summary['report']}[/bold]")
