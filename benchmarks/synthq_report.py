"""The synth-quality report: `index.html` (targets, table, per-attribute agreement, plot, samples,
timings), `report.md` (the table for the README), an identity-vs-prompt accuracy plot with 95%
intervals, and a sample grid (reference, then each method's images).
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.synthq_measure import MEASURES  # noqa: E402
from tamer.synth_world import KEYS  # noqa: E402

TEMPLATES = Path(__file__).resolve().parent / "templates"

LABELS = {"real": "real renders (oracle ceiling)", "copy_reference": "copy the reference",
          "text_only": "text only (no object)", "ours": "ours (full recipe)",
          "ours_no_crossref": "ours, no cross-reference", "ours_no_idloss": "ours, no identity loss",
          "ours_adapter_only": "ours, adapter only",
          "ours_no_masking": "ours, no object masking", "textual_inversion": "Textual Inversion"}


def _cell(entry: dict, measure: str) -> str:
    low, high = entry[f"{measure}_ci"]
    return f"{entry[measure]:.3f} [{low:.2f}, {high:.2f}]"


def table(summary: dict) -> str:
    """Markdown table: every measure with its interval, and cost per object."""
    head = "| method | " + " | ".join(MEASURES) + " | cost/object (s) | cost/object (bytes) |"
    lines = [head, "|" + "---|" * (len(MEASURES) + 3)]
    for method, entry in summary.items():
        cells = [_cell(entry, m) for m in MEASURES]
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells)
                     + f" | {entry.get('cost_s', 0):.3g} | {entry.get('cost_bytes', 0)} |")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method, entry in summary.items():
        x, y = entry["prompt_acc"], entry["identity_acc"]
        xerr = [[x - entry["prompt_acc_ci"][0]], [entry["prompt_acc_ci"][1] - x]]
        yerr = [[y - entry["identity_acc_ci"][0]], [entry["identity_acc_ci"][1] - y]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=LABELS.get(method, method))
    ax.set_xlabel("prompt accuracy (oracle, scene attributes)")
    ax.set_ylabel("identity accuracy (oracle, identity attributes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_grid(grid: dict[str, list[torch.Tensor]], path: Path, objects: int = 4) -> None:
    """One row per (object, method): the reference first, then that method's images."""
    rows = []
    for k in range(min(objects, len(grid["reference"]))):
        reference = grid["reference"][k][0]
        for method, batches in grid.items():
            if method != "reference":
                rows.append(torch.cat([reference, *batches[k]], dim=2))  # (3, S, S * (1 + n))
    width = max(r.shape[-1] for r in rows)
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows]
    image = ((torch.cat(rows, dim=1).clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).byte().numpy()
    Image.fromarray(np.ascontiguousarray(image)).resize((image.shape[1] * 2, image.shape[0] * 2),
                                                        Image.Resampling.NEAREST).save(path)


# A bootstrap bound of per-object means of 0/1 hits that is 0 in exact arithmetic comes out as
# +-1e-10 in floating point: that is "not above 0".
ABOVE_ZERO = 1e-6


def _difference(entry: dict) -> str:
    low, high = entry["ci"]
    return f"{entry['mean']:+.3f} [{low:+.2f}, {high:+.2f}]"


def targets(summary: dict, differences: dict) -> list[dict]:
    """Issue 14's targets, each with what was measured and whether it was met. "Above" is a
    paired difference over held-out objects whose 95% interval is above 0 (`paired_differences`)."""
    ours, text = summary["ours"], summary["text_only"]
    ti = summary["textual_inversion"]
    ratio = ti["cost_s"] / max(ours["cost_s"], 1e-12)

    def above(other: str) -> dict:
        entry = differences[other]["identity_acc"]
        return {"target": f"ours' identity accuracy above {LABELS[other]} (paired difference, interval above 0)",
                "measured": f"ours - {other}: {_difference(entry)}", "met": entry["ci"][0] > ABOVE_ZERO}

    return [
        above("text_only"), above("textual_inversion"),
        {"target": "prompt accuracy not collapsed: >= 0.8 of text-only's",
         "measured": f"{ours['prompt_acc']:.3f} vs 0.8 x {text['prompt_acc']:.3f} = {0.8 * text['prompt_acc']:.3f}",
         "met": ours["prompt_acc"] >= 0.8 * text["prompt_acc"]},
        {"target": "at >= 1000x lower cost per object than Textual Inversion",
         "measured": f"{ratio:,.0f}x ({ti['cost_s']:.3g} s vs {ours['cost_s']:.3g} s)", "met": ratio >= 1000},
    ]


def difference_table(differences: dict) -> str:
    """Markdown: ours minus each method, per measure, with the paired interval."""
    measures = list(next(iter(differences.values())))
    lines = ["| ours minus | " + " | ".join(measures) + " |", "|" + "---|" * (len(measures) + 1)]
    for other, entries in differences.items():
        lines.append(f"| {LABELS.get(other, other)} | " + " | ".join(_difference(entries[m]) for m in measures) + " |")
    return "\n".join(lines)


def write_report(result: dict, grid: dict[str, list[torch.Tensor]] | None, out: Path) -> Path:
    """Plots, report.md and index.html (and the sample grid, unless `grid` is None: a report
    re-rendered from a run's JSON keeps that run's samples.png); returns the HTML path."""
    plot(result["summary"], out / "accuracy.png")
    if grid is not None:
        sample_grid(grid, out / "samples.png")
    methods = list(result["summary"])
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]))
    html = environment.get_template("synth_quality.html.j2").render(
        r=result, measures=MEASURES, keys=KEYS, labels=LABELS, methods=methods,
        above_zero=ABOVE_ZERO)
    (out / "index.html").write_text(html)
    oracle = ", ".join(f"{k} {v:.3f}" for k, v in result["oracle_accuracy"].items())
    timings = ", ".join(f"{k} {v:.0f}s" for k, v in result["timings_s"].items())
    text = "\n\n".join([
        "# Synth quality benchmark", f"{result['date']}, {result['machine']['platform']}, "
        f"{result['machine']['cpus']} CPUs, torch {result['machine']['torch']}",
        table(result["summary"]),
        "Means over held-out objects with 95% bootstrap intervals (objects are the units).",
        difference_table(result["differences"]),
        "Paired differences: per held-out object, ours minus the method (same objects, prompts and "
        "seeds), mean with its 95% bootstrap interval; above 0 only where the interval is.",
        f"Oracle accuracy on fresh renders: {oracle} (target >= {result['settings']['oracle_target']}: "
        f"{'met' if result['oracle_target_met'] else 'NOT met'}). "
        f"CLIP image->caption top-1: {result['clip_retrieval_top1']:.3f}.",
        f"Timings: {timings}.", "![accuracy](accuracy.png)",
        f"Samples, per object, rows = {', '.join(methods)}; the reference is the first column.",
        "![samples](samples.png)"])
    (out / "report.md").write_text(text + "\n")
    return out / "index.html"
