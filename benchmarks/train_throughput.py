"""Training throughput: the Ray Train path (1 worker) vs a bare PyTorch loop, same model, data
and batch size. Prints the ratio (target >= 0.85) and the data-loading share of step time;
on a GPU also the CUDA path with mixed precision. Each figure: median [min, max] of
`--repeats` interleaved rounds (Ray, bare, Ray, ...) after a warm-up round; the first
`WARMUP_STEPS` steps of every run are left out too. Not a test.

    .venv/bin/python -m benchmarks.train_throughput [--steps 60] [--batch-size 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import interleaved, paired, print_paired, print_summaries, summary, write_result
from model.batching import JointBatchPolicy
from model.fit import step_seed
from model.optim import optimizer_step
from storage.shards import ShardStore
from tamer.config import IngestSettings, TamerConfig, load_config
from tasks.train import AMP_DTYPES, next_batch, run_training
from tasks.train_data import DOMAIN, GENERAL, Pool, build_datasets, build_plan

WARMUP_STEPS = 5  # first steps pay one-off costs (allocator, lazy init): not throughput


def bare_loop(config: TamerConfig, datasets: dict, device: str) -> float:
    """Samples/s of the same training step without Ray Train, batches prepared in memory."""
    from model.tamer_model import TamerModel, TamerModelConfig

    train = config.train
    torch.set_num_threads(max(1, int(train.cpus_per_worker)))
    torch.manual_seed(train.seed)
    model = TamerModel.from_profile(config.profile, TamerModelConfig(**train.model))
    model.pipe.to(device)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    amp = AMP_DTYPES.get(train.mixed_precision) if device == "cuda" else None
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    policy = JointBatchPolicy(train.batch_size, model.config.domain_ratio, train.seed)
    pools = {name: Pool(datasets[name], train.batch_size, train.seed) for name in (DOMAIN, GENERAL)}
    batches = [next_batch(policy, pools, step)[0] for step in range(train.steps)]
    for step, batch in enumerate(batches):
        if step == WARMUP_STEPS:
            _sync(device)
            began = time.perf_counter()
        generator = torch.Generator().manual_seed(step_seed(train.seed, 0, step, 0))
        with torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None):
            loss = model.training_step(batch, generator)["total"]
        (scaler.scale(loss) if scaler else loss).backward()
        optimizer_step(optimizer, params, train.clip_norm, scaler)
    _sync(device)
    return (train.steps - WARMUP_STEPS) * train.batch_size / (time.perf_counter() - began)


def ray_path(config: TamerConfig, datasets: dict, run_id: str) -> dict:
    """Samples/s and data share of the Ray Train loop, from its metric rows after warm-up."""
    from tasks.runs import read_metrics

    run_training(config, run_id, "benchmark", datasets)
    rows = [r for r in read_metrics(ShardStore(config.root), run_id) if r["step"] > WARMUP_STEPS]
    return {"samples_per_s": sum(r["samples_per_s"] for r in rows) / len(rows),
            "data_share": sum(r["data_share"] for r in rows) / len(rows)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from tamer.synth import generate
    from tasks.ingest import ingest_source
    from tasks.ray_runtime import ensure_ray

    base = Path(tempfile.mkdtemp(prefix="tamer-bench-train-"))
    generate(base / "src", n_objects=args.objects, views=4, size=32, seed=0)
    store = ShardStore(str(base / "data"))
    ingest_source(str(base / "src"), store, IngestSettings(executor="local"))
    ensure_ray()
    figures = {}
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    for device in devices:
        config = load_config(None, root=str(base / "data"), **{
            "train.steps": args.steps, "train.batch_size": args.batch_size,
            "train.checkpoint_every": args.steps, "train.log_every": WARMUP_STEPS,
            "train.use_gpu": device == "cuda", "train.mixed_precision": "bf16" if device == "cuda" else "no",
            "train.num_workers": 1, "train.cpus_per_worker": 1})
        datasets = build_datasets(store, build_plan(store), config.profile, config.train.data_cpus)
        runs, shares = iter(range(10**6)), []

        def ray_run() -> float:
            measured = ray_path(config, datasets, f"bench-{device}-{next(runs)}")
            shares.append(measured["data_share"])
            return measured["samples_per_s"]

        samples = interleaved({"ray": ray_run, "bare": lambda: bare_loop(config, datasets, device)},
                              repeats=args.repeats)
        del shares[0]  # the warm-up round's
        print(f"{device} ({config.train.mixed_precision}), samples/s over {args.repeats} rounds:")
        print_summaries({**samples, "ray_data_share": shares}, "")
        figures[device] = {"samples_per_s": {k: summary(v) for k, v in samples.items()},
                           "ray_vs_bare": paired(samples["ray"], samples["bare"]),
                           "ray_data_share": summary(shares),
                           "mixed_precision": config.train.mixed_precision}
        print_paired("ray / bare (target >= 0.85)", figures[device]["ray_vs_bare"])
    write_result("train_throughput", {"steps": args.steps, "batch_size": args.batch_size,
                                      "repeats": args.repeats, "images": args.objects * 4,
                                      "figures": figures})


if __name__ == "__main__":
    main()
