"""Incremental cost of the main job (issue 8). Prints per-stage times and ratios, writes JSON.

    python benchmarks/incremental_cost.py [--objects 40] [--views 6] [--add 0.05]

1. `tamer run`'s pipeline flow on a synth dataset of N objects (the full first run);
2. the synth dataset grows by `--add` (5% new images; existing files stay identical), and the
   pipeline runs again. Data stages (ingest, caption, embed/index/pairs) of the second run
   should cost <= 15% of the first's. Training follows the pipeline's policy: a new run on the
   new dataset version (stated in the output); evaluation follows the new run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402

DATA_STAGES = ("ingest", "caption", "embed")
# Small training and evaluation: this benchmark is about the data stages.
CONFIG = """
train: {steps: 60, warmup_steps: 5, checkpoint_every: 30}
eval: {subjects: 1, prompts: 1, seeds: 1, steps: 5, bootstrap: 50,
       textual_inversion: {steps: 5}, dreambooth_lora: {steps: 5}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=40)
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--add", type=float, default=0.05)
    args = parser.parse_args()

    from flows.pipeline import pipeline_flow
    from tamer.synth import generate

    work = Path(tempfile.mkdtemp(prefix="tamer-bench-incremental-"))
    config = work / "bench.yaml"
    config.write_text(CONFIG)
    src, root = work / "src", str(work / "root")
    generate(src, n_objects=args.objects, views=args.views, size=64, held_out_fraction=0.25)
    first = pipeline_flow(data=str(src), root=root, config_file=str(config))
    grown = args.objects + max(1, round(args.objects * args.add))
    generate(src, n_objects=grown, views=args.views, size=64, held_out_fraction=0.25)
    second = pipeline_flow(data=str(src), root=root, config_file=str(config))

    stages = list(first["seconds"])
    rows = {stage: {"first_s": first["seconds"][stage],
                    "second_s": second["seconds"].get(stage, 0.0)} for stage in stages}
    data_first = sum(rows[s]["first_s"] for s in DATA_STAGES)
    data_second = sum(rows[s]["second_s"] for s in DATA_STAGES)
    print(f"{'stage':10s} {'first':>9s} {'second':>9s} {'ratio':>7s}")
    for stage, row in rows.items():
        ratio = row["second_s"] / row["first_s"] if row["first_s"] else 0.0
        print(f"{stage:10s} {row['first_s']:8.1f}s {row['second_s']:8.1f}s {ratio:7.2f}")
    print(f"data stages: {data_first:.1f}s -> {data_second:.1f}s, ratio "
          f"{data_second / data_first:.3f} (target <= 0.15)")
    print(f"images: {first['ingest']['ingested']} then +{second['ingest']['ingested']}")
    print(f"training policy, second run: {second['train']['policy']}")
    write_result("incremental_cost", {
        "objects": args.objects, "views": args.views, "added_objects": grown - args.objects,
        "images_first": first["ingest"]["ingested"], "images_added": second["ingest"]["ingested"],
        "stages": rows, "data_stages_ratio": data_second / data_first,
        "training_policy": second["train"]["policy"], "target": "data stages <= 0.15"})


if __name__ == "__main__":
    main()
