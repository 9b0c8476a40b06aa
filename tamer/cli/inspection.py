"""Inspection commands: stats, sql, runs (and runs show). They read the DuckDB catalog and the
run registry and import no model code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tamer.cli.common import JsonFlag, cell, console, fail, print_json, state


def stats(
    as_json: JsonFlag = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG figure.")] = None,
) -> None:
    """Dataset statistics from the DuckDB catalog."""
    from storage.catalog import connect
    from storage.shards import ShardStore
    from tamer import stats as dataset_stats
    from tamer.stats_view import plot as plot_stats, render

    store = ShardStore(state.config().root)
    with connect(store) as con:
        result = dataset_stats.collect(store, con)
    if as_json:
        print_json(result)
    else:
        render(result, console)
    if plot:
        console.print(f"plot written to {plot_stats(result, plot)}") if not as_json else \
            plot_stats(result, plot)


def sql(
    query: Annotated[str, typer.Argument(help="SQL over the catalog views (images, ...).")],
    as_json: JsonFlag = False,
    limit: Annotated[int, typer.Option(help="Rows to show in the table view.")] = 50,
    as_of: Annotated[Optional[str], typer.Option(
        "--as-of", help="A training run id: query the tables at the versions it read.")] = None,
) -> None:
    """Run an ad-hoc read-only DuckDB query against the catalog (statements that write exit 2)."""
    import duckdb

    from storage.catalog import WriteRefused, read_only_query
    from storage.shards import ShardStore

    store = ShardStore(state.config().root)
    versions = _known_run(store, as_of)["table_versions"] if as_of else None
    if as_of and not versions:
        fail(f"run {as_of} recorded no table versions (trained by an older tamer)", 2)
    try:
        names, values = read_only_query(store, query, versions)
    except WriteRefused as exc:
        fail(str(exc), 2)
    except duckdb.Error as exc:
        fail(f"query failed: {str(exc).strip().splitlines()[0]}", 1)  # one line: the file or cause
    rows = [dict(zip(names, row)) for row in values]
    if as_json:
        print_json(rows)
        return
    table = Table(*names)
    for row in rows[:limit]:
        table.add_row(*(cell(value) for value in row.values()))
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more rows (--limit or --json)"
    console.print(table)


runs_app = typer.Typer(help="The run registry.")


def runs(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The run registry: one line per training run (its newest row); `runs show RUN` for one."""
    from storage.shards import ShardStore
    from tasks.runs import list_runs

    if ctx.invoked_subcommand:
        return
    rows = list_runs(ShardStore(state.config().root))
    for row in rows:
        row.pop("config")
    if as_json:
        print_json(rows)
        return
    table = Table("run", "status", "step", "dataset", "started", "minutes", "loss",
                  caption="pipelines under <root>/runs/<run>/pipeline; all fields: --json")
    for row in rows:
        minutes = ((row["ended_at"] - row["started_at"]).total_seconds() / 60
                   if row["ended_at"] else None)
        loss = json.loads(row["final_metrics"] or "{}").get("loss")
        table.add_row(row["run_id"], row["status"], cell(row["step"]),
                      row["dataset_fingerprint"], f"{row['started_at']:%Y-%m-%d %H:%M}",
                      f"{minutes:.1f}" if minutes is not None else "",
                      f"{loss:.4f}" if isinstance(loss, float) else "")
    console.print(table)


def show_run(
    run_id: Annotated[str, typer.Argument(help="A run id from `tamer runs`.")],
    as_json: JsonFlag = False,
) -> None:
    """One run: its registry fields and the version of every table it read."""
    from storage.shards import ShardStore

    row = _known_run(ShardStore(state.config().root), run_id)
    row.pop("config")
    if as_json:
        print_json(row)
        return
    fields = Table("field", "value", show_header=False)
    for key, value in row.items():
        if key != "table_versions":
            fields.add_row(key, cell(value))
    console.print(fields)
    versions = Table("table", "version", caption="tamer sql --as-of RUN reads these versions")
    for table, version in sorted(row["table_versions"].items()):
        versions.add_row(table, "no commit yet" if version < 0 else str(version))
    if not row["table_versions"]:
        versions.caption = "no versions recorded (trained by an older tamer)"
    console.print(versions)


def _known_run(store, run_id: str) -> dict:
    """The run's registry row; exit 2 naming it when there is no such run."""
    from tasks.runs import get_run

    row = get_run(store, run_id)
    if row is None:
        fail(f"no training run {run_id} (tamer runs lists them)", 2)
    return row
