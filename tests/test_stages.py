"""Stage flows inside a parent flow run as its subflows, without a heartbeat thread of their own."""

from __future__ import annotations

from prefect import flow
from prefect.context import FlowRunContext
from prefect.settings import get_current_settings

from flows.stages import run_stage


@flow
def _stage(value: int) -> dict:
    run = FlowRunContext.get().flow_run
    return {"value": value, "parent_task_run_id": run.parent_task_run_id,
            "heartbeat": get_current_settings().flows.heartbeat_frequency}


@flow
def _parent() -> dict:
    before = get_current_settings().flows.heartbeat_frequency
    inside = run_stage(_stage, 7)
    return {"before": before, "inside": inside, "after": get_current_settings().flows.heartbeat_frequency}


def test_a_stage_runs_as_a_subflow_that_beats_through_its_parent(prefect_server):
    result = _parent()
    assert result["inside"]["value"] == 7
    assert result["inside"]["parent_task_run_id"] is not None  # a subflow of the parent's run
    assert result["inside"]["heartbeat"] is None  # no heartbeat thread of its own
    assert result["before"] == result["after"] is not None  # the parent's (and later flows') beat
