"""The `tamer` command (typer), one module per command group; this module only assembles it.

Exit codes: 0 success, 1 the work failed, 2 bad usage or invalid configuration. Errors are one
line (the traceback goes to the root's log file; --verbose shows it). Commands resolve and check
their configuration before importing flows or models (seconds), so bad input fails at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tamer.cli import data, evaluation, inspection, models, pipeline, tables, train, webapp
from tamer.cli.common import VerboseOption, state, with_global_options

app = typer.Typer(help="tamer: zero fine-tuning image customization, with its data pipeline.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def main(
    root: Annotated[Optional[str], typer.Option(
        "--root", envvar="TAMER_ROOT",
        help="Dataset root URI (local path, s3://..., gs://...). Default ./tamer-data.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML file overriding configs/default.yaml.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Global options shared by every command; each command also takes them after its name."""
    state.root, state.config_file, state.verbose = root, config, verbose


RUNS_FLOWS = {data.ingest, data.caption, data.embed, pipeline.run, pipeline.serve, train.train}
for command in (data.synth, data.ingest, data.caption, inspection.stats,
                inspection.sql, data.embed, data.index, data.serve_index, data.search,
                pipeline.run, pipeline.serve, train.train, models.generate,
                tables.migrate, tables.verify, tables.maintain):
    app.command()(with_global_options(command, runs_flows=command in RUNS_FLOWS))
app.command("eval")(with_global_options(evaluation.evaluate, runs_flows=True))
app.command("stop-server")(with_global_options(pipeline.stop_server))
app.command("app")(with_global_options(webapp.app))
models.models_app.command("check")(with_global_options(models.check))
models.models_app.command("train-profile")(with_global_options(models.train_profile, runs_flows=True))
app.add_typer(models.models_app, name="models")
inspection.runs_app.callback(invoke_without_command=True)(with_global_options(inspection.runs))
inspection.runs_app.command("show")(with_global_options(inspection.show_run))
app.add_typer(inspection.runs_app, name="runs")
