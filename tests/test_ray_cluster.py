"""A stage runs on a separate Ray cluster (`ray start --head` on loopback) via RAY_ADDRESS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hostile
import psutil
from sockets import exposed, tree
from tasks.ray_runtime import LOCAL_ONLY_ENV

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")

STAGE = """
import json, sys
import ray
from storage.shards import ShardStore
from tamer.config import IngestSettings
from tasks.ingest import ingest_source
report = ingest_source(sys.argv[1], ShardStore(sys.argv[2]), IngestSettings(executor="ray"))
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "ingested": report.ingested}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ingest_stage_runs_on_a_ray_head_through_ray_address(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"{i}.png").write_bytes(hostile.png_bytes(hostile.noise(32, seed=i)))
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # Ray socket paths must be short
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        env={**os.environ, **LOCAL_ONLY_ENV},  # else Ray turns 127.0.0.1 into the network address
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": str(REPO)}
        deadline, result = time.time() + 120, None
        while time.time() < deadline:  # the head takes a few seconds to accept drivers
            result = subprocess.run([sys.executable, "-c", STAGE, str(src), str(tmp_path / "d")],
                                    env=env, capture_output=True, text=True, timeout=180)
            if result.returncode == 0:
                break
            time.sleep(2)
        assert result is not None and result.returncode == 0, result.stderr[-2000:]
        output = json.loads(result.stdout.strip().splitlines()[-1])
        assert output["gcs"].endswith(f":{port}")  # it joined that cluster, not a new one
        assert output["ingested"] == 6
        assert exposed(tree(psutil.Process(head.pid))) == []  # the head serves loopback only
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head takes its processes down
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
