"""kNN query latency at 100,000 vectors: served (clip-retrieval back + ClipClient) and direct
(faiss). Prints p50/p99, writes JSON (issue 4).

    python benchmarks/knn_latency.py [--vectors 100000] [--queries 300] [--k 10]

The vectors are synthetic (clustered, unit length, the tiny clip role's dimension) and go
through the real path: `embeddings` + `images` shards -> clip-retrieval export -> autofaiss
index (`tamer index`) -> `tamer serve-index` on 127.0.0.1 -> ClipClient with
`embedding_input` (index search, reconstruction and metadata; no model in the loop). Text
queries through the service (the model in the loop) are timed too. Direct: faiss
`index.search` on the same index file, one query at a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from benchmarks.common import timed, write_result  # noqa: E402


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


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    import faiss

    from model.embedding import ClipEmbedder, model_id
    from model.profiles import load_profile
    from tasks import index as knn
    from tasks.embed import config_hash

    profile = load_profile("tiny")
    dim = ClipEmbedder.from_profile(profile).dim
    model = model_id(profile)
    work = Path(tempfile.mkdtemp(prefix="tamer-bench-knn-"))
    store, vectors = synthetic_store(work / "root", args.vectors, dim, model, config_hash(model))
    build_s, record = timed(lambda: knn.build_index(store, "tiny"))
    index = faiss.read_index(os.path.join(record["index_path"], "image.index"))
    queries = vectors[np.random.default_rng(1).integers(len(vectors), size=args.queries)]

    direct = []
    for query in queries:
        start = time.perf_counter()
        index.search(query.reshape(1, -1), args.k)
        direct.append(time.perf_counter() - start)
    recall = np.mean([knn.search_direct(store, q, k=1)[0].score > 0.999 for q in queries[:50]])

    served, texts = [], []
    with knn.served(str(work / "root"), timeout_s=300) as url:
        knn.search_service(url, store, vector=queries[0], k=args.k)  # warm-up
        for query in queries:
            start = time.perf_counter()
            knn.search_service(url, store, vector=query, k=args.k)
            served.append(time.perf_counter() - start)
        for i in range(min(100, args.queries)):
            start = time.perf_counter()
            knn.search_service(url, store, text=f"a photo of thing {i}", k=args.k)
            texts.append(time.perf_counter() - start)

    result = {
        "vectors": args.vectors, "dim": dim, "k": args.k, "queries": args.queries,
        "index_build_seconds": build_s, "index_key": _index_key(record["index_path"]),
        "self_recall_at_1": float(recall),
        "direct_faiss": percentiles(direct),
        "served_clip_client_embedding": percentiles(served),
        "served_clip_client_text": percentiles(texts),
    }
    for key, value in result.items():
        print(f"{key:32s} {value}")
    write_result("knn_latency", result)
    os.system(f"rm -rf {work}")


def _index_key(index_path: str) -> str:
    import json

    infos = Path(index_path, "image.json")
    return json.loads(infos.read_text()).get("index_key", "?") if infos.exists() else "?"


if __name__ == "__main__":
    main()
