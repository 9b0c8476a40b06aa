"""Shared fixtures: one local Ray and one throw-away Prefect server per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# TAMER_DREAMBENCH: where a checkout does not sit beside ../shared (e.g. a git worktree)
DREAMBENCH = Path(os.environ.get("TAMER_DREAMBENCH")
                  or Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambench")


def pytest_configure(config) -> None:
    """Flow commands without PREFECT_API_URL share a local Prefect server (flows/server.py):
    in tests, one under a throw-away Prefect home, stopped at the end (not the user's).
    Commands that do not name a profile run the `tiny` one (random weights, seconds), not the
    trained `synth` default; TAMER_PROFILE set by the caller wins."""
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tamer-test-prefect-")
    os.environ.setdefault("TAMER_PROFILE", "tiny")


def pytest_unconfigure(config) -> None:
    from flows.server import stop_shared_server

    stop_shared_server(Path(os.environ["PREFECT_HOME"]))
    shutil.rmtree(os.environ["PREFECT_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (2 CPUs), started once: start-up costs seconds."""
    import ray

    from tasks.ray_runtime import ensure_ray

    os.environ.pop("RAY_ADDRESS", None)
    ensure_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real, temporary Prefect API (SQLite) for tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def smoke_profile(tmp_path_factory, ray_local, prefect_server):
    """A synth profile trained once by `train-profile`'s flow with the smoke recipe (every
    role, a few steps each): (folder, the flow's report)."""
    from flows.train_profile import train_profile_flow

    out = tmp_path_factory.mktemp("synth_profile")
    return out, train_profile_flow(out=str(out), recipe="smoke", seed=0, threads=1)


@pytest.fixture(scope="session")
def dreambench() -> Path:
    if not (DREAMBENCH / "prompts_and_classes.txt").exists():
        pytest.skip(f"DreamBench subset not found at {DREAMBENCH} (../shared is absent)")
    return DREAMBENCH


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API on 127.0.0.1 (moto in server mode); s3fs and delta-rs reach it over HTTP
    through the standard AWS_* environment, which child processes inherit too."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    yield settings["AWS_ENDPOINT_URL"]
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture
def s3_root(s3_endpoint) -> str:
    """A fresh bucket on the local S3 endpoint; returns a root URI inside it."""
    import uuid

    import fsspec

    bucket = f"tamer-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/root"
