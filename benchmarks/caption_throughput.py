"""Caption throughput: naive loop vs the Ray Data pipeline vs the model-only ceiling (issue 3).

    python benchmarks/caption_throughput.py [--images 1024] [--batch-size 32] [--tokens 30]

Same tiny captioner + CLIP attribute scorer, same synth images (64 px, ingested first):
(a) naive: one image at a time: decode -> processors -> generate + CLIP scores -> compose;
(b) tamer's caption task on Ray Data (read shards, decode, batched generate + scores in an
    actor pool, compose, commit captions shards). Ray is started and a small warm-up run has
    built the model cache before timing, as in a running service; actor start-up and model
    loading are inside the timing;
(c) ceiling: batched generate + CLIP scores only, on pre-decoded, pre-processed tensors.
Targets: (b) >= 2x (a), (b) >= 0.7 (c). Peak memory: RSS of this process and its children
(Ray's processes included for every contender, so compare increases over `baseline`).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from benchmarks.common import synth_workdir, timed, write_result  # noqa: E402


@contextmanager
def peak_rss() -> Iterator[Callable[[], float]]:
    """Samples the RSS of this process tree every 50 ms; yields a getter of the peak (MiB)."""
    me, peak, stop = psutil.Process(), [0], threading.Event()

    def measure() -> None:
        total = 0
        for process in [me, *me.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:  # exited while we looked
                pass
        peak[0] = max(peak[0], total)

    def sample() -> None:
        while not stop.wait(0.05):
            measure()

    measure()  # so the peak is known from the first moment
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: peak[0] / 2**20
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=30, help="max_new_tokens")
    args = parser.parse_args()

    import torch

    from model.attributes import AttributeScorer
    from model.captioning import Captioner, GenerationSettings
    from model.compose import compose, named_attributes, object_class
    from model.profiles import load_profile, load_role
    from storage.shards import ShardStore
    from tamer.config import CaptionSettings, IngestSettings, RaySettings
    from tasks.caption import caption_images, load_vocabulary, template_of, vocabulary_path
    from tasks.images_dataset import decode_image
    from tasks.ingest import ingest_source
    from tasks.ray_runtime import ensure_ray

    work = synth_workdir("caption", args.images, size=64)
    store = ShardStore(str(work / "data"))
    ingest_source(str(work / "src"), store, IngestSettings(executor="local"))
    rows = store.read("images", ["image_id", "class_name", "image"]).to_pylist()
    settings = CaptionSettings(batch_size=args.batch_size, max_new_tokens=args.tokens)
    vocabulary, template = load_vocabulary(vocabulary_path(settings)), template_of(settings)

    profile = load_profile("tiny")
    captioner = Captioner(*load_role(profile, "captioner"),
                          GenerationSettings(args.tokens, 1, None))
    scorer = AttributeScorer(*load_role(profile, "clip"), vocabulary)

    def naive() -> int:
        for row in rows:
            image = decode_image(row["image"], profile.resolution)
            raw, scores = captioner([image])[0], scorer([image])[0]
            compose(raw, object_class(row["class_name"], scores),
                    named_attributes(scores, vocabulary), template)
        return len(rows)

    images = [decode_image(row["image"], profile.resolution) for row in rows]
    batches = [(captioner.preprocess(images[i:i + args.batch_size]),
                scorer.preprocess(images[i:i + args.batch_size]))
               for i in range(0, len(images), args.batch_size)]

    def ceiling() -> int:
        for caption_inputs, pixels in batches:
            captioner.generate(caption_inputs)
            scorer.score(pixels)
        return len(rows)

    ceiling()  # warm-up: first calls allocate
    with peak_rss() as peak:
        baseline_mib = peak()  # models loaded, tensors of (c) prepared
        naive_s, _ = timed(naive)
        naive_mib = peak()
    with peak_rss() as peak:
        ceiling_s, _ = timed(ceiling)
        ceiling_mib = peak()
    del batches, images, captioner, scorer

    ensure_ray(RaySettings())
    warm = ShardStore(str(work / "warm"))
    warm.write("images", store.read("images").slice(0, args.batch_size))
    caption_images(warm, "tiny", settings)  # untimed: Ray Data's first run imports and plans
    with peak_rss() as peak:
        pipeline_s, report = timed(lambda: caption_images(store, "tiny", settings))
        pipeline_mib = peak()
    assert report.captioned == len(rows), report

    n = len(rows)
    result = {
        "images": n, "batch_size": args.batch_size, "max_new_tokens": args.tokens,
        "torch_threads_in_driver": torch.get_num_threads(),
        "a_naive_images_per_s": n / naive_s,
        "b_pipeline_images_per_s": n / pipeline_s,
        "c_ceiling_images_per_s": n / ceiling_s,
        "ratio_b_vs_a": naive_s / pipeline_s,
        "ratio_b_vs_c": ceiling_s / pipeline_s,
        "peak_rss_mib": {"baseline": baseline_mib, "a_naive": naive_mib,
                         "b_pipeline (driver + Ray)": pipeline_mib, "c_ceiling": ceiling_mib},
        "targets": "b >= 2x a, b >= 0.7 c",
    }
    for key, value in result.items():
        print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")
    write_result("caption_throughput", result)


if __name__ == "__main__":
    main()
