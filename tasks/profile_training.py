"""Train the `synth` profile's roles with Ray Train, all in one `TorchTrainer` (one worker):
checkpoints every `checkpoint_every` steps under `<out>/_checkpoints/<role>/step_<n>`, resume
from the newest complete one (a worker restarted by `FailureConfig`, or the whole command run
again after a kill), then the role's Hugging Face folders, the profile YAML and `provenance.json`.

A role is done when its `<out>/_checkpoints/<role>/done.json` exists (written after its folders),
so a re-run skips it; the fingerprint of the recipe fields that role reads must match, or the run
refuses to mix weights of two recipes in one profile (a changed base budget retrains the base
only).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from model.conv_stem import ConvStemBlipForConditionalGeneration, ConvStemCLIPModel, ConvStemViTModel
from tasks import profile_measures, profile_roles
from tasks.profile_roles import ROLE_FOLDERS, Recipe

CHECKPOINTS, DONE, PROVENANCE, RECIPE = "_checkpoints", "done.json", "provenance.json", "recipe_fingerprint"


class RecipeMismatch(RuntimeError):
    """`out` holds roles trained with another recipe: train into a new folder instead."""


def role_done(out: Path, role: str, r: Recipe) -> dict | None:
    """The finished role's record, None if it still has to train."""
    marker = out / CHECKPOINTS / role / DONE
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text())
    if record["recipe_fingerprint"] != r.fingerprint(role):
        raise RecipeMismatch(f"{out} holds a {role} trained with another recipe "
                             f"({record['recipe_fingerprint']} != {r.fingerprint(role)}); use a new --out")
    return record


def train_roles(out: Path, roles: Sequence[str], r: Recipe, threads: int = 0, max_failures: int = 2,
                others: Sequence[str] = (), freed_threads: int = 0) -> list[dict]:
    """Train `roles` in order to completion (resuming an interrupted one) under one Ray Train
    run with one worker (one CPU), and return their done-records. One run per chain of roles,
    not one per role: each `TorchTrainer` start cost about 40 s (worker process, imports,
    process group) against 2-4 s of smoke training per role; runs named after their first role,
    so chains can train side by side. Ray must already be initialised
    (`tasks.ray_runtime.ensure_ray`).

    `others`: the roles of the chains training beside this one; once all are done, this chain
    goes on at `freed_threads` (the full recipe's second chain ends about half an hour before
    the first, whose base then trained at one thread on two idle cores)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    todo = [role for role in roles if role_done(out, role, r) is None]
    if todo:
        cpus = threads or max(1, os.cpu_count() or 1)
        trainer = TorchTrainer(
            roles_loop, train_loop_config={"out": str(out), "roles": todo, "recipe": r, "threads": cpus,
                                           "others": list(others), "freed_threads": freed_threads},
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(storage_path=str((out / CHECKPOINTS / "_ray").resolve()), name=f"roles-{todo[0]}",
                                 failure_config=FailureConfig(max_failures=max_failures)))
        trainer.fit()
    records = [role_done(out, role, r) for role in roles]
    if missing := [role for role, record in zip(roles, records) if record is None]:
        raise RuntimeError(f"roles {missing} finished without writing their folders")
    return records


def train_role(out: Path, role: str, r: Recipe, threads: int = 0, max_failures: int = 2) -> dict:
    """`train_roles` for one role."""
    return train_roles(out, [role], r, threads, max_failures)[0]


def roles_loop(loop: dict) -> None:
    """The worker: each role not done yet (a restarted worker skips the finished ones)."""
    import torch

    out, r = Path(loop["out"]), loop["recipe"]
    torch.set_num_threads(loop["threads"])

    def share_cores() -> None:
        take_freed_cores(out, r, loop.get("others", ()), loop.get("freed_threads", 0))

    for role in loop["roles"]:
        if role_done(out, role, r) is None:
            share_cores()
            _train_and_export(out, role, r, share_cores)


def take_freed_cores(out: Path, r: Recipe, others: Sequence[str], freed_threads: int) -> bool:
    """Raise this process's torch threads to `freed_threads` once every role in `others` is
    done (their chains no longer use the cores); True when it did."""
    import torch

    if not others or torch.get_num_threads() >= freed_threads:
        return False
    if any(role_done(out, role, r) is None for role in others):
        return False
    torch.set_num_threads(freed_threads)
    return True


def _train_and_export(out: Path, role: str, r: Recipe, at_checkpoint: Callable[[], None] = lambda: None) -> None:
    """Build the role's jobs, resume each from its newest checkpoint, fit, export, mark done.
    A tower phase checkpoints under `<role>/tower`, the role's own job under `<role>`;
    `at_checkpoint` runs after each checkpoint."""
    import ray.train

    from model.fit import newest_checkpoint, run

    jobs = profile_roles.role_jobs(role, r, out)
    root = out / CHECKPOINTS / role
    roots = [root / "tower"] * (len(jobs) - 1) + [root]
    started, began, seconds, resumed = time.perf_counter(), _now(), 0.0, 0

    def reported(done: int, folder: Path) -> None:
        ray.train.report({"role": role, "step": done, "checkpoint": str(folder)})
        at_checkpoint()

    for job, where in zip(jobs, roots):
        _forget_other_recipes(where, r.fingerprint(role))
        resume = newest_checkpoint(where)
        resumed += _step_of(resume)
        seconds += run(job, resume_from=resume, checkpoint_every=r.checkpoint_every, checkpoint_root=where,
                       on_checkpoint=reported)
    profile_roles.export_role(role, jobs[-1], r, out)
    record = {"role": role, "steps": sum(job.steps for job in jobs), "resumed_from": resumed, "train_s": seconds,
              "wall_s": time.perf_counter() - started, "started": began, "finished": _now(),
              "recipe_fingerprint": r.fingerprint(role),
              "folders": list(ROLE_FOLDERS[role])}
    (root / DONE).write_text(json.dumps(record, indent=2))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _forget_other_recipes(root: Path, fingerprint: str) -> None:
    """Checkpoints of an interrupted role trained with other recipe fields (a schedule is a
    function of the step budget) are removed, not resumed; the fingerprint is then recorded."""
    marker = root / RECIPE
    if marker.is_file() and marker.read_text() != fingerprint:
        for folder in root.glob("step_*"):
            shutil.rmtree(folder)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)


def _step_of(folder: Path | None) -> int:
    return int(folder.name.removeprefix("step_")) if folder is not None else 0


def recorded_roles(out: Path, r: Recipe) -> list[dict]:
    """The role records of a profile folder's provenance, for measuring it again without
    training: its `_checkpoints/` are not shipped (git-ignored), so `train-profile` on a clone
    of the shipped profile would train every role again instead."""
    path = out / PROVENANCE
    if not path.exists():
        raise RecipeMismatch(f"{path} does not exist: nothing to measure again (train the profile first)")
    provenance = json.loads(path.read_text())
    if provenance.get("recipe_fingerprint") != r.fingerprint():
        raise RecipeMismatch(f"{out} was trained with recipe {provenance.get('recipe_fingerprint')}, not "
                             f"{r.fingerprint()}: its measures would not describe this recipe (train it)")
    return provenance["roles"]


def write_profile(out: Path, r: Recipe, name: str, records: list[dict], metrics: dict,
                  commit: str | None = None) -> Path:
    """The profile YAML (local ids relative to it, so the folder can move) and provenance.
    `commit`: the code's commit when training started (`code_commit()`); the checkout may have
    moved on during a two-hour run."""
    roles = {"captioner": _ref("./captioner", r.captioner_conv_stem and ConvStemBlipForConditionalGeneration),
             "clip": _ref("./clip", r.clip_conv_stem and ConvStemCLIPModel),
             "text_encoder": {"id": "./text_encoder"}, "tokenizer": {"id": "./tokenizer"},
             "unet": {"id": "./unet"}, "vae": {"id": "./vae", "class_name": "model.pixel_base.PassThroughVAE"},
             "scheduler": {"id": "./scheduler"}, "segmentation": {"id": "./segmentation"},
             "oracle": {"id": "./oracle"}, "dino": _ref("./dino", r.dino_conv_stem and ConvStemViTModel)}
    profile = {"name": name, "device": "cpu", "dtype": "float32", "resolution": r.size,
               "guidance_scale": profile_measures.GUIDANCE, "object_guidance_scale": profile_measures.OBJECT_GUIDANCE,
               "sampler": profile_measures.SAMPLER, "near_duplicate_threshold": profile_measures.NEAR_DUPLICATE,
               "group_threshold": profile_measures.GROUP_THRESHOLD,
               "example_prompt": r.example_prompt(), "roles": roles}
    path = out / f"{name}.yaml"
    path.write_text("# Written by `tamer models train-profile`; see provenance.json.\n"
                    + yaml.safe_dump(profile, sort_keys=False))
    provenance = {"profile": name, "written": _now(),
                  "code_commit": commit or code_commit(), "seed": r.seed, "recipe": r.__dict__,
                  "recipe_fingerprint": r.fingerprint(), "roles": records, "metrics": metrics}
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=2, default=str))
    return path


def _ref(folder: str, cls: type | None) -> dict:
    """A role's entry: its folder, and the class that loads it where the library's would not."""
    return {"id": folder} | ({"class_name": f"{cls.__module__}.{cls.__qualname__}"} if cls else {})


def code_commit() -> str | None:
    """The code's git commit, if the code runs from a checkout (+ "-dirty" for local changes)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")
