"""One optimisation loop for every role trained from scratch here (oracle, CLIP, captioner,
segmentation, the diffusion base): AdamW, a schedule, optional gradient clipping, an optional
EMA of the weights, a per-step hook for curves, and checkpoints a later process resumes from.
Each trainer only says how to compute its loss for a step, as a `Job`.

Resuming is exact: a job draws its randomness from `step_generator(seed, step)`, a pure function
of where it is, so a run resumed at step k continues as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

Schedule = Literal["one_cycle", "warmup"]
FIT_STATE, FIT_STEP = "fit_state.pt", "fit_step.json"


def step_seed(*parts: int) -> int:
    """A seed that is a pure function of `parts` (seed, rank, step, ...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one step: batches, noise and dropout drawn from where the run is."""
    return torch.Generator().manual_seed(step_seed(seed, step))


@dataclass
class Job:
    """A model to fit: `modules` (what a checkpoint saves, by name), `loss(step)`, and how."""

    modules: dict[str, torch.nn.Module]
    loss: Callable[[int], torch.Tensor]
    steps: int
    lr: float
    weight_decay: float = 1e-2
    schedule: Schedule = "one_cycle"
    warmup_steps: int = 50
    clip_norm: float | None = None
    ema_decay: float | None = None  # diffusers' EMAModel with warm-up over every trained weight
    extra_parameters: list[torch.nn.Parameter] = field(default_factory=list)  # e.g. heads not saved
    # Parts of `modules` this job keeps as they are (a tower an earlier job trained): `run`
    # turns their gradients off when it starts, not before, so that earlier job still trains them.
    frozen: tuple[torch.nn.Module, ...] = ()

    def parameters(self) -> list[torch.nn.Parameter]:
        owned = [p for module in self.modules.values() for p in module.parameters()]
        return [p for p in owned + self.extra_parameters if p.requires_grad]


def run(job: Job, *, on_step: Callable[[int, object], None] | None = None,
        resume_from: str | Path | None = None, checkpoint_every: int = 0,
        on_checkpoint: Callable[[int, Path], None] | None = None, checkpoint_root: str | Path | None = None,
        ) -> float:
    """Fit `job` to `job.steps`; returns seconds spent training (this process).

    `on_step(done, ema)` runs after each update, untimed (`ema` is the EMAModel or None).
    `resume_from`: a checkpoint folder written here; training continues after its step.
    Every `checkpoint_every` steps (and at the end) a checkpoint is written under
    `checkpoint_root/step_<n>` and handed to `on_checkpoint(done, folder)`.
    """
    from diffusers.training_utils import EMAModel

    for module in job.frozen:
        module.requires_grad_(False)
    parameters = job.parameters()
    optimizer = torch.optim.AdamW(parameters, lr=job.lr, weight_decay=job.weight_decay)
    if job.schedule == "one_cycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=job.lr, total_steps=max(1, job.steps))
    else:
        warmup = job.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    ema = EMAModel(parameters, decay=job.ema_decay, use_ema_warmup=True) if job.ema_decay else None
    start = load_checkpoint(Path(resume_from), job, optimizer, scheduler, ema) if resume_from else 0
    spent = 0.0
    for step in range(start, job.steps):
        began = time.perf_counter()
        loss = job.loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if job.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, job.clip_norm)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.step(parameters)
        spent += time.perf_counter() - began
        done = step + 1
        if on_step is not None:
            on_step(done, ema)
        if checkpoint_every and checkpoint_root is not None and (done % checkpoint_every == 0 or done == job.steps):
            folder = Path(checkpoint_root) / f"step_{done:08d}"
            save_checkpoint(folder, done, job, optimizer, scheduler, ema)
            if on_checkpoint is not None:
                on_checkpoint(done, folder)
    if ema is not None:
        ema.copy_to(parameters)  # the job ends holding its averaged weights
    return spent


def fit(parameters: Iterable[torch.nn.Parameter], steps: int, lr: float,
        loss_fn: Callable[[int], torch.Tensor], **options) -> float:
    """`run` for a loop that needs no checkpoints: the parameters of one anonymous module."""
    holder = torch.nn.Module()
    holder.weights = torch.nn.ParameterList(parameters)
    return run(Job({"weights": holder}, loss_fn, steps, lr, **options))


def save_checkpoint(folder: Path, step: int, job: Job, optimizer, scheduler, ema) -> None:
    """Every module's weights (safetensors), the optimizer/schedule/EMA state, the step."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    for name, module in job.modules.items():  # save_model keeps tied weights (BLIP's) tied
        save_model(module, str(folder / f"{name}.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None}, folder / FIT_STATE)
    (folder / FIT_STEP).write_text(json.dumps({"step": step}))  # written last: marks it complete


def load_checkpoint(folder: Path, job: Job, optimizer=None, scheduler=None, ema=None) -> int:
    """Restore what `save_checkpoint` wrote into `job` (and the loop state); returns its step."""
    from safetensors.torch import load_model

    for name, module in job.modules.items():
        load_model(module, str(folder / f"{name}.safetensors"))
    state = torch.load(folder / FIT_STATE, weights_only=True)  # never unpickle code
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    return int(json.loads((folder / FIT_STEP).read_text())["step"])


def newest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under `root` (a kill mid-write leaves one
    without its step file, which is skipped)."""
    folders = sorted(Path(root).glob("step_*")) if Path(root).is_dir() else []
    complete = [f for f in folders if (f / FIT_STEP).is_file()]
    return complete[-1] if complete else None
