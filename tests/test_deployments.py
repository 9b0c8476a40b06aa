"""prefect.yaml stays true: every entrypoint imports, every deployment builds."""

from __future__ import annotations

import importlib

import pytest

from flows.deployments import build, deployment_specs

SPECS = deployment_specs()


@pytest.mark.parametrize("spec", SPECS, ids=[s["name"] for s in SPECS])
def test_entrypoint_imports_and_deployment_builds(spec):
    module_path, function = spec["entrypoint"].split(":")
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    assert callable(getattr(module, function))
    deployment = build(spec, {"root": "/data/root"})
    assert deployment.name == spec["name"]
    assert deployment.parameters.get("root") == "/data/root"
    assert len(deployment.triggers) == len(spec.get("triggers", []))
    assert len(deployment.schedules) == len(spec.get("schedules", []))


def test_event_chain_is_closed():
    """Every event a trigger expects is one our flows emit."""
    from flows import events

    emitted = {events.DATASET_COMMITTED, events.RETRAIN_REQUESTED, events.TRAINING_COMPLETED}
    expected = {e for s in SPECS for t in s.get("triggers", []) for e in t["expect"]}
    assert expected <= emitted
