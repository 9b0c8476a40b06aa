"""The `tamer` command (typer), one module per command group; this module only assembles it.

Exit codes: 0 success, 1 the work failed, 2 bad usage or invalid configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tamer.cli import data, evaluation, inspection, models, pipeline, train
from tamer.cli.common import state

app = typer.Typer(help="tamer: zero fine-tuning image customization, with its data pipeline.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def main(
    root: Annotated[Optional[str], typer.Option(
        "--root", envvar="TAMER_ROOT",
        help="Dataset root URI (local path, s3://..., memory://...). Default ./tamer-data.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML file overriding configs/default.yaml.")] = None,
) -> None:
    """Global options shared by every command."""
    state.root, state.config_file = root, config


for command in (data.synth, data.ingest, data.caption, inspection.stats,
                inspection.sql, data.embed, data.index, data.serve_index, data.search,
                pipeline.run, pipeline.serve, train.train, inspection.runs, models.generate):
    app.command()(command)
app.command("eval")(evaluation.evaluate)
models.models_app.command("check")(models.check)
app.add_typer(models.models_app, name="models")
