"""Inspection commands: stats, sql, runs. They read the DuckDB catalog and import no model code."""

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
) -> None:
    """Run an ad-hoc read-only DuckDB query against the catalog (statements that write exit 2)."""
    import duckdb

    from storage.catalog import WriteRefused, read_only_query
    from storage.shards import ShardStore

    try:
        names, values = read_only_query(ShardStore(state.config().root), query)
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


def runs(as_json: JsonFlag = False) -> None:
    """The run registry: one line per training run (its newest row)."""
    from storage.shards import ShardStore
    from tasks.runs import list_runs

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
