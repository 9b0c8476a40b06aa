"""Evaluation command: ours vs the per-subject baselines on the DreamBench protocol. Its method
choices and each recipe's `--<alias>-steps` flag come from the methods' registered settings."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tamer.cli.common import JsonFlag, ProfileOption, console, fail, print_json, state
from tamer.config import methods_help
from tamer.model_config import METHOD_SETTINGS

# flag parameter -> method, for every method whose settings have `steps` (e.g. ti_steps -> textual_inversion)
STEPS_FLAGS = {f"{m.alias or name}_steps": name for name, m in METHOD_SETTINGS.items() if "steps" in m.model_fields}


def _with_steps_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` takes one `--<alias>-steps` option per entry of STEPS_FLAGS in its **kwargs."""
    signature = inspect.signature(command, eval_str=True)
    extra = [inspect.Parameter(flag, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[int], typer.Option(f"--{flag.replace('_', '-')}", help=f"Steps of {name} (eval.{name}.steps).")])
        for flag, name in STEPS_FLAGS.items()]
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=[*fixed, *extra])  # type: ignore[attr-defined]
    command.__annotations__ = {**command.__annotations__, **{p.name: p.annotation for p in extra}}
    return command


@_with_steps_flags
def evaluate(
    data: Annotated[Optional[str], typer.Option(
        help="DreamBench-layout or synth folder; default: the dataset's held-out subjects.")] = None,
    pipeline: Annotated[Optional[str], typer.Option(
        help="TamerPipeline directory; default: the latest completed training run's.")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Training run to evaluate.")] = None,
    methods: Annotated[Optional[str], typer.Option(help=f"Comma-separated: {methods_help()}.")] = None,
    subjects: Annotated[Optional[int], typer.Option(help="First N subjects.")] = None,
    prompts: Annotated[Optional[int], typer.Option(help="First N prompts per subject.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Images (seeds) per prompt.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps.")] = None,
    profile: ProfileOption = None,
    as_json: JsonFlag = False,
    **recipe_steps: Optional[int],
) -> None:
    """Evaluate against the per-subject baselines (DreamBench protocol) + report."""
    config, overrides = state.resolve(profile=profile, **{
        "eval.data": data, "eval.pipeline": pipeline, "eval.methods": methods,
        "eval.subjects": subjects, "eval.prompts": prompts, "eval.seeds": seeds, "eval.steps": steps,
        **{f"eval.{STEPS_FLAGS[flag]}.steps": value for flag, value in recipe_steps.items()}})
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
