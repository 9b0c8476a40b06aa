"""Training: data plan fallbacks, optimizer helpers, 2 DDP workers on disjoint data surviving a
killed worker, and the Prefect flow resuming an interrupted run (real Ray, real Prefect)."""

from __future__ import annotations

import json
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


def test_two_workers_disjoint_data_survive_a_killed_worker(ray_local, root, tmp_path):
    from tasks.train import FaultInjection, load_checkpoint_model, run_training
    from tasks.train_data import build_datasets, build_plan

    config = load_config(None, root=root, **SMALL, **{
        "train.steps": 4, "train.checkpoint_every": 2, "train.num_workers": 2, "train.max_failures": 1})
    store = ShardStore(root)
    datasets = build_datasets(store, build_plan(store), config.profile, config.train.data_cpus)
    marker = tmp_path / "killed"
    result = run_training(config, "ddp", store.fingerprint(), datasets,
                          FaultInjection(step=2, marker=str(marker), rank=1))  # dies before step 3
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
    reference = next(Path(root).parent.glob("src/*/00.png"))
    images = generate(report["pipeline_uri"], reference, "a {} on the beach", n=1, seed=7,
                      out_dir=tmp_path / "out", steps=2)
    assert len(images) == 1 and images[0].exists()
