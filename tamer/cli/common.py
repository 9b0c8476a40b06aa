"""What every command shares: the resolved global options, the consoles, failing and JSON output.

Exit codes: 0 success, 1 the work failed, 2 bad usage or invalid configuration.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

from tamer.config import ConfigError, TamerConfig, load_config

console = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class State:
    """The global options of this invocation; commands read the configuration through it."""

    root: Optional[str] = None
    config_file: Optional[Path] = None

    def config(self, **overrides: Any) -> TamerConfig:
        try:
            return load_config(self.config_file, root=self.root, **overrides)
        except ConfigError as exc:
            fail(str(exc), 2)

    def config_path(self) -> Optional[str]:
        """The --config file as flows take it (a string, or None for the defaults)."""
        return str(self.config_file) if self.config_file else None


state = State()


def fail(message: str, code: int) -> NoReturn:
    """Say what went wrong on stderr (red) and exit: 1 the work failed, 2 bad usage."""
    err.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<blob {len(value)} bytes>"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def cell(value: Any) -> str:
    """One table cell: blobs summarized, long text cut to 80 characters."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<blob {len(value)} bytes>"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def print_ingest(report: dict) -> None:
    """The ingest report as `tamer ingest` and `tamer run` show it."""
    console.print(
        f"ingested [bold]{report['ingested']}[/bold] new images "
        f"({report['unchanged']} unchanged, {report['duplicates']} duplicates skipped, "
        f"{report['quarantined']} quarantined) in {report['shards']} shard(s); "
        f"dataset version {report['fingerprint']}")
    print_reasons(report["reasons"])


def print_reasons(reasons: dict[str, int]) -> None:
    for reason, count in sorted(reasons.items()):
        console.print(f"  quarantine: {reason} x{count}")
