"""Distributed training on Ray Train: `run_training` (the driver) and `train_loop_per_worker`.

The driver builds the datasets (tasks/train_data.py) and a `TorchTrainer` whose runs live at
`<root>/runs/<run_id>`; on a restart (`FailureConfig`) or when a run id is started again, a worker
continues from the newest checkpoint that either Ray Train or the run registry knows. Rank 0
registers each checkpoint (with its step) as soon as `report` has uploaded it, before the
controller hears of it: a worker killed in between would otherwise restart from an older one.
Each worker is one DDP rank (gloo on CPU, NCCL on GPU) that consumes its shard of both datasets.

A checkpoint directory (`checkpoint_<step>`), written by rank 0 with one data file per rank:
    weights.safetensors   trainable state: "adapter.*" (+ "unet.*" when training the UNet)
    ema.safetensors       the EMA of the trainable weights (when enabled)
    trainer_state.pt      optimizer, LR schedule, loss scaler, torch RNG (loaded weights_only)
    config.json           the full resolved TamerConfig: a resume rebuilds the model exactly
    state.json            step, run id, dataset fingerprint
    data_rank<r>.json     row keys rank r consumed since the previous checkpoint (audit)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from model.batching import JointBatchPolicy, collate
from model.fit import step_seed
from model.optim import EMA, optimizer_step, warmup_cosine
from model.tamer_model import TamerModel, TamerModelConfig
from storage.shards import ShardStore
from tamer.config import TamerConfig, TrainSettings
from tasks import runs
from tasks.train_data import DOMAIN, GENERAL, Pool

WEIGHTS, EMA_WEIGHTS, TRAINER_STATE = "weights.safetensors", "ema.safetensors", "trainer_state.pt"
CONFIG, STATE, PIPELINE = "config.json", "state.json", "pipeline"
CHECKPOINT_PREFIX = "checkpoint_"  # + the step, zero-padded: names sort in step order
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class FaultInjection:
    """Tests only: rank `rank` kills its own process once, on reaching `step` (the marker file
    records that it happened, so the restarted attempt runs through). At a checkpoint step that
    is the moment after the checkpoint was registered, before Ray's controller (which polls
    workers every 2 s) can have heard of it."""

    step: int
    marker: str
    rank: int = 0


@dataclass
class TrainResult:
    step: int  # the last step trained
    start_step: int  # where the final attempt started (> 0: it resumed from a checkpoint)
    metrics: dict
    checkpoint: object  # ray.train.Checkpoint: `.path`, `.as_directory()` (works for remote roots)


def runs_uri(store: ShardStore) -> str:
    return store.location.url(store.location.join("runs"))


def run_training(config: TamerConfig, run_id: str, fingerprint: str, datasets: dict,
                 fault: FaultInjection | None = None, started: dt.datetime | None = None) -> TrainResult:
    """Train (or resume) `run_id` to `config.train.steps`; raises if the run fails for good.
    `started`: the registry's start time of the run, repeated by its checkpoint rows."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    train = config.train
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump_json(), "run_id": run_id,
                           "fingerprint": fingerprint, "fault": fault,
                           "started": started or dt.datetime.now(dt.UTC)},
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                     resources_per_worker={"CPU": train.cpus_per_worker}),
        run_config=RunConfig(storage_path=runs_uri(ShardStore(config.root)), name=run_id,
                             failure_config=FailureConfig(max_failures=train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=train.keep_checkpoints)),
        datasets=datasets,
    )
    result = trainer.fit()
    return TrainResult(step=int(result.metrics.get("step", 0)),
                       start_step=int(result.metrics.get("start_step", 0)),
                       metrics=dict(result.metrics), checkpoint=result.checkpoint)


# ---- the worker ----------------------------------------------------------------------------
class _Step(torch.nn.Module):
    """DDP synchronizes gradients through `forward` only: make the training step the forward."""

    def __init__(self, model: TamerModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.model.training_step(batch, generator)


def train_loop_per_worker(loop: dict) -> None:
    """One rank: build, restore, then step / log / checkpoint until `train.steps`."""
    import ray.train
    import ray.train.torch

    config = TamerConfig.model_validate_json(loop["config"])
    train, run_id = config.train, loop["run_id"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(train.cpus_per_worker)))
    device = ray.train.torch.get_device()
    amp = AMP_DTYPES.get(train.mixed_precision) if device.type == "cuda" else None

    # 1. the model, optimizer, schedule, EMA: identical on every rank (same seed)
    torch.manual_seed(train.seed)
    model = TamerModel.from_profile(config.profile, TamerModelConfig(**train.model))
    _to_device(model, device)
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(train.warmup_steps, train.steps, train.min_lr_ratio))
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    ema = EMA(named, train.ema_decay) if train.ema_decay else None

    # 2. resume from the newest checkpoint of this run, if any
    start = 0
    store = ShardStore(config.root)
    checkpoint = newest_checkpoint(ray.train.get_checkpoint(), runs.get_run(store, run_id))
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start = restore(Path(directory), model, optimizer, scheduler, scaler, ema)

    # 3. DDP (a no-op wrapper for one worker) and this rank's data
    step_module = ray.train.torch.prepare_model(
        _Step(model), parallel_strategy_kwargs={"find_unused_parameters": True})  # object rows vary
    policy = JointBatchPolicy(train.batch_size, model.config.domain_ratio, train.seed)
    pools = {name: Pool(ray.train.get_dataset_shard(name), train.batch_size, train.seed + rank)
             for name in (DOMAIN, GENERAL)}

    # 4. the loop
    meter = _Meter(train, world)
    consumed: list[str] = []
    for step in range(start, train.steps):
        _maybe_fail(loop["fault"], step, rank)
        terms = None
        for micro in range(train.grad_accumulation):
            began = time.perf_counter()
            batch, keys = next_batch(policy, pools, step * train.grad_accumulation + micro)
            meter.data(time.perf_counter() - began)
            consumed += keys
            generator = torch.Generator().manual_seed(step_seed(train.seed, rank, step, micro))
            last = micro == train.grad_accumulation - 1
            with contextlib.nullcontext() if last or world == 1 else step_module.no_sync():
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    terms = step_module(batch, generator)
                loss = terms["total"] / train.grad_accumulation
                (scaler.scale(loss) if scaler else loss).backward()
        grad_norm = optimizer_step(optimizer, params, train.clip_norm, scaler)
        scheduler.step()
        if ema is not None:
            ema.update()
        meter.step(step, terms, scheduler.get_last_lr()[0], grad_norm, device)
        if (step + 1) % train.checkpoint_every == 0 or step + 1 == train.steps:
            if rank == 0 and meter.rows:
                runs.write_metrics(store, run_id, meter.rows)
                meter.rows = []
            name = f"{CHECKPOINT_PREFIX}{step + 1:08d}"
            with tempfile.TemporaryDirectory() as directory:
                save(Path(directory), step + 1, config, loop, model, optimizer, scheduler, scaler, ema,
                     rank, consumed)
                ray.train.report({**meter.summary(), "step": step + 1, "start_step": start},
                                 checkpoint=ray.train.Checkpoint.from_directory(directory),
                                 checkpoint_dir_name=name)  # returns once uploaded
            if rank == 0:
                runs.record_run(store, run_id, runs.RUNNING, config, loop["fingerprint"], loop["started"],
                                step=step + 1, checkpoint_uri=f"{runs_uri(store)}/{run_id}/{name}")
            consumed = []


def _to_device(model: TamerModel, device: torch.device) -> None:
    model.pipe.to(device)
    if model.pipe.segmenter is not None:  # not a registered module: .to() would miss it
        model.pipe.segmenter.to(device)


def newest_checkpoint(reported, registered: dict | None):
    """Ray Train's checkpoint of this run or the registry's, whichever holds the later step."""
    from ray.train import Checkpoint

    if registered is None or not registered["checkpoint_uri"]:
        return reported
    if reported is not None and checkpoint_step(reported.path) >= registered["step"]:
        return reported
    return Checkpoint(registered["checkpoint_uri"])


def checkpoint_step(path: str) -> int:
    return int(path.rstrip("/").rsplit("/", 1)[-1].removeprefix(CHECKPOINT_PREFIX))


def _maybe_fail(fault: FaultInjection | None, step: int, rank: int) -> None:
    if fault is not None and step == fault.step and rank == fault.rank and not os.path.exists(fault.marker):
        Path(fault.marker).write_text(f"killed rank {rank} at step {step}\n")
        os._exit(1)  # a real process death, as a crashed or preempted worker


def next_batch(policy: JointBatchPolicy, pools: dict[str, Pool], index: int) -> tuple[dict, list[str]]:
    """Micro-batch `index`: the policy places domain rows, the pools fill them; + row keys."""
    domain_rows = policy.domain_rows(index).tolist()  # (B,) bool
    count = sum(domain_rows)
    domain, general = iter(pools[DOMAIN].take(count)), iter(pools[GENERAL].take(len(domain_rows) - count))
    examples = [next(domain) if is_domain else next(general) for is_domain in domain_rows]
    keys = [example.pop("key") for example in examples]
    return collate(examples), keys


class _Meter:
    """Loss terms (mean over ranks), LR, throughput and data-wait share; one row per log step."""

    def __init__(self, train: TrainSettings, world: int):
        self.train, self.world = train, world
        self.rows: list[dict] = []
        self.window_start, self.window_steps, self.waited = time.perf_counter(), 0, 0.0
        self.first_step: int | None = None
        self.last: dict = {}

    def data(self, seconds: float) -> None:
        self.waited += seconds

    def step(self, step: int, terms: dict, lr: float, grad_norm: float | None, device) -> None:
        self.window_steps += 1
        self.first_step = step if self.first_step is None else self.first_step
        if (step + 1) % self.train.log_every and step + 1 != self.train.steps:
            return
        values = torch.tensor([terms[k].item() for k in ("total", "diffusion", "identity")], device=device)
        if self.world > 1:  # every rank reaches this line at the same steps
            torch.distributed.all_reduce(values)
            values /= self.world
        elapsed = time.perf_counter() - self.window_start
        rows = self.window_steps * self.train.batch_size * self.train.grad_accumulation * self.world
        loss, diffusion, identity = values.tolist()
        self.last = {"step": step + 1, "loss": loss, "diffusion": diffusion, "identity": identity,
                     "lr": lr, "grad_norm": grad_norm, "samples_per_s": rows / elapsed,
                     "data_share": self.waited / elapsed}
        self.rows.append(self.last)
        eta = (self.train.steps - step - 1) * elapsed / self.window_steps
        print(f"step {step + 1}/{self.train.steps} loss {loss:.4f} lr {lr:.2e} "
              f"{self.last['samples_per_s']:.1f} samples/s ETA {eta:.0f}s", flush=True)
        self.window_start, self.window_steps, self.waited = time.perf_counter(), 0, 0.0

    def summary(self) -> dict:
        return {k: v for k, v in self.last.items() if v is not None and k != "step"}


# ---- checkpoint files ----------------------------------------------------------------------
def save(directory: Path, step: int, config: TamerConfig, loop: dict, model: TamerModel, optimizer,
         scheduler, scaler, ema: EMA | None, rank: int, consumed: list[str]) -> None:
    """Rank 0 writes the state; every rank writes its data file (Ray merges the directories)."""
    from safetensors.torch import save_file

    (directory / f"data_rank{rank}.json").write_text(json.dumps(consumed))
    if rank != 0:
        return
    state = model.state_for_checkpoint()
    flat = {f"{part}.{key}": tensor.detach().contiguous().cpu()
            for part in ("adapter", "unet") if part in state for key, tensor in state[part].items()}
    save_file(flat, directory / WEIGHTS)
    if ema is not None:
        save_file({k: v.contiguous().cpu() for k, v in ema.state_dict().items()}, directory / EMA_WEIGHTS)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None, "rng": torch.get_rng_state()},
               directory / TRAINER_STATE)
    (directory / CONFIG).write_text(config.model_dump_json(indent=2))
    (directory / STATE).write_text(json.dumps({"step": step, "run_id": loop["run_id"],
                                               "dataset_fingerprint": loop["fingerprint"]}))


def load_weights(directory: Path, model: TamerModel, use_ema: bool = False) -> dict:
    """Load a checkpoint's trainable weights into `model` (the EMA's if asked and present);
    returns its state.json."""
    from safetensors.torch import load_file

    flat = load_file(directory / WEIGHTS)
    state: dict = {"config": model.config.model_dump()}
    for key, tensor in flat.items():
        part, name = key.split(".", 1)
        state.setdefault(part, {})[name] = tensor
    model.load_checkpoint_state(state)
    if use_ema and (directory / EMA_WEIGHTS).exists():
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        averaged = EMA(trainable, decay=0.5)  # the decay is unused: only the shadow is copied
        averaged.load_state_dict(load_file(directory / EMA_WEIGHTS))
        averaged.copy_to(trainable)
    return json.loads((directory / STATE).read_text())


def restore(directory: Path, model: TamerModel, optimizer, scheduler, scaler, ema: EMA | None) -> int:
    """Bring every piece of training state back; returns the step to continue from."""
    state = load_weights(directory, model)
    trainer = torch.load(directory / TRAINER_STATE, weights_only=True)  # never unpickle code
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    if scaler is not None and trainer["scaler"] is not None:
        scaler.load_state_dict(trainer["scaler"])
    torch.set_rng_state(trainer["rng"])
    if ema is not None and (directory / EMA_WEIGHTS).exists():
        from safetensors.torch import load_file

        ema.load_state_dict(load_file(directory / EMA_WEIGHTS))
    return int(state["step"])


def load_checkpoint_model(directory: str | Path, use_ema: bool = True) -> tuple[TamerModel, TamerConfig, dict]:
    """A checkpoint directory -> (model with its weights, the resolved config, state.json)."""
    directory = Path(directory)
    config = TamerConfig.model_validate_json((directory / CONFIG).read_text())
    model = TamerModel.from_profile(config.profile, TamerModelConfig(**config.train.model))
    state = load_weights(directory, model, use_ema=use_ema)
    return model, config, state


def export_pipeline(checkpoint_dir: str | Path, out_dir: str | Path) -> str:
    """Save the checkpoint (EMA weights when trained with them) as a directory `generate` loads."""
    model, _, _ = load_checkpoint_model(checkpoint_dir)
    model.save_pretrained(out_dir)
    return str(out_dir)
