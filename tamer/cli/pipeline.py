"""Whole-pipeline commands: run (the main job) and serve (the scheduled deployments)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tamer.cli.common import JsonFlag, ProfileOption, console, err, fail, print_ingest, print_json, state
from tamer.cli.inspection import stats


def run(
    data: Annotated[Optional[str], typer.Option(
        help="Source to ingest; default: a synthesized sample dataset.")] = None,
    profile: ProfileOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The main job: ingest, caption, embed/index/pairs, train, evaluate, report.

    On the embedded default (no arguments) it runs on a synthesized sample dataset with the
    synth profile (models trained here, shipped in assets/); a second run with no new data
    redoes no stage's work.
    """
    config, overrides = state.resolve(profile=profile)
    if data is not None and not Path(data).exists():
        fail(f"source {data} does not exist", 2)
    from flows.pipeline import pipeline_flow

    summary = pipeline_flow(data=data, root=config.root, config_file=state.config_path(),
                            overrides=overrides)
    if as_json:
        print_json(summary)
        return
    print_ingest(summary["ingest"])
    stats(as_json=False, plot=None)
    console.print(f"train: {summary['train']['policy']} (run {summary['train']['run_id']})")
    console.print(f"evaluate: {summary['evaluate']['policy']}")
    timing = ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in summary["seconds"].items())
    console.print(f"stage times: {timing}")
    for name, where in summary["locations"].items():
        console.print(f"{name}: [bold]{where}[/bold]")
    console.print('next: tamer stats, tamer sql "SELECT ...", tamer runs, tamer generate --help')


def serve(
    only: Annotated[Optional[list[str]], typer.Option(
        "--only", help="Serve only these deployments (repeatable).")] = None,
    source: Annotated[Optional[str], typer.Option(
        help="Folder the scheduled ingest reads (default ./incoming).")] = None,
) -> None:
    """Serve the prefect.yaml deployments (schedules and event triggers) from one process.

    Uses PREFECT_API_URL when set, else the shared local server; schedules need a real
    server, not an ephemeral one (README "Run it on a schedule").
    """
    config = state.config()
    from prefect import serve as prefect_serve

    from flows.deployments import build_all

    parameters = {"root": config.root, "config_file": state.config_path(), "source": source}
    try:
        deployments = build_all(only, {k: v for k, v in parameters.items() if v is not None})
    except ValueError as exc:
        fail(str(exc), 2)
    err.print(f"serving {', '.join(d.name for d in deployments)} (Ctrl-C to stop)")
    prefect_serve(*deployments)


def stop_server(as_json: JsonFlag = False) -> None:
    """Stop the local Prefect server that commands share (not a PREFECT_API_URL one).

    The next command that runs a flow starts a fresh one.
    """
    from prefect.settings import get_current_settings

    from flows.server import stop_shared_server

    stopped = stop_shared_server(Path(get_current_settings().home))
    if as_json:
        print_json({"stopped": stopped})
        return
    console.print("stopped the shared local Prefect server" if stopped else "no shared local Prefect server runs")
