"""The `train-profile` flow: train every role of the `synth` profile from scratch on synth
renders (tasks/profile_roles.py says what each role learns), under Ray Train with
checkpoints, two chains of roles side by side (`ROLE_CHAINS`, the CPUs shared between them),
then write the profile YAML and its provenance. Run again after a kill, it skips
finished roles and resumes the interrupted one from its newest checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, task

from tasks import profile_measures, profile_training
from tasks.profile_roles import ROLE_CHAINS, ROLE_ORDER, recipe as named_recipe
from tasks.ray_runtime import ensure_ray
from tamer.config import load_config


@task
def train_chain(out: str, roles: tuple[str, ...], recipe: str, seed: int, threads: int,
                others: tuple[str, ...] = (), freed_threads: int = 0) -> list[dict]:
    """The chain's roles to completion, in order (finished ones skipped, an interrupted one
    resumed from its checkpoint); their done-records. At `freed_threads` once `others` are done."""
    return profile_training.train_roles(Path(out), roles, named_recipe(recipe, seed), threads,
                                        others=others, freed_threads=freed_threads)


@task
def measure(out: str, recipe: str, seed: int) -> dict:
    """Every metric the provenance records, on renders no role trained on."""
    return profile_measures.measure_profile(Path(out), named_recipe(recipe, seed), profile_measures.SIZES[recipe])


@task
def write_profile(out: str, recipe: str, seed: int, name: str, records: list[dict], metrics: dict,
                  commit: str | None) -> str:
    return str(profile_training.write_profile(Path(out), named_recipe(recipe, seed), name, records, metrics, commit))


@flow(name="train-profile", log_prints=True)
def train_profile_flow(out: str, recipe: str = "full", seed: int = 0, name: str = "synth", threads: int = 0,
                       side_by_side: bool = True, root: str | None = None,
                       config_file: str | None = None, measure_only: bool = False) -> dict:
    """Returns {"profile": yaml path, "roles": done-records in `ROLE_ORDER`, "metrics": ...}.
    `threads` are torch threads per role; 0 shares the CPUs between the chains (a chain takes
    them all once the others are done). `measure_only`: train nothing, measure the roles the
    folder's provenance records (same recipe) and write it again."""
    commit = profile_training.code_commit()
    if measure_only:
        records = profile_training.recorded_roles(Path(out), named_recipe(recipe, seed))
        metrics = measure(out, recipe, seed)
        return {"profile": write_profile(out, recipe, seed, name, records, metrics, commit), "roles": records,
                "metrics": metrics}
    ensure_ray(load_config(config_file, root=root).ray)
    Path(out).mkdir(parents=True, exist_ok=True)
    chains = ROLE_CHAINS if side_by_side else (ROLE_ORDER,)
    # shared: each chain its part of the CPUs, and all of them once the other chains are done
    freed = 0 if threads else max(1, os.cpu_count() or 1)
    threads = threads or max(1, freed // len(chains))
    futures = [train_chain.submit(out, chain, recipe, seed, threads,
                                  tuple(role for other in chains if other != chain for role in other), freed)
               for chain in chains]
    done = {record["role"]: record for future in futures for record in future.result()}
    records = [done[role] for role in ROLE_ORDER]
    metrics = measure(out, recipe, seed)
    path = write_profile(out, recipe, seed, name, records, metrics, commit)
    return {"profile": path, "roles": records, "metrics": metrics}
