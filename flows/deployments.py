"""Deployments from `prefect.yaml`, the one place they are defined, for `tamer serve`.

`prefect deploy --all` reads the same file for work-pool based runs; serving builds the same
deployments (schedules, triggers, parameters) in-process with `flow.to_deployment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.flows import load_flow_from_entrypoint

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["deployments"]


def build(spec: dict[str, Any], parameters: dict[str, Any] | None = None) -> RunnerDeployment:
    """One RunnerDeployment; `parameters` override the file's defaults (e.g. root)."""
    entrypoint = str(Path(__file__).resolve().parents[1] / spec["entrypoint"].split(":")[0])
    flow = load_flow_from_entrypoint(f"{entrypoint}:{spec['entrypoint'].split(':')[1]}")
    accepted = set(flow.parameters.properties)
    # The server merges these defaults into every run, the triggered ones included.
    merged = {**spec.get("parameters", {}), **(parameters or {})}
    triggers = [DeploymentEventTrigger(**trigger) for trigger in spec.get("triggers", [])]
    schedules = [CronSchedule(cron=s["cron"], timezone=s.get("timezone", "UTC"))
                 for s in spec.get("schedules", [])]
    return flow.to_deployment(
        name=spec["name"],
        description=spec.get("description"),
        parameters={k: v for k, v in merged.items() if k in accepted},
        schedules=schedules or None,
        triggers=triggers or None,
        concurrency_limit=spec.get("concurrency_limit"),
    )


def build_all(only: list[str] | None = None,
              parameters: dict[str, Any] | None = None) -> list[RunnerDeployment]:
    specs = deployment_specs()
    names = {spec["name"] for spec in specs}
    unknown = set(only or []) - names
    if unknown:
        raise ValueError(f"unknown deployment(s) {sorted(unknown)}; known: {sorted(names)}")
    return [build(spec, parameters) for spec in specs if not only or spec["name"] in only]
