"""Show `tamer stats` results: rich tables in the terminal, a matplotlib figure on request."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from tamer.stats import SECTIONS

MAX_TABLE_ROWS = 15


def render(stats: dict, console: Console) -> None:
    console.print(_overview_table(stats["overview"]))
    for section in SECTIONS:
        rows = stats.get(section.key) or []
        if rows:
            console.print(_rows_table(section.title, rows))


def _overview_table(overview: dict) -> Table:
    table = Table(title=f"Dataset {overview['root']}  (version {overview['fingerprint']})")
    for column in ("table", "rows", "shards", "size"):
        table.add_column(column, justify="right" if column != "table" else "left")
    for name, info in overview["tables"].items():
        table.add_row(name, f"{info['rows']:,}", str(info["shards"]), _human(info["bytes"]))
    table.caption = (f"{overview['images']:,} images, {overview['subjects']:,} subjects, "
                     f"{overview['classes']:,} classes")
    return table


def _rows_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title)
    for name in rows[0]:
        table.add_column(name, justify="right" if isinstance(rows[0][name], int) else "left")
    for row in rows[:MAX_TABLE_ROWS]:
        table.add_row(*("" if value is None else f"{value:,}" if isinstance(value, int)
                        else str(value) for value in row.values()))
    if len(rows) > MAX_TABLE_ROWS:
        table.caption = f"... {len(rows) - MAX_TABLE_ROWS} more rows (use --json for all)"
    return table


def _human(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def plot(stats: dict, path: Path) -> Path:
    """One panel per charted section (bar of the top values), written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charted = [s for s in SECTIONS if s.chart and stats.get(s.key)]
    columns = 2
    rows = max(1, -(-len(charted) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(12, 3.6 * rows), squeeze=False)
    for axis, section in zip(axes.flat, charted):
        data = stats[section.key][:MAX_TABLE_ROWS]
        keys = list(data[0])
        value_key = section.chart
        labels = [" / ".join(str(row[k]) for k in keys if k != value_key and
                             not isinstance(row[k], int)) for row in data]
        axis.barh(labels[::-1], [row[value_key] for row in data][::-1], color="#4c72b0")
        axis.set_title(section.title)
        axis.set_xlabel(value_key)
        axis.tick_params(axis="y", labelsize=8)
    for axis in list(axes.flat)[len(charted):]:
        axis.set_visible(False)
    figure.suptitle(f"tamer dataset {stats['overview']['fingerprint']}: "
                    f"{stats['overview']['images']:,} images")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
