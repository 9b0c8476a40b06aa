"""Training: data plan fallbacks, optimizer helpers, 2 DDP workers on disjoint data surviving a
worker killed right after a checkpoint, the Prefect flow resuming a failed run, and a SIGKILLed
`tamer train` read as interrupted and continued by a plain re-run (real Ray, real Prefect)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.optim import EMA, optimizer_step, warmup_cosine
from storage.shards import ShardStore
from tamer.config import load_config
from tasks import runs
from synth_data import ingested_synth

SMALL = {"train.batch_size": 4, "train.warmup_steps": 1, "train.log_every": 1,
         "train.keep_checkpoints": None, "train.cpus_per_worker": 0.5}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    """4 objects x 3 views at 32 px, ingested: 12 images, 24 cross-reference pairs."""
    store = ingested_synth(tmp_path_factory.mktemp("train"), 4, 3, size=32, seed=0)
    return store.location.root


def test_plan_falls_back_to_subjects_and_own_captions(root):
    from tasks.train_data import build_plan

    plan = build_plan(ShardStore(root))
    assert (plan.pair_source, plan.caption_source) == ("subjects", "fallback")
    assert (plan.domain.num_rows, plan.general.num_rows) == (4 * 3 * 2, 12)
    assert all(r["reference_id"] != r["target_id"] and r["caption"] for r in plan.domain.to_pylist())


def test_schedule_ema_and_clipped_step():
    factor = warmup_cosine(warmup_steps=4, total_steps=10, min_ratio=0.1)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(10) == pytest.approx(0.1) and factor(7) < factor(5)
    weight = torch.nn.Parameter(torch.zeros(3))
    ema = EMA({"w": weight}, decay=0.5)
    optimizer = torch.optim.SGD([weight], lr=1.0)
    (weight * torch.tensor([30.0, 40.0, 0.0])).sum().backward()
    assert optimizer_step(optimizer, [weight], clip_norm=1.0) == pytest.approx(50.0)
    assert torch.allclose(weight, torch.tensor([-0.6, -0.8, 0.0]))  # clipped to norm 1
    assert weight.grad is None
    ema.update()
    assert torch.allclose(ema.shadow["w"], weight.detach() / 2)


def _checkpoints(root: str, run_id: str) -> list[Path]:
    return sorted((Path(root) / "runs" / run_id).glob("checkpoint_[0-9]*"))


def test_two_workers_disjoint_data_survive_a_worker_killed_after_a_checkpoint(ray_local, root, tmp_path):
    from tasks.train import FaultInjection, load_checkpoint_model, run_training
    from tasks.train_data import build_datasets, build_plan

    config = load_config(None, root=root, **SMALL, **{
        "train.steps": 4, "train.checkpoint_every": 2, "train.num_workers": 2, "train.max_failures": 1})
    store = ShardStore(root)
    datasets = build_datasets(store, build_plan(store), config.profile, config.train.data_cpus)
    marker = tmp_path / "killed"
    # Rank 0 dies the moment it has registered checkpoint 2, before Ray's controller hears of it.
    result = run_training(config, "ddp", store.fingerprint(), datasets,
                          FaultInjection(step=2, marker=str(marker)))
    assert marker.exists(), "the fault was not injected"
    assert (result.step, result.start_step) == (4, 2)  # restarted from checkpoint 2, finished
    checkpoints = _checkpoints(root, "ddp")
    assert [c.name for c in checkpoints] == ["checkpoint_00000002", "checkpoint_00000004"]
    for checkpoint in checkpoints:  # every checkpoint is complete and loads
        seen = [set(json.loads((checkpoint / f"data_rank{r}.json").read_text())) for r in (0, 1)]
        assert seen[0] and seen[1] and not seen[0] & seen[1], "ranks consumed the same rows"
        model, resolved, state = load_checkpoint_model(checkpoint)
        assert resolved == config and state["dataset_fingerprint"] == store.fingerprint()
        assert state["step"] == int(checkpoint.name.split("_")[1])
    assert [row["step"] for row in runs.read_metrics(store, "ddp")] == [1, 2, 3, 4]


def test_ray_train_runs_the_sdxl_family_from_the_second_token_column(ray_local, root):
    from tasks.train import load_checkpoint_model, run_training
    from tasks.train_data import build_datasets, build_plan

    config = load_config(None, root=root, profile="tiny-sdxl", **SMALL, **{
        "train.steps": 1, "train.checkpoint_every": 1, "train.num_workers": 1})
    store = ShardStore(root)
    datasets = build_datasets(store, build_plan(store), config.profile, config.train.data_cpus)
    assert "input_ids_2" in datasets["domain"].columns()  # SDXL's second tokenizer's ids
    result = run_training(config, "sdxl", store.fingerprint(), datasets)
    assert result.step == 1
    model, resolved, _ = load_checkpoint_model(_checkpoints(root, "sdxl")[-1])
    assert resolved.profile == "tiny-sdxl" and len(model.text_encoders) == 2
    assert [row["step"] for row in runs.read_metrics(store, "sdxl")] == [1]


def test_flow_resumes_an_interrupted_run_and_exports_a_pipeline(ray_local, prefect_server, root, tmp_path):
    from ray.train import TrainingFailedError

    from flows.train import train_flow
    from model.generate import generate
    from tasks.train import FaultInjection

    store = ShardStore(root)
    overrides = {**SMALL, "train.steps": 2, "train.checkpoint_every": 1, "train.max_failures": 0}
    with pytest.raises(ValueError, match="not the current one"):
        train_flow(root=root, overrides=overrides, dataset="0" * 16)
    with pytest.raises(TrainingFailedError):  # max_failures=0: the dead worker ends the run
        train_flow(root=root, overrides=overrides, fault=FaultInjection(step=1, marker=str(tmp_path / "k")))
    [failed] = [row for row in runs.list_runs(store) if row["status"] == runs.FAILED]
    assert failed["dataset_fingerprint"] == store.fingerprint()

    report = train_flow(root=root, resume=failed["run_id"])
    assert (report["start_step"], report["step"]) == (1, 2)  # resumed, not started over
    row = runs.get_run(store, failed["run_id"])
    assert row["status"] == runs.COMPLETED and row["dataset_fingerprint"] == store.fingerprint()
    assert row["code_version"] and json.loads(row["final_metrics"])["loss"] > 0
    from safetensors import safe_open

    from tasks.train import WEIGHTS
    with safe_open(Path(row["checkpoint_uri"]) / WEIGHTS, "pt") as saved:  # the embedded default:
        trained = list(saved.keys())                                        # the adapter alone
    assert trained and all(key.startswith("adapter.") for key in trained)
    reference = next(Path(root).parent.glob("src/*/00.png"))
    images = generate(report["pipeline_uri"], reference, "a {} on the beach", n=1, seed=7,
                      out_dir=tmp_path / "out", steps=2)
    assert len(images) == 1 and images[0].exists()


def test_killed_command_reads_interrupted_and_a_plain_rerun_continues(ray_local, prefect_server, tmp_path):
    from prefect.settings import get_current_settings

    from flows.train import train_flow

    store = ingested_synth(tmp_path, 2, 2, size=32, seed=1)
    config = tmp_path / "train.yaml"
    config.write_text("train: {steps: 30, checkpoint_every: 2, batch_size: 2, warmup_steps: 1, "
                      "log_every: 1, heartbeat_s: 1, keep_checkpoints: null, cpus_per_worker: 0.5}\n")
    env = {**os.environ, "PREFECT_API_URL": get_current_settings().api.url,
           "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = subprocess.Popen(
        [sys.executable, "-m", "tamer.cli", "--root", store.location.root, "--config", str(config),
         "train"], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(lambda: any(r["checkpoint_uri"] for r in runs.list_runs(store)) or command.poll() is not None,
              600, "a registered checkpoint")
    finally:
        os.killpg(command.pid, signal.SIGKILL)  # the command and all it started, mid-run
        command.wait()
    assert command.returncode == -signal.SIGKILL, command.stderr.read()[-3000:]

    # The lease: running while fresh, interrupted after 3 silent beats. The beat is read once the
    # registry stops moving: the killed driver's Ray Train workers (on the shared test cluster, not
    # in the killed process group) can still register a checkpoint while Ray tears the job down.
    beat = _wait(lambda: _quiet_heartbeat(store), 120, "the registry to fall silent")
    assert [runs.list_runs(store, now=beat + dt.timedelta(seconds=s))[0]["status"] for s in (2, 3.5)] \
        == [runs.RUNNING, runs.INTERRUPTED]
    killed = _wait(lambda: next((r for r in runs.list_runs(store) if r["status"] == runs.INTERRUPTED), None),
                   60, "the run to read as interrupted")
    assert 2 <= killed["step"] < 30 and Path(killed["checkpoint_uri"]).name == f"checkpoint_{killed['step']:08d}"
    assert (Path(killed["checkpoint_uri"]) / "state.json").exists()

    report = train_flow(root=store.location.root, config_file=str(config))  # no --resume
    assert report["run_id"] == killed["run_id"]
    assert (report["start_step"], report["step"]) == (killed["step"], 30)
    assert runs.get_run(store, killed["run_id"])["status"] == runs.COMPLETED


def _quiet_heartbeat(store, quiet_s: float = 3.0):
    """The only run's heartbeat if no row was added for `quiet_s`, else None."""
    [first] = runs.list_runs(store)
    time.sleep(quiet_s)
    [again] = runs.list_runs(store)
    return first["heartbeat_at"] if again["heartbeat_at"] == first["heartbeat_at"] else None


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
