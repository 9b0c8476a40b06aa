"""kNN query latency at 100,000 vectors: what `tamer search` does against the served index,
clip-retrieval's `back` alone, and faiss direct. Prints p50s, writes JSON (issue 4).

    python benchmarks/knn_latency.py [--vectors 100000] [--queries 100] [--k 10] [--repeats 5]

The vectors are synthetic (clustered, unit length, the tiny clip role's dimension) and go
through the real path: `embeddings` + `images` shards -> clip-retrieval export -> autofaiss
index (`tamer index`) -> `tamer serve-index` on 127.0.0.1. Contenders, one round each = the
same `--queries` queries, rounds interleaved after a warm-up round:
- search_embedding: `tasks.index.search_service` with a vector, the call `tamer search` makes
  (ClipClient + the index record + paths from the index's metadata);
- search_text: the same with text (the service's CLIP in the loop);
- back_alone: clip-retrieval's ClipClient on the same service and vectors, nothing of ours;
- direct_faiss: faiss `index.search` on the same index file, one query at a time;
- cli_text: `tamer search --text ... --json` as a whole process (`--cli-queries` per round):
  what a user waits for, start-up included.
A round's figure is its median latency; printed: the median [min, max] over rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from benchmarks.common import (interleaved, paired, print_summaries, summaries, timed,  # noqa: E402
                               write_result)


def synthetic_store(root: Path, count: int, dim: int, model: str, image_hash: str):
    """A dataset root holding `count` fake images and their unit vectors."""
    from storage.shards import ShardStore

    store = ShardStore(str(root))
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((max(1, count // 20), dim)).astype(np.float32)
    vectors = centers[rng.integers(len(centers), size=count)] + \
        0.3 * rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = dt.datetime.now(dt.UTC)
    ids = [f"{i:064x}" for i in range(count)]
    store.write("images", pa.table({
        "image_id": ids, "subject": [f"s{i % 5000}" for i in range(count)],
        "class_name": ["thing"] * count, "source": [f"/synthetic/{i}.png" for i in range(count)],
        "source_kind": ["folder"] * count, "width": [32] * count, "height": [32] * count,
        "format": ["PNG"] * count, "mode": ["RGB"] * count, "num_bytes": [0] * count,
        "flags": [[] for _ in range(count)], "image": [b""] * count, "mask": [None] * count,
        "text": [None] * count, "meta": [None] * count, "ingested_at": [now] * count}))
    store.write("embeddings", pa.table({
        "image_id": ids, "kind": ["image"] * count, "model_id": [model] * count,
        "config_hash": [image_hash] * count,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim).cast(
            pa.list_(pa.float32())), "embedded_at": [now] * count}))
    return store, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100, help="per round and contender")
    parser.add_argument("--cli-queries", type=int, default=3, help="per round, whole processes")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import faiss
    from clip_retrieval.clip_client import ClipClient, Modality

    from model.embedding import ClipEmbedder, model_id
    from model.profiles import load_profile
    from tasks import index as knn
    from tasks.embed import config_hash

    profile = load_profile("tiny")
    dim = ClipEmbedder.from_profile(profile).dim
    model = model_id(profile)
    work = Path(tempfile.mkdtemp(prefix="tamer-bench-knn-"))
    root = str(work / "root")
    store, vectors = synthetic_store(Path(root), args.vectors, dim, model, config_hash(model))
    build_s, record = timed(lambda: knn.build_index(store, "tiny"))
    index = faiss.read_index(os.path.join(record["index_path"], "image.index"))
    queries = vectors[np.random.default_rng(1).integers(len(vectors), size=args.queries)]
    recall = np.mean([knn.search_direct(store, q, k=1)[0].score > 0.999 for q in queries[:50]])
    cli = [sys.executable, "-m", "tamer.cli", "--root", root, "search", "--k", str(args.k),
           "--json"]

    def each(query_fn, items) -> float:
        """The median latency (s) of one round of queries."""
        latencies = []
        for item in items:
            start = time.perf_counter()
            query_fn(item)
            latencies.append(time.perf_counter() - start)
        return float(np.median(latencies))

    with knn.served(root, timeout_s=300) as url:
        client = ClipClient(f"{url}/knn-service", knn.INDICE_NAME, modality=Modality.IMAGE,
                            num_images=args.k, deduplicate=False, use_safety_model=False,
                            use_violence_detector=False)
        texts = [f"a photo of thing {i}" for i in range(args.queries)]

        def cli_search(text: str) -> None:
            done = subprocess.run([*cli, "--url", url, "--text", text], check=True,
                                  capture_output=True, text=True)
            assert json.loads(done.stdout)["via"] == "service", done.stdout

        seconds = interleaved({
            "search_embedding": lambda: each(
                lambda q: knn.search_service(url, store, vector=q, k=args.k), queries),
            "search_text": lambda: each(
                lambda t: knn.search_service(url, store, text=t, k=args.k), texts),
            "back_alone": lambda: each(
                lambda q: client.query(embedding_input=[float(x) for x in q]), queries),
            "direct_faiss": lambda: each(
                lambda q: index.search(q.reshape(1, -1), args.k), queries),
            "cli_text": lambda: each(cli_search, texts[:args.cli_queries]),
        }, repeats=args.repeats)

    ms = {name: [1000 * s for s in values] for name, values in seconds.items()}
    print(f"{args.vectors:,} vectors (dim {dim}), k={args.k}, index built in {build_s:.1f} s; "
          f"per-round median latency over {args.repeats} interleaved rounds:")
    print_summaries(ms, "ms")
    result = {
        "vectors": args.vectors, "dim": dim, "k": args.k, "queries_per_round": args.queries,
        "cli_queries_per_round": args.cli_queries, "repeats": args.repeats,
        "index_build_seconds": build_s, "index_key": _index_key(record["index_path"]),
        "self_recall_at_1": float(recall),
        "p50_ms": summaries(ms),
        "search_vs_back": paired(ms["search_embedding"], ms["back_alone"]),
    }
    write_result("knn_latency", result)
    shutil.rmtree(work, ignore_errors=True)


def _index_key(index_path: str) -> str:
    infos = Path(index_path, "image.json")
    return json.loads(infos.read_text()).get("index_key", "?") if infos.exists() else "?"


if __name__ == "__main__":
    main()
