"""The `refresh` flow, run when new data is committed: 1. caption, 2. embed/index/pairs,
3. the retrain gate, which requests training (a Prefect event) when enough has changed."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, task

from flows.caption import caption_flow
from flows.embed import embed_flow
from flows.events import emit_retrain_requested
from storage.shards import ShardStore
from tamer.config import load_config
from tasks.retrain_policy import judge


@task
def retrain_gate(root: str, config_file: str | None) -> dict:
    """Judge the change since the last trained dataset version; request a retrain if due."""
    config = load_config(config_file, root=root)
    facts, decision = judge(ShardStore(config.root), config.retrain)
    if decision.retrain:
        emit_retrain_requested(config.root, facts.fingerprint, decision.added,
                               decision.fraction, decision.reason)
    print(f"retrain gate: {'REQUEST' if decision.retrain else 'skip'} - {decision.reason}")
    return {"fingerprint": facts.fingerprint, **asdict(decision)}


@flow(name="refresh", log_prints=True)
def refresh_flow(root: str | None = None, config_file: str | None = None,
                 profile: str | None = None) -> dict:
    config = load_config(config_file, root=root, profile=profile)
    captions = caption_flow(config.root, config_file, config.profile)
    embeddings = embed_flow(config.root, config_file, config.profile)
    gate = retrain_gate(config.root, config_file)
    return {"caption": captions, "embed": embeddings, "retrain_gate": gate}
