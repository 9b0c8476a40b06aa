"""Runs tab: the run registry (as `tamer runs` reads it), the table versions each run trained
on (`tamer runs show`), its loss curve and its evaluation reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tamer.app.reader import AppContext

LOSS_TERMS = ("loss", "diffusion", "identity")


def registry(ctx: AppContext) -> list[dict[str, Any]]:
    """One row per run, newest first: what `tamer runs` shows, plus the profile."""
    from tasks.runs import list_runs

    rows = []
    for run in list_runs(ctx.store):
        minutes = ((run["ended_at"] - run["started_at"]).total_seconds() / 60
                   if run["ended_at"] else None)
        loss = json.loads(run["final_metrics"] or "{}").get("loss")
        rows.append({"run": run["run_id"], "status": run["status"],
                     "profile": json.loads(run["config"]).get("profile", ""),
                     "step": run["step"], "dataset": run["dataset_fingerprint"],
                     "started": f"{run['started_at']:%Y-%m-%d %H:%M}",
                     "minutes": round(minutes, 1) if minutes is not None else None,
                     "loss": round(loss, 4) if isinstance(loss, float) else None,
                     "error": run["error"]})
    return rows


def versions(ctx: AppContext, run_id: str) -> list[dict[str, Any]]:
    """The version of every table the run read (its pins)."""
    from tasks.runs import get_run

    run = get_run(ctx.store, run_id)
    pins = run["table_versions"] if run else {}
    return [{"table": table, "version": "no commit yet" if version < 0 else str(version)}
            for table, version in sorted(pins.items())]


def loss_curve(ctx: AppContext, run_id: str) -> list[dict[str, Any]]:
    """Long-format rows (step, term, value) of the run's training metrics, for a line plot."""
    from tasks.runs import read_metrics

    return [{"step": row["step"], "term": term, "value": row[term]}
            for row in read_metrics(ctx.store, run_id) for term in LOSS_TERMS]


def reports(ctx: AppContext, run_id: str) -> list[dict[str, Any]]:
    """The evaluations of this run, newest first, with the path of each HTML report."""
    from tasks.evaluate import report_dir

    found = ctx.rows("SELECT eval_run_id, max(created_at) AS evaluated_at, "
                     "count(DISTINCT method) AS methods FROM eval_results "
                     "WHERE model_run_id = ? GROUP BY 1 ORDER BY 2 DESC", [run_id])
    for row in found:
        path = f"{report_dir(ctx.store, row['eval_run_id'])}/index.html"
        row["report"] = path if ctx.store.location.fs.exists(path) else None
    return found


def reports_dir(ctx: AppContext) -> Path | None:
    """The folder the server may hand report files from (local roots only)."""
    from tasks.evaluate import REPORTS

    location = ctx.store.location
    return Path(location.join(REPORTS)) if location.is_local else None


def report_links(ctx: AppContext, run_id: str) -> str:
    """Markdown: one line per evaluation, linking its report where the server can hand it."""
    found = reports(ctx, run_id)
    if not found:
        return "not evaluated yet (`tamer eval` or `tamer run` writes a report)"
    lines = ["Evaluation reports:"]
    for row in found:
        when = f"{row['evaluated_at']:%Y-%m-%d %H:%M}"
        target = (f"[{row['eval_run_id']}](/gradio_api/file={row['report']})"
                  if row["report"] and reports_dir(ctx) else f"`{row['eval_run_id']}`")
        lines.append(f"- {target}: {row['methods']} method(s), {when}")
    return "\n".join(lines)


def build(ctx: AppContext, demo) -> None:
    """The tab's components and events, inside `demo` (a `gr.Blocks`), refreshed on load."""
    import gradio as gr
    import pandas as pd

    from tasks.runs import COMPLETED

    columns = ["run", "status", "profile", "step", "dataset", "started", "minutes", "loss",
               "error"]
    table = gr.Dataframe(label="Run registry (tamer runs)", interactive=False,
                         elem_id="runs-table")
    run = gr.Dropdown(label="Run", choices=[], elem_id="runs-run")
    with gr.Row():
        pins = gr.Dataframe(label="Table versions it trained on (tamer runs show)",
                            interactive=False)
        curve = gr.LinePlot(x="step", y="value", color="term", label="Training loss",
                            elem_id="loss-curve")
    evaluations = gr.Markdown(elem_id="reports")

    def on_load():
        rows = registry(ctx)
        shown = next((r["run"] for r in rows if r["status"] == COMPLETED),
                     rows[0]["run"] if rows else None)  # the run Customize uses by default
        return (pd.DataFrame(rows, columns=columns),
                gr.Dropdown(choices=[r["run"] for r in rows], value=shown))

    def on_run(run_id: str | None):
        if not run_id:
            return pd.DataFrame(columns=["table", "version"]), None, ""
        return (pd.DataFrame(versions(ctx, run_id), columns=["table", "version"]),
                pd.DataFrame(loss_curve(ctx, run_id), columns=["step", "term", "value"]),
                report_links(ctx, run_id))

    demo.load(on_load, None, [table, run], show_progress="hidden")
    run.change(on_run, run, [pins, curve, evaluations])
