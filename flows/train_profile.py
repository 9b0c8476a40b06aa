"""The `train-profile` flow: train every role of the `synth` profile from scratch on synth
renders (tasks/profile_roles.py says what each role learns), under Ray Train with
checkpoints, then write the profile YAML and its provenance. Run again after a kill, it skips
finished roles and resumes the interrupted one from its newest checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from tasks import profile_measures, profile_training
from tasks.profile_roles import ROLE_ORDER, recipe as named_recipe
from tasks.ray_runtime import ensure_ray
from tamer.config import load_config


@task
def train_roles(out: str, recipe: str, seed: int, threads: int) -> list[dict]:
    """Every role to completion, in order (finished ones skipped, an interrupted one resumed
    from its checkpoint); their done-records."""
    return profile_training.train_roles(Path(out), ROLE_ORDER, named_recipe(recipe, seed), threads)


@task
def measure(out: str, recipe: str, seed: int) -> dict:
    """Every metric the provenance records, on renders no role trained on."""
    return profile_measures.measure_profile(Path(out), named_recipe(recipe, seed), profile_measures.SIZES[recipe])


@task
def write_profile(out: str, recipe: str, seed: int, name: str, records: list[dict], metrics: dict) -> str:
    return str(profile_training.write_profile(Path(out), named_recipe(recipe, seed), name, records, metrics))


@flow(name="train-profile", log_prints=True)
def train_profile_flow(out: str, recipe: str = "full", seed: int = 0, name: str = "synth", threads: int = 0,
                       root: str | None = None, config_file: str | None = None) -> dict:
    """Returns {"profile": yaml path, "roles": done-records, "metrics": ...}."""
    ensure_ray(load_config(config_file, root=root).ray)
    Path(out).mkdir(parents=True, exist_ok=True)
    records = train_roles(out, recipe, seed, threads)
    metrics = measure(out, recipe, seed)
    path = write_profile(out, recipe, seed, name, records, metrics)
    return {"profile": path, "roles": records, "metrics": metrics}
