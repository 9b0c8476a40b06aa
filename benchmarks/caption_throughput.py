"""Caption throughput: naive loop vs the Ray Data pipeline vs the model-only ceiling (issue 3).

    python benchmarks/caption_throughput.py [--images 1024] [--batch-size 32] [--tokens 30]
        [--repeats 5]

Same tiny captioner + CLIP attribute scorer, same synth images (64 px, ingested first):
(a) naive: one image at a time in the driver: decode -> processors -> generate + CLIP scores
    -> compose;
(b) tamer's caption task on Ray Data (read shards, decode, batched generate + scores in an
    actor pool, compose, commit captions shards) into a fresh dataset root each time. Ray is
    started and a warm-up run has built the model cache before timing, as in a running
    service; actor start-up and model loading are inside the timing. Each round also
    captions the first half of the images: the second half's rate (all minus half, same
    round) is the pipeline's steady state, what it runs at once actors and models are up;
(c) ceiling, in the pipeline's own layout: as many Ray actors as the pipeline starts, each
    with its torch threads (one CPU each on a CPU machine), each holding one model copy and
    its share of the batches already decoded and pre-processed; timed from the first call to
    the last actor's return: batched generate + CLIP scores only.
Each figure: median [min, max] of `--repeats` interleaved rounds (a, b half, b, c, a, ...) after
a warm-up round. Targets: (b) >= 2x (a), (b) >= 0.7 (c) (whole run; steady state reported).
Peak memory (first round): RSS of this process and its children (Ray's processes included for
every contender, so compare increases).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from benchmarks.common import (clocked, compare, interleaved, measured_marginal_rate, per_second,  # noqa: E402
                               summaries, synth_workdir, timed, write_result)


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


class CeilingActor:
    """One model copy with the pipeline actor's torch threads and its share of the batches,
    decoded and pre-processed at construction (untimed)."""

    def __init__(self, rows: list[dict], batch_size: int, tokens: int, threads: int) -> None:
        import torch

        from model.attributes import AttributeScorer
        from model.captioning import Captioner, GenerationSettings
        from model.profiles import load_profile, load_role
        from tamer.config import CaptionSettings
        from tasks.caption import load_vocabulary, vocabulary_path
        from tasks.images_dataset import decode_image

        torch.set_num_threads(threads)
        profile = load_profile("tiny")
        self.captioner = Captioner(*load_role(profile, "captioner"),
                                   GenerationSettings(tokens, 1, None))
        vocabulary = load_vocabulary(vocabulary_path(CaptionSettings()))
        self.scorer = AttributeScorer(*load_role(profile, "clip"), vocabulary)
        images = [decode_image(row["image"], profile.resolution) for row in rows]
        self.batches = [(self.captioner.preprocess(images[i:i + batch_size]),
                         self.scorer.preprocess(images[i:i + batch_size]))
                        for i in range(0, len(images), batch_size)]

    def run(self) -> int:
        for caption_inputs, pixels in self.batches:
            self.captioner.generate(caption_inputs)
            self.scorer.score(pixels)
        return len(self.batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=30, help="max_new_tokens")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import ray
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
    images_table = store.read("images")
    rows = images_table.select(["image_id", "class_name", "image"]).to_pylist()
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

    ensure_ray(RaySettings())
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = settings.actors or cpus  # the pipeline's CPU layout (tasks/caption.py ray_placement)
    threads = max(1, cpus // actors)
    remote = ray.remote(num_cpus=0)(CeilingActor)  # no reservation: the pipeline runs too
    pool = [remote.remote(rows[i::actors], args.batch_size, args.tokens, threads)
            for i in range(actors)]
    ray.get([actor.run.remote() for actor in pool])  # construction done, first calls made

    def ceiling() -> int:
        return sum(ray.get([actor.run.remote() for actor in pool]))

    rounds = iter(range(10**9))
    n, half = len(rows), len(rows) // 2

    def pipeline(images) -> Callable[[], float]:
        def run() -> float:
            fresh = ShardStore(str(work / f"round{next(rounds)}"))
            fresh.write("images", images)  # untimed: every round captions every image
            seconds, report = timed(lambda: caption_images(fresh, "tiny", settings))
            assert report.captioned == images.num_rows, report
            return seconds
        return run

    peaks: dict[str, float] = {}

    def tracked(name: str, contender):
        def run() -> float:
            with peak_rss() as peak:
                seconds = contender()
                peaks[name] = max(peaks.get(name, 0.0), peak())
            return seconds
        return run

    with peak_rss() as peak:
        baseline_mib = peak()  # models loaded in the driver, ceiling actors ready
    seconds = interleaved({"a_naive": tracked("a_naive", clocked(naive)),
                           "b_pipeline_half": pipeline(images_table.slice(0, half)),
                           "b_pipeline": tracked("b_pipeline (driver + Ray)", pipeline(images_table)),
                           "c_ceiling": tracked("c_ceiling (driver + Ray)", clocked(ceiling))},
                          repeats=args.repeats)
    throughput = per_second({k: v for k, v in seconds.items() if k != "b_pipeline_half"}, n)
    # the second half's rate (all minus half, same round): what the pipeline runs at once its
    # actors are up and their models loaded, which the ceiling's warm actors already are
    pairs = {"b / a (images/s)": ("b_pipeline", "a_naive"), "b / c (images/s)": ("b_pipeline", "c_ceiling")}
    steady = measured_marginal_rate("pipeline steady", n - half, seconds["b_pipeline"], seconds["b_pipeline_half"])
    if steady:
        throughput["b_steady"] = steady
        pairs["b steady / c (images/s)"] = ("b_steady", "c_ceiling")
    heading = f"{n} images, batch {args.batch_size}, {actors} actors x {threads} torch threads; images/s:"
    vs = compare(heading, throughput, "images/s", pairs)
    result = {
        "images": n, "batch_size": args.batch_size, "max_new_tokens": args.tokens,
        "repeats": args.repeats, "actors": actors, "torch_threads_per_actor": threads,
        "torch_threads_naive_driver": torch.get_num_threads(),
        "images_per_s": summaries(throughput),
        "b_vs_a": vs["b / a (images/s)"], "b_vs_c": vs["b / c (images/s)"],
        **({"b_steady_vs_c": vs["b steady / c (images/s)"]} if steady else {}),
        "peak_rss_mib": {"baseline": baseline_mib, **peaks},
        "targets": "b >= 2x a, b >= 0.7 c",
    }
    write_result("caption_throughput", result)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
