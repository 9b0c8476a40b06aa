"""The `refresh` flow, run when new data is committed: 1. caption, 2. embed/index/pairs,
3. the retrain gate, which requests training (a Prefect event) when enough has changed.

The gate debounces (tasks/retrain_policy.py): a deferred decision schedules one run of the
`retrain-gate` deployment at the window's end, which judges again with `due` set. Without that
deployment on the server nothing could run later, so the gate falls back to a rate limit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                            FlowRunFilterState, FlowRunFilterStateType)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows.caption import caption_stage
from flows.embed import embed_stage
from flows.events import emit_retrain_requested
from model.profiles import shared_roles
from storage.shards import ShardStore
from tamer.config import TamerConfig, load_config
from tasks.retrain_policy import judge

GATE_DEPLOYMENT = "retrain-gate/retrain-gate"  # flow name / deployment name (prefect.yaml)


@task
def retrain_gate(config: TamerConfig, config_file: str | None, overrides: dict[str, Any] | None,
                 due: bool = False) -> dict:
    """Judge the change since the last trained dataset version; request a retrain if due,
    or schedule one re-evaluation when deferred (with the same configuration)."""
    scheduled = scheduled_gate_runs(config.root)
    facts, decision = judge(ShardStore(config.root), config.retrain, due=due,
                            can_defer=scheduled is not None,
                            pending_until=min(scheduled) if scheduled else None)
    if decision.retrain:
        emit_retrain_requested(config.root, facts.fingerprint, decision.added,
                               decision.fraction, decision.reason)
    elif decision.defer_until and not scheduled:
        run_deployment(GATE_DEPLOYMENT, parameters={"root": config.root, "config_file": config_file,
                                                    "overrides": overrides, "due": True},
                       scheduled_time=decision.defer_until, timeout=0, as_subflow=False)
    action = "REQUEST" if decision.retrain else "defer" if decision.defer_until else "skip"
    print(f"retrain gate: {action} - {decision.reason}")
    return {"fingerprint": facts.fingerprint, **asdict(decision)}


def scheduled_gate_runs(root: str) -> list[dt.datetime] | None:
    """Start times of the gate runs scheduled for `root`; None when the gate deployment is absent."""
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(GATE_DEPLOYMENT)
        except ObjectNotFound:
            return None
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING]))))
    return [run.expected_start_time for run in runs if run.parameters.get("root") == root]


@flow(name="retrain-gate", log_prints=True)
def retrain_gate_flow(root: str | None = None, config_file: str | None = None,
                      overrides: dict[str, Any] | None = None, due: bool = False) -> dict:
    """The gate alone: the re-evaluation a deferred decision schedules."""
    return retrain_gate(load_config(config_file, root=root, **(overrides or {})), config_file,
                        overrides, due)


@flow(name="refresh", log_prints=True)
def refresh_flow(root: str | None = None, config_file: str | None = None,
                 overrides: dict[str, Any] | None = None) -> dict:
    """`overrides` are dotted keys, passed on to every stage."""
    config = load_config(config_file, root=root, **(overrides or {}))
    with shared_roles():  # caption's CLIP is embed's when the new data is embedded in this process
        captions = caption_stage(config)
        embeddings = embed_stage(config)
    gate = retrain_gate(config, config_file, overrides)
    return {"caption": captions, "embed": embeddings, "retrain_gate": gate}
