"""Side-by-side commands without PREFECT_API_URL share one local Prefect server (real processes).

Four `tamer ingest` commands into one root start at once under a fresh Prefect home that holds
a stale state file (a server that is gone): exactly one server is started, all four succeed,
and their flow runs are all recorded by it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from flows.server import LOG_FILE, STATE_FILE, healthy, stop_shared_server
from storage.shards import ShardStore
from tamer.synth import generate
from test_orchestration import free_port

REPO = Path(__file__).resolve().parents[1]


def test_four_commands_at_once_share_one_server(tmp_path):
    home = tmp_path / "prefect-home"
    home.mkdir()
    dead = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    (home / STATE_FILE).write_text(json.dumps({"url": dead, "pid": 999999}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PYTHONPATH": str(REPO)}
    config = tmp_path / "local.yaml"
    config.write_text("ingest: {executor: local}\n")  # four local Rays would not fit two cores
    commands = []
    for i in range(4):
        generate(tmp_path / f"src{i}", n_objects=1, views=2, size=32, seed=i)
        commands.append(subprocess.Popen(
            [sys.executable, "-m", "tamer.cli", "--root", str(tmp_path / "data"), "--config",
             str(config), "ingest", str(tmp_path / f"src{i}"), "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    state = None
    try:
        outputs = [command.communicate(timeout=400) for command in commands]
        state = json.loads((home / STATE_FILE).read_text())
        for command, (stdout, stderr) in zip(commands, outputs):
            assert command.returncode == 0, stderr[-3000:]
            assert "| INFO " not in stderr, "Prefect's per-task lines stay off the console"
            assert json.loads(stdout)["ingested"] == 2
        assert ShardStore(str(tmp_path / "data")).row_count("images") == 8  # one root, all kept
        assert state["url"] != dead and state["url"].startswith("http://127.0.0.1:")
        runs = httpx.post(f"{state['url']}/flow_runs/filter",
                          json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}).json()
        assert len(runs) == 4, "every command's flow run is on the one shared server"
        log = (home / LOG_FILE).read_text()
        assert log.count("Check out the dashboard at") == 1, "one server was started, not one each"
    finally:
        for command in commands:
            if command.poll() is None:
                command.kill()
        stop = subprocess.run([sys.executable, "-m", "tamer.cli", "stop-server", "--json"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert json.loads(stop.stdout) == {"stopped": bool(state)}, stop.stderr[-2000:]
        if state:
            assert not healthy(state["url"])
        assert stop_shared_server(home) is False, "nothing left to stop"
