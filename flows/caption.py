"""The `caption` flow: 1. check the models load, 2. caption new images, 3. refresh the catalog."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task

from flows.ingest import refresh_catalog
from model.profile_check import preflight
from model.profiles import load_profile
from storage.shards import ShardStore
from tamer.config import TamerConfig, load_config
from tamer.progress import stage_progress
from tasks.caption import ROLES, caption_images


@task
def check_models(profile: str) -> None:
    """Fail in seconds on a model id that cannot load, before any data work (no retries)."""
    preflight(load_profile(profile), ROLES)


@task(retries=2, retry_delay_seconds=5)
def caption(config: TamerConfig) -> dict:
    """Caption what is not yet captioned; safe to retry because committed shards are kept."""
    with stage_progress("caption") as update:
        report = caption_images(ShardStore(config.root), config.profile, config.caption,
                                config.ray, progress=update)
    return asdict(report)


@flow(name="caption", log_prints=True)
def caption_flow(root: str | None = None, config_file: str | None = None,
                 overrides: dict[str, Any] | None = None) -> dict:
    """`overrides` are dotted keys ({"caption.batch_size": 8, "profile": "tiny"})."""
    return caption_stage(load_config(config_file, root=root, **(overrides or {})))


def caption_stage(config: TamerConfig) -> dict:
    """The stage's tasks, in the calling flow (`caption_flow`, or the pipeline's own run)."""
    check_models(config.profile)
    report = caption(config)
    refresh_catalog(config.root)
    return report
