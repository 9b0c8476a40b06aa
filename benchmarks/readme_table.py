"""Regenerate the README's benchmark table from the JSON results, so every figure quoted there
has the file it came from.

    python -m benchmarks.readme_table [--results benchmarks/results] [--readme README.md] [--check]

Rewrites the block between `<!-- bench:start -->` and `<!-- bench:end -->` in the README: one
row per `<results>/*.json`, in file-name order, with the benchmark's headline figures (median
[min, max] over interleaved repetitions; ratios with their paired bootstrap interval), its
target, the file, the date and the machine. `--check` rewrites nothing and exits 1 when the
README is not what the files say (for CI).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ROOT = Path(__file__).resolve().parents[1]


def spread(s: dict[str, Any], unit: str = "", scale: float = 1.0) -> str:
    """`median [min, max] unit` of a `common.summary`."""
    return (f"{s['median'] * scale:.3g} [{s['min'] * scale:.3g}, {s['max'] * scale:.3g}]"
            f"{' ' + unit if unit else ''}")


def ratio(p: dict[str, Any]) -> str:
    """A `common.paired` comparison: the median per-round ratio and the difference interval."""
    low, high = p["difference_interval"]
    return f"{p['ratio_median']:.3g} (difference {p['difference_mean']:.3g} [{low:.3g}, {high:.3g}])"


def rates(values: dict[str, Any], names: dict[str, str], unit: str = "") -> str:
    """`name median [min, max]` for each key of `names` the file has, in its order."""
    return ", ".join(f"{name} {spread(values[key], unit)}" for key, name in names.items() if key in values)


def _caption(r: dict) -> tuple[str, str]:
    ceiling = f"ceiling ({r['actors']} actors x {r['torch_threads_per_actor']} thread)"
    shown = rates(r["images_per_s"], {"b_pipeline": "pipeline", "b_steady": "pipeline steady", "a_naive": "naive",
                                      "c_ceiling": ceiling})
    steady = f"; steady / ceiling {ratio(r['b_steady_vs_c'])}" if "b_steady_vs_c" in r else ""
    return (f"images/s: {shown}; pipeline / naive {ratio(r['b_vs_a'])}; pipeline / ceiling {ratio(r['b_vs_c'])}"
            f"{steady}", r["targets"])


def _ingest(r: dict) -> tuple[str, str]:
    shown = rates(r["images_per_s"], {"c_ingest": "ingest", "b_ceiling_parallel": "parallel ceiling"})
    return (f"{r['images']} images at {r['size']} px, {r['workers']} workers, images/s: {shown}; "
            f"ratio {ratio(r['ingest_vs_parallel_ceiling'])}", r["target"])


def _knn(r: dict) -> tuple[str, str]:
    shown = rates(r["p50_ms"], {"search_embedding": "`tamer search` call", "back_alone": "back alone",
                                "direct_faiss": "faiss", "cli_text": "CLI process"})
    return f"{r['vectors']:,} vectors, p50 ms: {shown}", "reported"


def _stats(r: dict) -> tuple[str, str]:
    rows = min(r["rows"].values())
    whole = r["seconds"].get("whole_stats")
    return (f"{rows:,}+ rows in each of {len(r['rows'])} tables; slowest {r['slowest']} "
            f"{spread(r['seconds'][r['slowest']], 's')}"
            + (f"; all of `tamer stats` {spread(whole, 's')}" if whole else ""), "each < 1 s")


def _incremental(r: dict) -> tuple[str, str]:
    data = r["data_stages_seconds"]
    target = r.get("against_target")
    versus = (f"; second - 0.15 x first [{target['difference_interval'][0]:.3g}, "
              f"{target['difference_interval'][1]:.3g}] s" if target else "")
    return (f"data stages {spread(data['first'], 's')} -> {spread(data['second'], 's')}: "
            f"{ratio(r['data_stages_ratio'])}{versus}; each run its own process", r["target"])


def _gpu(r: dict) -> tuple[str, str]:
    s = r["sections"]
    parts = [f"{r['machine'].get('cuda') or 'CPU (dry run)'}, {r['shapes']}"]
    if "train" in s:
        parts.append(f"ours {spread(s['train']['ours_steps_per_s'], 'steps/s')}, Ray Train / bare "
                     f"{ratio(s['train']['ray_vs_bare'])}")
    if "baselines" in s:
        parts += [f"{k} {spread(v, 'steps/s')}" for k, v in s["baselines"]["steps_per_s"].items()]
    if "sampling" in s:
        parts.append(f"sampling {spread(s['sampling']['seconds_per_image'], 's/image')}")
    if "embed" in s:
        parts.append(f"CLIP embed {spread(s['embed']['images_per_s']['with_preprocessing'])} "
                     f"images/s")
    if r.get("errors"):
        parts.append(f"failed: {', '.join(sorted(r['errors']))}")
    return "; ".join(parts), "reported"


def _embed(r: dict) -> tuple[str, str]:
    shown = rates(r["images_per_s"], {"pipeline_steady": "pipeline steady", "pipeline_end_to_end": "end to end",
                                      "ceiling_model_only": "ceiling"})
    vs = (f"steady / ceiling {ratio(r['steady_vs_ceiling'])}" if "steady_vs_ceiling" in r
          else f"end to end / ceiling {ratio(r['end_to_end_vs_ceiling'])}")
    return f"CLIP {r['clip']}, {r['images']} images, images/s: {shown}; {vs}", r["target"]


def _embed_peer(r: dict) -> tuple[str, str]:
    ips = r["images_per_s"]
    shown = rates(ips, {"tamer_embed": "`tamer embed`", "clip_inference": "`clip-retrieval inference`"})
    return (f"{r['images']} images, whole commands, images/s: {shown} (+ index "
            f"{spread(ips['clip_inference_and_index'])}); ratio {ratio(r['tamer_vs_clip_inference'])}, "
            f"with index {ratio(r['tamer_vs_clip_inference_and_index'])}", r["target"])


def _ingest_peer(r: dict) -> tuple[str, str]:
    h = r["hostile"]
    shown = rates(r["images_per_s"], {"tamer_ingest": "`tamer ingest`", "ray_data": "Ray Data read/write"})
    return (f"{r['images']} images at {r['size']} px, whole commands, images/s: {shown}; ratio "
            f"{ratio(r['tamer_vs_ray_data'])}; hostile folder ({h['entries']} entries): tamer "
            f"exit {h['tamer']['exit']}, {h['tamer'].get('quarantined')} quarantined; Ray Data "
            f"exit {h['ray_data']['exit']}", r["target"])


def _customization_peer(r: dict) -> tuple[str, str]:
    sps, rss, loads = r["steps_per_s"], r["peak_rss_mib"], r["loads"]
    parts = [f"{r['method']}, {r['steps']} steps at {r['resolution']} px, batch {r['batch']}, "
             f"1 thread{' (quick)' if r['quick'] else ''}, steps/s whole command: project "
             f"{spread(sps['project'])}"]
    if "peer" in sps:
        startup = r["steps_per_s_without_startup"]
        parts[0] += (f", `{r['peer_script']['file']}` {spread(sps['peer'])}; ratio "
                     f"{ratio(r['project_vs_peer']['whole_command'])}")
        if startup:
            parts.append(f"without start-up: project {spread(startup['project'])}, peer "
                         f"{spread(startup['peer'])}; ratio "
                         f"{ratio(r['project_vs_peer']['without_startup'])}")
        parts.append(f"peak RSS: project {spread(rss['project'], 'GiB', 1 / 1024)}, peer "
                     f"{spread(rss['peer'], 'GiB', 1 / 1024)}")
    else:
        parts.append(f"peak RSS {spread(rss['project'], 'GiB', 1 / 1024)}; no peer script given")
    parts.append("loaded back: " + ", ".join(f"{side} {'yes' if v['loads'] else 'NO'}"
                                             for side, v in loads.items()))
    return "; ".join(parts), r["target"]


def _train(r: dict) -> tuple[str, str]:
    parts = [f"{device} ({'fp32' if f['mixed_precision'] == 'no' else f['mixed_precision']}): Ray {spread(f['samples_per_s']['ray'])} vs bare "
             f"{spread(f['samples_per_s']['bare'])} samples/s, ratio {ratio(f['ray_vs_bare'])}"
             for device, f in r["figures"].items()]
    return "; ".join(parts), ">= 0.85"


def _customization(r: dict) -> tuple[str, str]:
    s = r["seconds"]
    return (f"seconds per object: ours {spread(s['ours'])}, TI {spread(s['textual_inversion'])}, "
            f"LoRA {spread(s['dreambooth_lora'])}; TI / ours {ratio(r['ti_over_ours'])}",
            ">= 1000x vs TI")


def _left_to_do(r: dict) -> tuple[str, str]:
    small, large = (str(n) for n in (min(r["sizes"]), max(r["sizes"])))
    s, c, many = r["seconds"], r["commit_seconds"], r["versions"]
    parts = [f"{r['new']} new rows; s at {int(small):,} -> {int(large):,} rows, after (before): " + ", ".join(
        f"{what} {spread(s[small][f'{what}_after'])} -> {spread(s[large][f'{what}_after'])} "
        f"({spread(s[small][f'{what}_before'])} -> {spread(s[large][f'{what}_before'])})"
        for what in ("caption_left", "embed_left", "caption_noop", "embed_noop"))]
    parts.append(f"one commit, s, at 1 -> {many:,} versions: " + ", ".join(
        f"{table} {spread(c[f'commit_{table}_at_1_versions'])} -> {spread(c[f'commit_{table}_at_{many}_versions'])}"
        for table in ("captions", "images")))
    return "; ".join(parts), "grows with new data, not with table size"


def _base_curve(r: dict) -> tuple[str, str]:
    shown = ("shape", "background", "position", "scale", "rotation", "lighting")
    return ("oracle reading of the base's text-only samples (EMA) by step: " + "; ".join(
        f"{p['step']}: " + ", ".join(f"{key} {p['accuracy'][key]:.2f}" for key in shown) for p in r["curve"]),
        ", ".join(f"{key} >= {bar}" for key, bar in r["bars"].items()))


def _base_sampler(r: dict) -> tuple[str, str]:
    def row(name: str, entry: dict) -> str:
        return f"{name} ({entry['samples']} samples): " + ", ".join(
            f"{key} {entry['accuracy']['ddim'][key]:.2f} -> {entry['accuracy']['default'][key]:.2f} "
            f"({d['mean']:+.3f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}])"
            for key, d in entry["default_minus_ddim"].items())
    setup = f"text-only, {r['settings']['steps']} steps, guidance {r['settings']['guidance']:g}, DDIM -> the base's own DDPM"
    return (f"{setup}; " + "; ".join(row(name, entry) for name, entry in r["sets"].items()),
            "shape >= 0.7, every scene attribute >= 0.9 (#14)")


def _base_probe(r: dict) -> tuple[str, str]:
    shown = ("shape", "background", "position", "scale", "rotation", "lighting")
    setup = f"scenes {r['scenes']}, object weight {r['object_weight']:g}, {r['training_rows']} training renders"
    return (f"{setup}; oracle reading by step: " + "; ".join(
        f"{p['step']}: " + ", ".join(f"{key} {p['accuracy'][key]:.2f}" for key in shown) for p in r["curve"]),
        "compared with `base_curve` at equal steps (a probe, not a bar)")


def _base_conditioning(r: dict) -> tuple[str, str]:
    gaps = r["gaps"]["600"]
    return ("relative loss increase at t=600 with one prompt word swapped, mean [95% interval]: " + ", ".join(
        f"{key} {g['difference_mean']:+.3f} [{g['difference_interval'][0]:+.3f}, {g['difference_interval'][1]:+.3f}]"
        for key, g in gaps.items()), "every attribute above 0 (the word is heard)")


def _shape_check(r: dict) -> tuple[str, str]:
    return ("; ".join(
        f"{name} ({c['family']}, {c['unet_parameters'] / 1e6:.0f} M UNet incl. object attention, {c['dtype']}, "
        f"{c['resolution']} px): {'ok' if c['ok'] else 'FAILED'}, train step {c['seconds']['train_step']:.1f} s, "
        f"sample step {c['seconds']['sample_step']:.1f} s, peak RSS {c['peak_rss_gb']:.1f} GB"
        for name, c in r["checks"].items()), "every real architecture trains and samples (random weights)")


def _synth_quality(r: dict) -> tuple[str, str]:
    summary, differences = r["summary"], r["differences"]
    def cell(method: str, measure: str) -> str:
        low, high = summary[method][f"{measure}_ci"]
        return f"{summary[method][measure]:.3f} [{low:.2f}, {high:.2f}]"
    def gain(other: str) -> str:
        d = differences[other]["identity_acc"]
        return f"ours - {other} {d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
    methods = ("ours", "text_only", "textual_inversion")
    return (f"{summary['ours']['objects']} held-out objects, mean [95% interval]: identity "
            + ", ".join(f"{m} {cell(m, 'identity_acc')}" for m in methods) + "; prompt "
            + ", ".join(f"{m} {cell(m, 'prompt_acc')}" for m in methods) + "; paired: "
            + ", ".join(gain(m) for m in ("text_only", "textual_inversion")),
            "ours - text-only and ours - TI identity intervals above 0; ours prompt >= 0.8 x text-only")


def _curves(curves: dict[str, list[dict]], reading: Callable[[dict], str]) -> str:
    """Learning curves, one per model: each mark's step and `reading`, then the training seconds."""
    return "; ".join(f"{name}: " + ", ".join(f"{p['step']} {reading(p)}" for p in points)
                     + f" ({points[-1]['train_s']:.0f} s)" for name, points in curves.items())


def _vit_shape_curve(r: dict) -> tuple[str, str]:
    return (f"held-out shape accuracy by step, shape label only, {r['training_renders']} renders, one run each "
            f"(chance {r['chance']:.2f}): " + _curves(r["curves"], lambda p: f"{p['accuracy']:.2f}"),
            "reported: the steps a ViT role needs to read shape")


def _tower_curve(r: dict) -> tuple[str, str]:
    return (f"CLIP's tower phase, held-out shape / mean of ten labels by step, {r['training_renders']} renders, "
            f"one run each: " + _curves(r["curves"], lambda p: f"{p['accuracy']['shape']:.2f}/{p['mean']:.2f}"),
            "reported: what a conv stem gives the ViT towers (#14's 0.8 zero-shot bars)")


def _captioner_vocab_cost(r: dict) -> tuple[str, str]:
    s, minutes = r["seconds_per_step"], r["phase_minutes"]
    return (f"captioning step at {r['settings']['threads']} thread(s), batch {r['batch']}: BERT's "
            f"{r['vocab_size']['bert']} tokens {spread(s['bert'], 's')}, the captions' {r['vocab_size']['captions']} "
            f"{spread(s['captions'], 's')}; captions / BERT {ratio(r['comparisons']['captions / bert'])}; the "
            f"phase's {r['recipe_steps']} steps {minutes['bert']:.1f} -> {minutes['captions']:.1f} min",
            "reported: the from-scratch budget (#14, about 150 min)")


FORMATTERS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "caption_throughput": _caption, "ingest_throughput": _ingest, "knn_latency": _knn,
    "stats_queries": _stats, "incremental_cost": _incremental, "gpu_check": _gpu,
    "embed_throughput": _embed, "embed_peer": _embed_peer, "ingest_peer": _ingest_peer,
    "train_throughput": _train, "ti_peer": _customization_peer, "lora_peer": _customization_peer,
    "customization_cost": _customization, "left_to_do": _left_to_do, "base_curve": _base_curve, "base_sampler": _base_sampler,
    "base_probe": _base_probe, "base_conditioning": _base_conditioning, "shape_check": _shape_check,
    "synth_quality": _synth_quality, "vit_shape_curve": _vit_shape_curve, "tower_curve": _tower_curve,
    "captioner_vocab_cost": _captioner_vocab_cost}


def row(path: Path, root: Path) -> str:
    result = json.loads(path.read_text())
    name = result.get("benchmark", path.stem)
    # variants (ingest_throughput_128px, embed_throughput_vit-b-32) share their script's formatter
    known = [key for key in FORMATTERS if name == key or name.startswith(f"{key}_")]
    formatter = FORMATTERS[max(known, key=len)] if known else None
    try:
        figure, target = formatter(result) if formatter else ("(no formatter: see the file)", "")
    except (KeyError, TypeError, ValueError) as exc:  # an older or partial file: say so
        figure, target = f"(unreadable figure: {type(exc).__name__} {exc})", ""
    machine = result.get("machine", {})
    where = f"{machine.get('cpus', '?')} CPUs" + (f", {machine['cuda']}" if machine.get("cuda") else "")
    link = path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path
    return (f"| `{name}` | {figure} | {target} | [{path.name}]({link}) | "
            f"{str(result.get('date', '?'))[:10]} | {where} |")


def table(results: Path, root: Path = ROOT) -> str:
    files = sorted(results.glob("*.json"))
    if not files:
        shown = results.resolve().relative_to(root) if results.resolve().is_relative_to(root) \
            else results
        return ("No measured figures yet: run the commands below on a quiet machine, commit "
                f"`{shown}/*.json`, then `python -m benchmarks.readme_table`.")
    header = ("| benchmark | figures: median [min, max] of interleaved rounds | target | file | "
              "date | machine |\n|---|---|---|---|---|---|")
    return "\n".join([header, *(row(f, root) for f in files)])


def rewrite(readme: str, block: str) -> str:
    """The README with its marked block replaced; ValueError when the markers are missing."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README needs {START} ... {END} around the benchmark table")
    return f"{readme[:start + len(START)]}\n{block}\n{readme[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    updated = rewrite(current, table(args.results, args.readme.resolve().parent))
    if args.check:
        if updated != current:
            print(f"{args.readme}: benchmark table is stale; run python -m benchmarks.readme_table")
            return 1
        return 0
    args.readme.write_text(updated)
    print(f"rewrote the benchmark table in {args.readme} from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
