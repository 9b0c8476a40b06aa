"""Table commands: migrate, verify, maintain. They touch only the Delta tables of the root
and import no model code."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from tamer.cli.common import JsonFlag, console, fail, print_json, state


def migrate(as_json: JsonFlag = False) -> None:
    """Convert tables of the older _manifest.json store into Delta tables (safe to re-run)."""
    from storage.delta_migrate import migrate as convert
    from storage.shards import ShardStore

    migrated = convert(ShardStore(state.config().root))
    if as_json:
        print_json(migrated)
        return
    for table, rows in migrated.items():
        console.print(f"migrated {table}: {rows} rows")
    console.print(f"{len(migrated)} table(s) migrated" if migrated else "nothing to migrate")


def verify(as_json: JsonFlag = False) -> None:
    """Check every committed file against the table logs (existence, size, row count)."""
    from storage.delta_maintain import verify as check
    from storage.shards import ShardStore

    problems = check(ShardStore(state.config().root))
    if as_json:
        print_json([asdict(problem) for problem in problems])
    elif problems:
        table = Table("table", "file", "problem", "detail")
        for problem in problems:
            table.add_row(problem.table, problem.path, problem.problem, problem.detail)
        console.print(table)
    else:
        console.print("every committed file matches its table's log")
    if problems:
        raise typer.Exit(1)


def maintain(
    retention_hours: Annotated[int, typer.Option(
        help="Keep what versions younger than this need (time travel); vacuum the rest.")] = 168,
    as_json: JsonFlag = False,
) -> None:
    """Compact small files and vacuum files no version within the retention needs."""
    from storage.delta_maintain import maintain as run_maintenance
    from storage.shards import ShardStore

    if retention_hours < 0:
        fail("--retention-hours must be >= 0", 2)
    report = run_maintenance(ShardStore(state.config().root), retention_hours)
    if as_json:
        print_json(report)
        return
    for table, counts in report.items():
        console.print(f"{table}: compacted {counts['files_removed_by_compaction']} files into "
                      f"{counts['files_added_by_compaction']}, vacuumed {counts['files_vacuumed']}")
