"""Keep the console for tamer's own lines: third-party chatter goes to a log file instead.

Python warnings (deprecations, FutureWarnings) and transformers' and diffusers' logging are
written to `<root>/logs/tamer.log` (a cache folder for remote roots); tqdm and Ray Data
progress bars are off, and Prefect's console shows warnings and errors only.
Ray workers started from this process inherit environment variables that hold those libraries
to errors and turn their Python warnings off. `verbose` leaves everything as the libraries set it.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

LOG_FILE = "tamer.log"
# Read by the libraries when they set themselves up, here and in Ray workers. PYTHONWARNINGS is
# read only at interpreter start, so it quiets child processes (Ray workers), not this one,
# whose warnings the log file takes.
QUIET_ENVIRONMENT = {
    "PYTHONWARNINGS": "ignore",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    # Prefect's per-task INFO lines stay on the API (the UI shows them), off the console, where
    # each stage prints its own line; its warnings and errors still show.
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
}
# The libraries' logging modules (same API: diffusers copied transformers').
LIBRARY_LOGGING = ("transformers.utils.logging", "diffusers.utils.logging")


def log_path(root: str) -> Path:
    """Where this dataset root's log goes: beside its tables when local (and not a file, which
    configuration rejects in one line), else a cache folder."""
    local = root.removeprefix("file://")
    if "://" not in local and not Path(local).expanduser().is_file():
        return Path(local).expanduser() / "logs" / LOG_FILE
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tamer" / "logs" / LOG_FILE


@contextlib.contextmanager
def quiet_libraries(log_file: Path, *, verbose: bool = False) -> Iterator[None]:
    """Route third-party warnings and library logging to `log_file` while the block runs."""
    if verbose:
        yield
        return
    handler = _file_handler(log_file)
    with contextlib.ExitStack() as stack:
        stack.callback(handler.close)
        stack.enter_context(_environment(QUIET_ENVIRONMENT))
        stack.enter_context(_warnings_to(handler))
        stack.enter_context(_library_logging_to(handler))
        yield


def log_exception(log_file: Path, message: str) -> None:
    """Append `message` and the current exception's traceback to the log."""
    handler = _file_handler(log_file)
    logger = logging.getLogger("tamer.errors")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.exception(message)
    finally:
        logger.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        os.environ.setdefault(name, value)  # the user's own setting wins
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _warnings_to(handler: logging.Handler) -> Iterator[None]:
    logger = logging.getLogger("py.warnings")  # where logging.captureWarnings sends them
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextlib.contextmanager
def _library_logging_to(handler: logging.Handler) -> Iterator[None]:
    """The libraries attach a stderr handler when first imported, usually mid-command: swap it
    for ours now if they are loaded, else right after their logging module loads."""
    adopted: list[ModuleType] = []

    def adopt(module: ModuleType) -> None:
        module.disable_default_handler()
        _library_logger(module).addHandler(handler)
        module.set_verbosity_warning()  # the file takes what the quiet environment would drop
        adopted.append(module)

    for name in LIBRARY_LOGGING:
        if name in sys.modules:
            adopt(sys.modules[name])
    finder = _AfterImport({name: adopt for name in LIBRARY_LOGGING if name not in sys.modules})
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for module in adopted:
            _library_logger(module).removeHandler(handler)  # its remove_handler asserts wrongly
            module.enable_default_handler()


def _library_logger(module: ModuleType) -> logging.Logger:
    return logging.getLogger(module.__name__.split(".")[0])


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls `hooks[name](module)` right after module `name` is first executed."""

    def __init__(self, hooks: dict[str, Callable[[ModuleType], None]]) -> None:
        self.hooks = hooks

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 - importlib's protocol
        hook = self.hooks.get(fullname)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path) if hook else None
        if spec is None or spec.loader is None:
            return None
        spec.loader = _HookedLoader(spec.loader, hook)
        return spec


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, hook: Callable[[ModuleType], None]) -> None:
        self.loader, self.hook = loader, hook

    def create_module(self, spec):  # noqa: ANN001 - importlib's protocol
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.hook(module)


def _file_handler(log_file: Path) -> logging.Handler:
    # delay: the file (and its folder) appear only when something is written.
    handler = _FolderMakingHandler(log_file, delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    return handler


class _FolderMakingHandler(logging.FileHandler):
    """A FileHandler that creates its folder on first write, not when the command starts."""

    def _open(self):  # noqa: ANN202 - logging's protocol
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()
