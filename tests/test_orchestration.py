"""Event-driven orchestration against a real Prefect server (SQLite on loopback).

New data -> ingest emits `tamer.dataset.committed` -> the served `refresh-on-commit`
deployment captions/embeds and its retrain gate emits `tamer.retrain.requested` -> the
`retrain` deployment gets a flow run. Ingesting nothing new creates no run at all. A burst of
commits judged inside the debounce window is deferred to one scheduled `retrain-gate` run,
which requests one retrain on all of them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

BURST_CONFIG = """
retrain: {min_new_images: 1, debounce_s: 45}
train: {steps: 2, num_workers: 1, batch_size: 2, checkpoint_every: 2}
"""
CONFIG = """
synth: {objects: 3, views: 2, size: 32}
retrain: {min_new_images: 1, debounce_s: 0}
train: {steps: 2, num_workers: 1, batch_size: 2, checkpoint_every: 2}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 2.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Api:
    """The few REST calls the test needs, against the server it started."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def healthy(self) -> bool:
        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def deployment_id(self, flow: str, name: str) -> str | None:
        response = self.http.get(f"/deployments/name/{flow}/{name}")
        return response.json()["id"] if response.status_code == 200 else None

    def runs_of(self, deployment_id: str) -> list[dict]:
        body = {"deployments": {"id": {"any_": [deployment_id]}}}
        return self.http.post("/flow_runs/filter", json=body).json()


@pytest.fixture
def prefect_api(tmp_path):
    port = free_port()
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(home),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = Api(env["PREFECT_API_URL"])
    try:
        wait_for(api.healthy, 120, "the Prefect server to start")
        yield api, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


@contextmanager
def served(tmp_path: Path, config_text: str, env: dict, deployments: list[str]) -> Iterator[tuple[list[str], Path]]:
    """`tamer serve --only` each of `deployments` on a fresh root with `config_text`; yields the
    `tamer` command line for that root and config, and the serve log. Stopped on exit."""
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    tamer = [str(BIN / "tamer"), "--root", str(tmp_path / "data"), "--config", str(config)]
    log = tmp_path / "serve.log"
    only = [arg for name in deployments for arg in ("--only", name)]
    serve = subprocess.Popen([*tamer, "serve", *only], env=env, start_new_session=True,
                             stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        yield tamer, log
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)


def test_new_data_triggers_retrain_and_nothing_new_triggers_nothing(tmp_path, prefect_api):
    api, env = prefect_api
    src = tmp_path / "incoming"
    with served(tmp_path, CONFIG, env, ["refresh-on-commit", "retrain"]) as (tamer, log):
        subprocess.run([*tamer, "synth", "--out", str(src), "--json"], env=env, check=True,
                       capture_output=True)
        refresh = wait_for(lambda: api.deployment_id("refresh", "refresh-on-commit"), 120,
                           "the refresh deployment")
        retrain = wait_for(lambda: api.deployment_id("train", "retrain"), 60,
                           "the retrain deployment")
        time.sleep(10)  # the server's trigger service loads new automations periodically

        subprocess.run([*tamer, "ingest", str(src), "--json"], env=env, check=True,
                       capture_output=True, timeout=300)
        wait_for(lambda: api.runs_of(refresh), 120, "a refresh run triggered by the ingest")
        try:
            wait_for(lambda: api.runs_of(retrain), 400, "a retrain run requested by the gate")
        except AssertionError:
            print(log.read_text()[-6000:])  # what the served refresh run did
            raise
        before = (len(api.runs_of(refresh)), len(api.runs_of(retrain)))

        again = subprocess.run([*tamer, "ingest", str(src), "--json"], env=env, check=True,
                               capture_output=True, text=True, timeout=300)
        assert '"ingested": 0' in again.stdout
        time.sleep(20)  # long enough for a trigger to fire, had an event been emitted
        assert (len(api.runs_of(refresh)), len(api.runs_of(retrain))) == before


def test_a_burst_of_commits_is_deferred_to_one_retrain_on_all_of_them(tmp_path, prefect_api):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.refresh import retrain_gate_flow
    from storage.shards import ShardStore
    from tamer.config import IngestSettings
    from tamer.synth import generate
    from tasks import runs
    from tasks.ingest import ingest_source
    from tasks.retrain_policy import DEFERRED

    api, env = prefect_api
    root, config = str(tmp_path / "data"), str(tmp_path / "config.yaml")
    with served(tmp_path, BURST_CONFIG, env, ["retrain-gate", "retrain"]) as (_, log):
        gate = wait_for(lambda: api.deployment_id("retrain-gate", "retrain-gate"), 120, "the gate deployment")
        retrain = wait_for(lambda: api.deployment_id("train", "retrain"), 60, "the retrain deployment")
        time.sleep(10)  # the server's trigger service loads new automations periodically
        store = ShardStore(root)
        decisions = []
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            for seed in range(3):  # three commits in a burst, the gate judging after each
                generate(tmp_path / f"src{seed}", n_objects=1, views=2, size=32, seed=seed)
                ingest_source(str(tmp_path / f"src{seed}"), store, IngestSettings(executor="local"))
                decisions.append(retrain_gate_flow(root=root, config_file=config))
        assert not any(d["retrain"] for d in decisions)
        ends = sorted(d["defer_until"] for d in decisions)
        assert (ends[-1] - ends[0]).total_seconds() < 1, "every commit joined one re-evaluation"
        assert len(api.runs_of(gate)) == 1 and not api.runs_of(retrain)

        try:
            done = wait_for(lambda: [r for r in runs.list_runs(store) if r["status"] == runs.COMPLETED],
                            600, "the retrain requested at the window's end")
        except AssertionError:
            print(log.read_text()[-6000:])
            raise
        assert [r["dataset_fingerprint"] for r in done] == [store.fingerprint()]  # all three commits
        assert len(api.runs_of(retrain)) == 1 and len(api.runs_of(gate)) == 1
        reasons = [r["reason"] for r in store.read("retrain_decisions").to_pylist()]
        assert [r.startswith(DEFERRED) for r in reasons] == [True, True, True, False]
        assert [r["retrain"] for r in store.read("retrain_decisions").to_pylist()][-1]
