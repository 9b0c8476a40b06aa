"""What every command shares: the resolved global options, the consoles, failing and JSON output.

Exit codes: 0 success, 1 the work failed, 2 bad usage or invalid configuration.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

from tamer import logs
from tamer.config import DEFAULT_ROOT, ConfigError, TamerConfig, load_config

console = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProfileOption = Annotated[Optional[str], typer.Option(
    help="Model profile: synth (default), tiny, tiny-sdxl, sd15, sdxl, or a profile YAML path.")]

GLOBAL = "Global options (before or after the command; the last one given wins)"
RootOption = Annotated[Optional[str], typer.Option(
    "--root", help="Dataset root URI (local path, s3://..., gs://...). Default ./tamer-data.",
    rich_help_panel=GLOBAL)]
ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", help="YAML file overriding configs/default.yaml.", rich_help_panel=GLOBAL)]
VerboseOption = Annotated[bool, typer.Option(
    "--verbose", "-v", help="Third-party warnings on the console; tracebacks on errors.",
    rich_help_panel=GLOBAL)]


class State:
    """The global options of this invocation; commands read the configuration through it."""

    root: Optional[str] = None
    config_file: Optional[Path] = None
    verbose: bool = False

    def update(self, root: Optional[str], config_file: Optional[Path], verbose: bool) -> None:
        """Options given after the command override the ones given before it."""
        self.root = root if root is not None else self.root
        self.config_file = config_file if config_file is not None else self.config_file
        self.verbose = self.verbose or verbose

    def log_file(self) -> Path:
        """The log of this root (the --root given, else the environment's or the default)."""
        import os

        return logs.log_path(self.root or os.environ.get("TAMER_ROOT") or DEFAULT_ROOT)

    def config(self, **overrides: Any) -> TamerConfig:
        try:
            return load_config(self.config_file, root=self.root, **overrides)
        except ConfigError as exc:
            fail(str(exc), 2)

    def resolve(self, **flags: Any) -> tuple[TamerConfig, dict[str, Any]]:
        """The configuration these flags make, checked now (a bad value exits 2 before any
        work), and the flags given (not None) as the dotted overrides every flow takes."""
        overrides = {key: value for key, value in flags.items() if value is not None}
        return self.config(**overrides), overrides

    def config_path(self) -> Optional[str]:
        """The --config file as flows take it (a string, or None for the defaults)."""
        return str(self.config_file) if self.config_file else None


state = State()


def fail(message: str, code: int) -> NoReturn:
    """Say what went wrong on stderr (red) and exit: 1 the work failed, 2 bad usage."""
    err.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def with_global_options(command: Callable[..., Any], runs_flows: bool = False) -> Callable[..., Any]:
    """`command` also takes --root/--config/--verbose, runs with third-party chatter routed to
    the log file, and turns an unexpected exception into one line and exit code 1. A command
    that `runs_flows` first finds (or starts) the one local Prefect server that side-by-side
    commands share, unless PREFECT_API_URL names one."""
    signature = inspect.signature(command, eval_str=True)
    added = {"global_root": RootOption, "global_config": ConfigOption,
             "global_verbose": VerboseOption}
    defaults = {"global_root": None, "global_config": None, "global_verbose": False}

    @functools.wraps(command)
    def run(*args: Any, global_root: Optional[str] = None, global_config: Optional[Path] = None,
            global_verbose: bool = False, **kwargs: Any) -> Any:
        state.update(global_root, global_config, global_verbose)
        log_file = state.log_file()
        with logs.quiet_libraries(log_file, verbose=state.verbose):
            try:
                if runs_flows:
                    from flows.server import ensure_prefect_api

                    ensure_prefect_api()
                return command(*args, **kwargs)
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise  # typer's own exits and usage errors already say what is wrong
            except ConfigError as exc:  # raised where a flow resolves its own configuration
                fail(str(exc), 2)
            except Exception as exc:  # noqa: BLE001 - the user gets one line; the log the rest
                if state.verbose:
                    raise
                logs.log_exception(log_file, f"{command.__name__} failed")
                fail(f"{command.__name__} failed: {type(exc).__name__}: {_first_line(exc)} "
                     f"(traceback in {log_file}; --verbose shows it)", 1)

    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name],
                               annotation=annotation) for name, annotation in added.items()]
    run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    run.__annotations__ = {**command.__annotations__, **added}
    return run


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


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


def ran_where(executor: str) -> str:
    """Where a stage's work ran, from its report's `executor` ("" when nothing ran)."""
    return {"ray": " on Ray", "local": " in this process"}.get(executor, "")


def print_ingest(report: dict) -> None:
    """The ingest report as `tamer ingest` and `tamer run` show it."""
    where = ran_where(report.get("executor", ""))
    decoded = f", decoded{where}" if where else ""
    console.print(
        f"ingested [bold]{report['ingested']}[/bold] new images "
        f"({report['unchanged']} unchanged, {report['duplicates']} duplicates skipped, "
        f"{report['quarantined']} quarantined) in {report['shards']} shard(s){decoded}; "
        f"dataset version {report['fingerprint']}")
    print_reasons(report["reasons"])


def print_reasons(reasons: dict[str, int]) -> None:
    for reason, count in sorted(reasons.items()):
        console.print(f"  quarantine: {reason} x{count}")
