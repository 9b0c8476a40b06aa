"""The `embed` flow: 1. embed images and captions, 2. export for clip-retrieval, 3. build the
kNN index, 4. flag near-duplicates, 5. group subjects (and score the grouping where ground
truth exists), 6. sample cross-reference pairs, 7. refresh the catalog.

Every step is incremental, so the flow is safe to re-run and to retry.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task

from flows.ingest import refresh_catalog
from storage.shards import ShardStore
from tamer.config import TamerConfig, load_config
from tamer.progress import stage_progress
from tasks import embed as embed_tasks, index as index_tasks, pairs as pair_tasks


@task(retries=2, retry_delay_seconds=5)
def embed(c: TamerConfig) -> dict:
    """CLIP vectors for everything not embedded with this model and config yet."""
    with stage_progress("embed") as update:
        report = embed_tasks.embed_dataset(ShardStore(c.root), c.profile, c.embed, c.ray,
                                           progress=update)
    return asdict(report)


@task(retries=1)
def build_index(c: TamerConfig) -> dict:
    """clip-retrieval export + autofaiss index; skipped when the export did not change."""
    return index_tasks.build_index(ShardStore(c.root), c.profile, c.embed)


@task
def near_duplicates(c: TamerConfig) -> dict:
    """Record image pairs above the near-duplicate cosine threshold."""
    return pair_tasks.record_near_duplicates(ShardStore(c.root), c.profile, c.embed)


@task
def subject_groups(c: TamerConfig) -> dict:
    """Labels where the source has them, kNN proposals elsewhere; plus the grouping score."""
    store = ShardStore(c.root)
    summary = pair_tasks.record_groups(store, c.profile, c.embed)
    return {**summary, "quality": pair_tasks.evaluate_grouping(store, c.profile, c.embed)}


@task
def pairs(c: TamerConfig) -> dict:
    """Cross-reference (reference, target) pairs per subject for training."""
    return pair_tasks.record_pairs(ShardStore(c.root), c.embed)


@flow(name="embed", log_prints=True)
def embed_flow(root: str | None = None, config_file: str | None = None,
               overrides: dict[str, Any] | None = None) -> dict:
    """`overrides` are dotted keys ({"embed.executor": "local", "profile": "tiny"})."""
    return embed_stage(load_config(config_file, root=root, **(overrides or {})))


def embed_stage(config: TamerConfig) -> dict:
    """The stage's tasks, in the calling flow (`embed_flow`, or the pipeline's own run)."""
    report = {"embed": embed(config)}
    report["index"] = build_index(config)
    report["near_duplicates"] = near_duplicates(config)
    report["groups"] = subject_groups(config)
    report["pairs"] = pairs(config)
    refresh_catalog(config.root)
    return report
