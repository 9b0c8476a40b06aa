"""The HTML report of one evaluation run: `<root>/reports/<eval_run_id>/index.html`, with its
plots and images beside it.

It shows mean CLIP-I / CLIP-T / DINO per method with 95% intervals (percentile bootstrap over
subjects: subjects, not images, are the independent units), a fidelity-vs-alignment scatter,
the cost per subject (seconds and bytes, log scale), and per-subject grids: the real images,
then every method's images for the same prompts and seeds.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")  # headless: flows run without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.profiles import load_profile, weights_origin  # noqa: E402
from storage.shards import ShardStore  # noqa: E402
from tamer.config import EvalSettings  # noqa: E402
from tasks.evaluate import REFERENCE, read_results, report_dir  # noqa: E402
from tasks.methods import METHODS  # noqa: E402

METRICS = ("dino", "clip_i", "clip_t")
ORACLE_METRICS = ("identity_acc", "prompt_acc")  # synth subjects with a profile oracle only
LABELS = {"dino": "DINO", "clip_i": "CLIP-I", "clip_t": "CLIP-T", "identity_acc": "identity acc",
          "prompt_acc": "prompt acc"}
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
GRID_COLUMNS = 8  # generated images shown per subject and method


def bootstrap_interval(values: np.ndarray, resamples: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of `values` (one per subject)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def display(method: str) -> dict[str, str]:
    """A method's label, colour and what it stores, from the registry; a method since removed
    from it shows under its name."""
    known = METHODS.get(method)
    if known is None:
        return {"label": method, "color": "gray", "stores": "?"}
    return {"label": known.label, "color": known.color, "stores": known.stores}


def measured(rows: list[dict]) -> tuple[str, ...]:
    """The metrics these rows carry: the oracle's only where some row has them."""
    return METRICS + tuple(m for m in ORACLE_METRICS if any(row.get(m) is not None for row in rows))


def summarize(rows: list[dict], resamples: int) -> list[dict]:
    """Per method: each metric's mean over subjects (of per-subject means) with its interval, and
    the mean cost per subject."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    summary = []
    for method, group in by_method.items():
        entry = {"method": method, **display(method), "images": len(group),
                 "subjects": len({row["subject"] for row in group})}
        for metric in measured(rows):
            per_subject = _per_subject_means(group, metric)
            entry[metric] = float(per_subject.mean()) if len(per_subject) else None
            entry[f"{metric}_ci"] = bootstrap_interval(per_subject, resamples) if len(per_subject) else None
        prepare = {row["subject"]: row["prepare_s"] for row in group if row["prepare_s"] is not None}
        stored = {row["subject"]: row["subject_bytes"] for row in group if row["subject_bytes"] is not None}
        generate = [row["generate_s"] for row in group if row["generate_s"] is not None]
        entry["prepare_s"] = float(np.mean(list(prepare.values()))) if prepare else None
        entry["bytes"] = float(np.mean(list(stored.values()))) if stored else None
        entry["generate_s"] = float(np.mean(generate)) if generate else None
        summary.append(entry)
    order = list(METHODS)
    return sorted(summary, key=lambda e: order.index(e["method"]) if e["method"] in order else len(order))


def _per_subject_means(rows: list[dict], metric: str) -> np.ndarray:
    values: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.get(metric) is not None and not np.isnan(row[metric]):
            values[row["subject"]].append(row[metric])
    return np.array([np.mean(v) for _, v in sorted(values.items())])


def plot_fidelity_alignment(summary: list[dict]) -> bytes:
    """DINO and CLIP-I (fidelity) against CLIP-T (alignment), one point per method with its
    intervals; the real images have no CLIP-T, so their fidelity is a dashed ceiling line."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, metric in zip(axes, ("dino", "clip_i")):
        for entry in summary:
            color = entry["color"]
            if entry[metric] is None:
                continue
            if entry["clip_t"] is None:  # real images: a ceiling, not a point
                ax.axhline(entry[metric], color=color, linestyle="--", linewidth=1, label=entry["label"])
                continue
            x, y = entry["clip_t"], entry[metric]
            xerr = _error(x, entry["clip_t_ci"])
            yerr = _error(y, entry[f"{metric}_ci"])
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=3, label=entry["label"])
        ax.set_xlabel("CLIP-T (text alignment) →")
        ax.set_ylabel(f"{LABELS[metric]} (subject fidelity) →")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle("Fidelity vs. alignment (mean over subjects, 95% bootstrap intervals)", fontsize=10)
    return _png(fig)


def _error(value: float, interval: tuple[float, float] | None):
    if not interval or np.isnan(interval[0]):
        return None
    return [[max(value - interval[0], 0.0)], [max(interval[1] - value, 0.0)]]


def plot_cost(summary: list[dict]) -> bytes:
    """Seconds to customize one subject and bytes stored per subject, per method, log scale."""
    entries = [e for e in summary if e["prepare_s"] is not None]
    if not entries:  # e.g. only the real images were evaluated: nothing is customized
        fig, ax = plt.subplots(figsize=(10, 1.2))
        ax.text(0.5, 0.5, "no evaluated method customizes per subject", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 * len(entries) + 1.6))
    for ax, key, unit in ((axes[0], "prepare_s", "s"), (axes[1], "bytes", "B")):
        labels = [e["label"] for e in entries]
        values = [max(e[key], 1e-6) for e in entries]
        ax.barh(labels, values, color=[e["color"] for e in entries])
        ax.set_xscale("log")
        ax.invert_yaxis()
        for y, value in enumerate(values):
            ax.text(value, y, f" {_human(value, unit)}", va="center", fontsize=8)
        ax.set_xlim(min(values) / 3, max(values) * 30)  # room for the value labels
        ax.set_title("seconds to customize per subject" if key == "prepare_s" else "bytes stored per subject",
                     fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[1].set_yticklabels([])
    return _png(fig)


def _human(value: float, unit: str) -> str:
    if unit == "B":
        for step, prefix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= step:
                return f"{value / step:.1f} {prefix}"
        return f"{value:.0f} B"
    return f"{value:.3g} s"


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def grids(rows: list[dict], store: ShardStore, out: str) -> list[dict]:
    """Per subject: its real images, then each generating method's first GRID_COLUMNS images,
    column k being the same (prompt, seed) for every method."""
    subjects: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["subject"], r["prompt_index"], r["seed"])):
        entry = subjects.setdefault(row["subject"], {"name": row["subject"], "class_name": row["class_name"],
                                                     "columns": [], "methods": defaultdict(list)})
        if row["method"] == "real":
            continue
        key = (row["prompt"], row["seed"])
        if key not in entry["columns"]:
            entry["columns"].append(key)
        if entry["columns"].index(key) < GRID_COLUMNS:
            entry["methods"][row["method"]].append(row["image_path"])
    for entry in subjects.values():
        folder = f"{out}/images/{REFERENCE}/{entry['name']}"
        names = sorted(store.fs.ls(folder, detail=False)) if store.fs.exists(folder) else []
        entry["references"] = [f"images/{REFERENCE}/{entry['name']}/{n.rsplit('/', 1)[-1]}" for n in names]
        entry["columns"] = entry["columns"][:GRID_COLUMNS]
        entry["methods"] = [(display(m)["label"], paths) for m, paths in entry["methods"].items()]
    return list(subjects.values())


def protocol(rows: list[dict], settings: EvalSettings) -> dict:
    """The settings a reader needs to interpret the numbers."""
    profile = load_profile(rows[0]["profile"])
    return {"weights": weights_origin(rows[0]["profile"]), "subjects": len({row["subject"] for row in rows}),
            "prompts": len({(row["prompt_index"]) for row in rows}), "seeds": settings.seeds,
            "steps": settings.steps, "scheduler": profile.own("sampler", settings.scheduler),
            "guidance_scale": profile.own("guidance_scale", settings.guidance_scale),
            "object_guidance_scale": profile.own("object_guidance_scale", settings.object_guidance_scale),
            "recipe_steps": {METHODS[name].label: settings.method_settings(name).steps
                             for name in settings.methods if hasattr(settings.method_settings(name), "steps")}}


def write_report(store: ShardStore, eval_run_id: str, settings: EvalSettings) -> str:
    """Render the report of `eval_run_id`; returns the path of its index.html."""
    rows = read_results(store, eval_run_id)
    if not rows:
        raise ValueError(f"no eval_results rows for {eval_run_id}")
    out = report_dir(store, eval_run_id)
    resamples, info = settings.bootstrap, protocol(rows, settings)
    summary = summarize(rows, resamples)
    files = {"fidelity_alignment.png": plot_fidelity_alignment(summary), "cost.png": plot_cost(summary)}
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]))
    html = environment.get_template("eval_report.html.j2").render(
        eval_run_id=eval_run_id, info=info, summary=summary, metrics=measured(rows), labels=LABELS,
        grids=grids(rows, store, out), first=rows[0], human=_human, resamples=resamples)
    files["index.html"] = html.encode()
    store.fs.makedirs(out, exist_ok=True)
    for name, data in files.items():
        with store.fs.open(f"{out}/{name}", "wb") as handle:
            handle.write(data)
    return f"{out}/index.html"
