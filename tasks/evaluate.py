"""The evaluation protocol: subjects x prompts x seeds for every method, scored with CLIP-I,
CLIP-T and DINO (and, on synth subjects with a profile oracle, identity and prompt accuracy),
timed, and committed to the `eval_results` table.

Per subject, each method prepares once (timed: its customization cost), then generates one image
per (prompt, seed) (timed per image); images are saved beside the report
(`<root>/reports/<eval_run_id>/images/...`), per-subject artifacts under `artifacts/`.
Everything random is seeded, so a re-run with the same settings gives the same images and metrics.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from model.metrics import OracleReader, Scorer
from model.profiles import load_profile
from storage.shards import ShardStore
from tamer.config import TamerConfig, config_hash
from tasks.eval_subjects import Subject, load_subjects
from tasks.methods import METHODS, Context, EvalMethod, Sampling, fill
from tasks.runs import COMPLETED, code_version, get_run, list_runs

REPORTS = "reports"
REFERENCE = "reference"  # the images/ subfolder of real images shown in the grids


def new_eval_run_id() -> str:
    return f"eval-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def report_dir(store: ShardStore, eval_run_id: str) -> str:
    return store.location.join(REPORTS, eval_run_id)


def resolve_model(store: ShardStore, run_id: str | None, pipeline: str | None) -> dict:
    """Which TamerPipeline to evaluate: the given run's, else the given directory, else the
    latest completed run's; {"run_id", "pipeline_uri", "run"} (all None when there is none)."""
    if run_id:
        run = get_run(store, run_id)
        if run is None or run["status"] != COMPLETED or not run["pipeline_uri"]:
            state = "not found" if run is None else f"{run['status']}, pipeline {run['pipeline_uri']}"
            raise ValueError(f"training run {run_id} has no exported pipeline ({state})")
        return {"run_id": run_id, "pipeline_uri": run["pipeline_uri"], "run": run}
    if pipeline:
        return {"run_id": None, "pipeline_uri": pipeline, "run": None}
    done = [run for run in list_runs(store) if run["status"] == COMPLETED and run["pipeline_uri"]]
    if done:
        return {"run_id": done[0]["run_id"], "pipeline_uri": done[0]["pipeline_uri"], "run": done[0]}
    return {"run_id": None, "pipeline_uri": None, "run": None}


def build_methods(config: TamerConfig, pipeline_uri: str | None, work_dir: Path) -> list[EvalMethod]:
    """The configured methods from the registry, each with its resolved settings."""
    s, profile = config.eval, load_profile(config.profile)
    sampling = Sampling(s.steps, profile.own("guidance_scale", s.guidance_scale),
                        profile.own("object_guidance_scale", s.object_guidance_scale),
                        profile.own("sampler", s.scheduler))
    context = Context(profile, sampling, work_dir, pipeline_uri)
    return [METHODS[name](context, s.method_settings(name)) for name in s.methods]


def run_evaluation(config: TamerConfig, model: dict, eval_run_id: str,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Run the protocol and commit its rows; returns a summary of what was evaluated."""
    store, s = ShardStore(config.root), config.eval
    subject_set = load_subjects(s.data, store, model["run"], s.subjects, s.prompts)
    out = report_dir(store, eval_run_id)
    with _work_dir(store, out) as work_dir:
        methods = build_methods(config, model["pipeline_uri"], work_dir)
        scorer, oracle = Scorer.from_profile(config.profile), OracleReader.from_profile(config.profile)
        seeds = range(s.seed, s.seed + s.seeds)
        total = len(methods) * sum(len(subject.prompts) for subject in subject_set.subjects) * len(seeds)
        common = {"data_source": subject_set.source, "dataset_fingerprint": subject_set.fingerprint,
                  "model_run_id": model["run_id"],
                  "pipeline_uri": model["pipeline_uri"] if "ours" in s.methods else None,
                  "profile": config.profile, "code_version": code_version(),
                  "config_hash": config_hash(TamerConfig(profile=config.profile, eval=s))}
        rows: list[dict] = []
        for subject in subject_set.subjects:
            _save_references(store, out, subject)
            reference = scorer.reference(subject.images)
            for method in methods:
                start = time.perf_counter()
                state = method.prepare(subject)
                prepare_s = time.perf_counter() - start
                for index, prompt in enumerate(subject.prompts):
                    text = fill(prompt, subject.class_noun)
                    for seed in seeds:
                        start = time.perf_counter()
                        image = method.generate(state, prompt, seed)[0]
                        generate_s = time.perf_counter() - start
                        metrics = scorer.score([image], text if method.follows_prompt else None, reference)[0]
                        metrics |= _oracle_reading(oracle, image, subject, index, method.follows_prompt)
                        path = f"images/{method.name}/{subject.name}/p{index:02d}_s{seed}.png"
                        _write_image(store, f"{out}/{path}", image)
                        rows.append({**common, **metrics, "method": method.name, "subject": subject.name,
                                     "class_name": subject.class_noun, "prompt_index": index, "prompt": text,
                                     "seed": seed, "image_path": path,
                                     **method.cost(state, prepare_s, generate_s)})
                        if progress:
                            progress(len(rows), total)
    now = dt.datetime.now(dt.UTC)
    store.write("eval_results", pa.Table.from_pylist([{**row, "eval_run_id": eval_run_id, "created_at": now}
                                                      for row in rows]), run_id=eval_run_id)
    return {"eval_run_id": eval_run_id, "rows": len(rows), "subjects": len(subject_set.subjects),
            "methods": [method.name for method in methods], "report_dir": out, **common}


def _oracle_reading(oracle: OracleReader | None, image: Image.Image, subject: Subject, index: int,
                    follows_prompt: bool) -> dict[str, float | None]:
    """Identity and prompt accuracy where the profile has an oracle and the subject is synth."""
    if oracle is None or subject.identity is None:
        return {"identity_acc": None, "prompt_acc": None}
    scene = subject.prompt_scenes[index] if subject.prompt_scenes and follows_prompt else None
    return oracle.read(image, subject.identity, scene)


@contextlib.contextmanager
def _work_dir(store: ShardStore, out: str) -> Iterator[Path]:
    """Per-subject artifacts (learned embeddings, LoRA weights, UNets): beside the report for a local
    root; for a remote root in a temporary folder, removed when the evaluation ends."""
    if store.location.is_local:
        yield Path(out, "artifacts")
        return
    with tempfile.TemporaryDirectory(prefix="tamer-eval-") as folder:
        yield Path(folder)


def read_results(store: ShardStore, eval_run_id: str) -> list[dict]:
    table = store.read("eval_results")
    return table.filter(pc.equal(table["eval_run_id"], eval_run_id)).to_pylist()


def _save_references(store: ShardStore, out: str, subject: Subject) -> None:
    for k, image in enumerate(subject.images):
        preview = image.copy()
        preview.thumbnail((256, 256))  # the report shows them small; originals stay where they are
        _write_image(store, f"{out}/images/{REFERENCE}/{subject.name}/{k:02d}.png", preview)


def _write_image(store: ShardStore, path: str, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with store.fs.open(path, "wb") as handle:
        handle.write(buffer.getvalue())
