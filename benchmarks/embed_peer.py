"""Embedding peer (issue 17): `tamer embed` vs `clip-retrieval inference`, whole commands as a
user runs them, same images, same local CLIP folder, same machine. Prints the ratio, writes JSON.

    python benchmarks/embed_peer.py [--images 2000] [--size 256] [--repeats 5]

The images are synth renders (the RGB views, no masks) in one flat folder. Untimed set-up: the
folder is ingested once into a template root (`tamer ingest`, not part of either command),
copied afresh for every `tamer embed` round; each clip-retrieval round writes a fresh output
folder. Contenders, rounds interleaved after a warm-up round:
- tamer_embed: `tamer --root R embed --json`: CLIP embeddings on Ray Data, the clip-retrieval
  index, near-duplicates, identity groups and pairs (everything `tamer embed` does);
- clip_inference: `clip-retrieval inference --input_format files --enable_text False` with
  `--clip_model hf_clip:<CLIP folder of --profile, tiny by default>`, its own reader and
  batching (tamer's config names the same profile);
- clip_inference_and_index: the same, then `clip-retrieval index` on its output: the peer's
  side with an index, like tamer's.
Ratios are images/s of tamer over the peer (>= 1.0 is the target). After the rounds, the two
sides' vectors for the same files are compared (their cosine should be 1: same weights).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import (compare, interleaved, per_second, summaries, synth_parser,  # noqa: E402
                               synth_workdir, timed, write_result)

BIN = Path(sys.executable).parent


def run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {done.returncode}:\n"
                           f"{done.stderr[-3000:]}")
    return done


def flat_images(src: Path, out: Path, count: int) -> list[Path]:
    """The first `count` RGB views of a synth folder, copied into one flat folder."""
    out.mkdir(parents=True)
    views = sorted(p for p in src.rglob("*.png") if not p.name.endswith(".mask.png"))[:count]
    for i, view in enumerate(views):
        shutil.copyfile(view, out / f"{i:06d}.png")
    return sorted(out.glob("*.png"))


def agreement(root: str, peer_output: Path, files: list[Path], profile: str) -> dict:
    """Cosine of tamer's and clip-retrieval's vectors for the same files (same weights: ~1)."""
    import pandas as pd

    from model.embedding import model_id
    from model.profiles import load_profile
    from storage.shards import ShardStore
    from tasks.embed import IMAGE, current_vectors

    ids, vectors = current_vectors(ShardStore(root), IMAGE, model_id(load_profile(profile)))
    ours = dict(zip(ids, vectors))
    peer = np.load(next((peer_output / "img_emb").glob("*.npy"))).astype(np.float32)
    paths = pd.read_parquet(next((peer_output / "metadata").glob("*.parquet")))["image_path"]
    by_id = {hashlib.sha256(Path(p).read_bytes()).hexdigest(): v for p, v in zip(paths, peer)}
    common = sorted(set(ours) & set(by_id))
    cosines = [float(np.dot(ours[i], by_id[i]) / np.linalg.norm(ours[i]) / np.linalg.norm(by_id[i]))
               for i in common]
    return {"files": len(files), "compared": len(common), "cosine_min": min(cosines),
            "cosine_mean": float(np.mean(cosines))}


def main() -> None:
    parser = synth_parser(__doc__, images=2000, size=256)
    parser.add_argument("--batch", type=int, default=64, help="both sides' model batch")
    parser.add_argument("--workers", type=int, default=2, help="clip-retrieval's readers")
    parser.add_argument("--profile", default="tiny", help="whose CLIP folder both sides load")
    args = parser.parse_args()

    from model.profiles import load_profile, resolve

    work = synth_workdir("embed-peer", args.images, args.size)
    files = flat_images(work / "src", work / "flat", args.images)
    clip_dir, subfolder = resolve(load_profile(args.profile), "clip")
    clip_model = f"hf_clip:{Path(clip_dir, subfolder or '')}"
    config = work / "bench.yaml"
    config.write_text(f"profile: {args.profile}\nembed: {{batch_size: {args.batch}}}\n")
    tamer = [sys.executable, "-m", "tamer.cli", "--config", str(config)]
    run([*tamer, "--root", str(work / "template"), "ingest", str(work / "flat")])
    rounds = iter(range(10**6))
    last: dict[str, Path] = {}

    def tamer_embed() -> float:
        root = work / f"root{next(rounds)}"
        shutil.copytree(work / "template", root)  # untimed: every round embeds every image
        seconds, _ = timed(lambda: run([*tamer, "--root", str(root), "embed", "--json"]))
        last["root"] = root
        return seconds

    def clip_inference(index: bool) -> float:
        out = work / f"peer{next(rounds)}"
        command = [str(BIN / "clip-retrieval"), "inference", "--input_dataset", str(work / "flat"),
                   "--output_folder", str(out), "--input_format", "files", "--enable_text",
                   "False", "--clip_model", clip_model, "--batch_size", str(args.batch),
                   "--num_prepro_workers", str(args.workers)]
        seconds, _ = timed(lambda: run(command))
        if index:
            more, _ = timed(lambda: run([str(BIN / "clip-retrieval"), "index", "--embeddings_folder",
                                         str(out), "--index_folder", str(out / "index")]))
            seconds += more
        last["peer"] = out
        return seconds

    seconds = interleaved({"tamer_embed": tamer_embed,
                           "clip_inference": lambda: clip_inference(False),
                           "clip_inference_and_index": lambda: clip_inference(True)},
                          repeats=args.repeats)
    n = len(files)
    per_s = per_second(seconds, n)
    vs = compare(f"{n} images at {args.size} px, whole commands, images/s:", per_s, "images/s", {
        "tamer / clip-retrieval inference": ("tamer_embed", "clip_inference"),
        "tamer / inference + index": ("tamer_embed", "clip_inference_and_index")})
    same = agreement(str(last["root"]), last["peer"], files, args.profile)
    print(f"same vectors: {same}")
    write_result("embed_peer", {
        "images": n, "size": args.size, "batch": args.batch, "peer_workers": args.workers,
        "repeats": args.repeats, "profile": args.profile, "clip_model": clip_model,
        "images_per_s": summaries(per_s),
        "tamer_vs_clip_inference": vs["tamer / clip-retrieval inference"],
        "tamer_vs_clip_inference_and_index": vs["tamer / inference + index"],
        "agreement": same, "target": "tamer_embed >= 1.0x clip_inference (whole commands)"})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
