"""One local Prefect server shared by every `tamer` command on this machine.

Without `PREFECT_API_URL`, Prefect starts an ephemeral API server inside each process, all on
the same SQLite file under the Prefect home: commands started side by side contend for it and
time out. Instead the first command starts a detached `prefect server start` bound to
127.0.0.1 (SQLite under the Prefect home, where the ephemeral one keeps it too), records its
URL and pid in a state file, and every later command reuses it; a file lock keeps two commands
from starting two servers. A real server also runs the scheduler, which deferred gate runs need.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

STATE_FILE, LOCK_FILE, LOG_FILE = "tamer-server.json", "tamer-server.lock", "tamer-server.log"
START_TIMEOUT_S = 180.0  # a cold start on two busy cores (migrations, imports) takes a while
# The server's task-run recorder writes each task run from its events as it arrives (batch 1).
# A subflow's start inserts its tracking task run through the API; meeting a recorder write,
# SQLite answers "database is locked", the API 503 and the client retries 2 s later: 11 of 12
# back-to-back stage subflows waited so (PrefectHQ/prefect#18934). Batched, the recorder writes
# once per flush interval (5 s) and none waited; task runs reach the UI up to 5 s later.
# A value set in the environment wins.
RECORDER_DEFAULTS = {"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500"}


def ensure_prefect_api() -> str:
    """The API URL every flow of this process talks to: the configured one, else the shared
    local server (started if absent)."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url:
        return settings.api.url
    url = shared_server(Path(settings.home))
    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()  # the settings were read at import; read them again
    return url


def shared_server(home: Path) -> str:
    """URL of the running shared server under `home`, starting one when none answers."""
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / LOCK_FILE):
        state = _read_state(home / STATE_FILE)
        if state and healthy(state["url"]):
            return state["url"]
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        env = {**RECORDER_DEFAULTS, **os.environ, "PREFECT_HOME": str(home),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        with open(home / LOG_FILE, "ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                 "--port", str(port)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # outlives this command; later commands reuse it
        _wait_healthy(url, server, home / LOG_FILE)
        (home / STATE_FILE).write_text(json.dumps({"url": url, "pid": server.pid}))
        return url


def stop_shared_server(home: Path) -> bool:
    """Stop the shared server under `home`, if one runs; True when one was stopped."""
    with _locked(home / LOCK_FILE):
        state = _read_state(home / STATE_FILE)
        (home / STATE_FILE).unlink(missing_ok=True)
        if not state or not healthy(state["url"]):  # gone: its pid may be another's by now
            return False
        os.killpg(state["pid"], signal.SIGTERM)  # its own session: uvicorn included
        deadline = time.monotonic() + 30
        while healthy(state["url"]) and time.monotonic() < deadline:  # gone before we say so
            time.sleep(0.2)
        return True


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not healthy(url):
        if server.poll() is not None or time.monotonic() > deadline:
            os.killpg(server.pid, signal.SIGKILL)  # its own session: uvicorn included
            raise RuntimeError(f"the local Prefect server did not start (log: {log}); "
                               "set PREFECT_API_URL to use another one")
        time.sleep(0.5)


def _read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released on close, also when the holder is killed
        yield
