"""Procedural multi-view objects: `generate(out, n_objects, views, ...)` writes a DreamBench-like
folder that is a pure function of its arguments.

Layout: `out/<subject>/<NN>.png` (RGB), `<NN>.mask.png` (L, 255 = object), `<NN>.json` (ground
truth) and `out/synth.json` (arguments, vocabularies, counts). Object i's identity and views
depend only on (seed, i), so growing `n_objects` only adds files and a re-run writes nothing.
Pixels come from the pure renderer in `tamer.synth_render`, re-exported here.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tamer.synth_render import (
    BACKGROUNDS,
    COLORS,
    EYES,
    LIGHTINGS,
    POSITIONS,
    ROTATIONS,
    SCALES,
    SHAPES,
    TEXTURES,
    Identity,
    Scene,
    render,
)

__all__ = [
    "BACKGROUNDS", "COLORS", "EYES", "FORMAT_VERSION", "IDENTITY_SPACE", "LIGHTINGS", "POSITIONS",
    "ROTATIONS", "SCALES", "SCENE_PHRASES", "SHAPES", "SPLITS", "TEXTURES", "Identity", "Scene",
    "Subject", "SynthSummary", "describe", "generate", "identities", "render", "sample_identity",
    "sample_scene", "scene_phrase", "view_scene",
]

FORMAT_VERSION = 1  # bump when pixels or layout change: old folders then refuse to be extended
SPLITS = ("train", "held_out")
IDENTITY_SPACE = len(SHAPES) * len(COLORS) * (len(COLORS) - 1) * len(TEXTURES) * len(EYES)
SCENE_PHRASES: dict[str, dict[str, str]] = {
    "background": {"white": "on a white background", "black": "on a black background",
                   "gray": "on a gray background", "dark blue": "on a dark blue background",
                   "sky": "against a blue sky", "grass": "on green grass",
                   "wood": "on a wooden surface", "tiles": "on a tiled floor"},
    "position": {"top left": "in the top left", "top": "at the top",
                 "top right": "in the top right",
                 "left": "on the left", "center": "in the center", "right": "on the right",
                 "bottom left": "in the bottom left", "bottom": "at the bottom",
                 "bottom right": "in the bottom right"},
    "scale": {"small": "small", "medium": "medium-sized", "large": "large"},
    "rotation": {"upright": "upright", "tilted left": "tilted to the left",
                 "tilted right": "tilted to the right", "upside down": "upside down"},
    "lighting": {"bright": "in bright light", "dim": "in dim light",
                 "lit from the left": "lit from the left",
                 "lit from the right": "lit from the right"},
}
_PNG_LEVEL = 6  # fixed so bytes are reproducible; PNG is lossless, so the level only trades size


def describe(identity: Identity) -> str:
    """Caption of the identity alone, e.g. "a red and white striped star with one eye"."""
    i = identity
    return f"a {i.primary} and {i.secondary} {i.texture} {i.shape} with {i.eyes}"


def scene_phrase(scene_attrs: dict[str, str]) -> str:
    """Prompt fragment in a fixed order, e.g.
    "against a blue sky, on the left, small, upright, in dim light"."""
    return ", ".join(SCENE_PHRASES[key][scene_attrs[key]] for key in SCENE_PHRASES)


def sample_identity(rng: np.random.Generator) -> Identity:
    """A uniformly random identity."""
    return _identity_at(int(rng.integers(IDENTITY_SPACE)))


def sample_scene(rng: np.random.Generator) -> Scene:
    """A uniformly random scene, with its own jitter seed."""
    def pick(vocab: tuple[str, ...] | dict[str, object]) -> str:
        values = list(vocab)
        return values[int(rng.integers(len(values)))]

    return Scene(background=pick(BACKGROUNDS), position=pick(POSITIONS), scale=pick(SCALES),
                 rotation=pick(ROTATIONS), lighting=pick(LIGHTINGS),
                 variation=int(rng.integers(2**31)))


@dataclass(frozen=True)
class Subject:
    """One object of a run: its index, folder name, identity and split."""

    index: int
    subject_id: str
    identity: Identity
    split: str


def identities(n: int, seed: int, held_out_fraction: float = 0.0) -> list[Subject]:
    """The first n subjects of a run; subject i never depends on n.

    Identities are a seeded permutation of the whole identity space, so they are distinct while
    n <= IDENTITY_SPACE (then they repeat, with the same split). Splits are spread evenly along
    that permutation: every prefix holds out round(fraction * len) identities, never a repeat.
    """
    if not 0.0 <= held_out_fraction <= 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1], got {held_out_fraction}")
    order = np.random.default_rng([seed, 0x1D]).permutation(IDENTITY_SPACE)
    subjects = []
    for i in range(n):
        slot = i % IDENTITY_SPACE
        held_out = math.floor((slot + 1) * held_out_fraction) > math.floor(slot * held_out_fraction)
        subjects.append(Subject(i, f"obj{i:05d}", _identity_at(int(order[slot])),
                                "held_out" if held_out else "train"))
    return subjects


def view_scene(seed: int, index: int, view: int) -> Scene:
    """The scene of one view, a function of (seed, object index, view) only."""
    return sample_scene(np.random.default_rng([seed, index, view]))


def _identity_at(code: int) -> Identity:
    """Decode a mixed-radix index into an identity (secondary skips the primary color)."""
    colors = list(COLORS)
    code, eyes = divmod(code, len(EYES))
    code, texture = divmod(code, len(TEXTURES))
    code, secondary = divmod(code, len(colors) - 1)
    shape, primary = divmod(code, len(colors))
    others = colors[:primary] + colors[primary + 1:]
    return Identity(SHAPES[shape], colors[primary], others[secondary], TEXTURES[texture],
                    EYES[eyes])


@dataclass(frozen=True)
class SynthSummary:
    """What a `generate` call left in `out` and what it cost."""

    out: str
    n_objects: int
    views: int
    images: int  # images the folder now holds for this run
    written: int  # images rendered by this call (0 on a re-run)
    splits: dict[str, int]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def generate(out: str | Path, n_objects: int, views: int, size: int = 64, seed: int = 0,
             workers: int = 1, held_out_fraction: float = 0.0,
             progress: bool = False) -> SynthSummary:
    """Write n_objects x views images with masks and ground truth into `out`.

    Args:
        out: folder to fill; it may already hold a run with the same size, seed, views and
            held_out_fraction (any n_objects), which is then extended, never rewritten.
        n_objects: subjects obj00000 ... ; identities are distinct up to IDENTITY_SPACE.
        views: images per subject, each under its own random scene.
        size: image side in pixels.
        seed: the whole run is a pure function of this seed and the arguments above.
        workers: processes rendering in parallel (1 = in this process).
        held_out_fraction: share of identities marked split "held_out" in their ground truth.
        progress: show a rich progress bar.
    """
    if n_objects < 0 or views < 1 or size < 8 or workers < 1:
        raise ValueError("need n_objects >= 0, views >= 1, size >= 8, workers >= 1")
    start = time.perf_counter()
    out = Path(out)
    arguments = {"seed": seed, "size": size, "views": views, "held_out_fraction": held_out_fraction}
    # 1. claim the folder first, so a resumed run can trust files that already exist
    total = max(n_objects, _check_existing_run(out, arguments))
    subjects = identities(total, seed, held_out_fraction)
    _write_if_changed(out / "synth.json", _json_bytes(_run_record(arguments, views, subjects)))
    # 2. render what is missing, in chunks of subjects
    chunks = [subjects[i:i + 64] for i in range(0, n_objects, 64)]
    jobs = [(str(out), seed, size, views, chunk) for chunk in chunks]
    written = 0
    with _progress_bar(progress, n_objects) as advance:
        for done, count in _run_chunks(jobs, workers):
            written += count
            advance(done)
    splits = {split: sum(s.split == split for s in subjects) for split in SPLITS}
    return SynthSummary(str(out), total, views, total * views, written, splits,
                        time.perf_counter() - start)


def _check_existing_run(out: Path, arguments: dict[str, object]) -> int:
    """Objects already claimed by a compatible run in `out` (0 for a fresh folder)."""
    record_path = out / "synth.json"
    if not record_path.exists():
        if out.exists() and any(out.glob("obj*")):
            raise ValueError(f"{out} holds subject folders but no synth.json; refusing to mix runs")
        return 0
    record = json.loads(record_path.read_text())
    if record.get("format_version") != FORMAT_VERSION or record.get("arguments") != arguments:
        raise ValueError(f"{out} holds a synth run with other arguments "
                         f"({record.get('arguments')}, format {record.get('format_version')})")
    return int(record["n_objects"])


def _run_record(arguments: dict[str, object], views: int,
                subjects: list[Subject]) -> dict[str, object]:
    return {
        "format_version": FORMAT_VERSION,
        "generator": "tamer.synth",
        "arguments": arguments,
        "n_objects": len(subjects),
        "images": len(subjects) * views,
        "splits": {split: sum(s.split == split for s in subjects) for split in SPLITS},
        "identity_space": IDENTITY_SPACE,
        "layout": "<subject>/<view>.png (RGB), <view>.mask.png (L, 255 = object), <view>.json",
        "vocabularies": {"shape": list(SHAPES), "color": list(COLORS), "texture": list(TEXTURES),
                         "eyes": list(EYES), "background": list(BACKGROUNDS),
                         "position": list(POSITIONS), "scale": list(SCALES),
                         "rotation": list(ROTATIONS), "lighting": list(LIGHTINGS)},
    }


Job = tuple[str, int, int, int, list[Subject]]


def _run_chunks(jobs: list[Job], workers: int) -> Iterator[tuple[int, int]]:
    """Yield (subjects done, images written) per chunk, in-process or over a process pool."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_render_chunk, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_render_chunk, jobs)


def _render_chunk(job: Job) -> tuple[int, int]:
    """Picklable unit of work: write the missing views of some subjects."""
    out, seed, size, views, subjects = job
    width = max(2, len(str(views - 1)))
    written = 0
    for subject in subjects:
        folder = Path(out) / subject.subject_id
        folder.mkdir(parents=True, exist_ok=True)
        for view in range(views):
            stem = folder / f"{view:0{width}d}"
            paths = [stem.with_name(stem.name + ext) for ext in (".png", ".mask.png", ".json")]
            if all(p.exists() for p in paths):
                continue
            scene = view_scene(seed, subject.index, view)
            image, mask = render(subject.identity, scene, size)
            truth = {
                "subject": subject.subject_id, "class_name": subject.identity.shape,
                "split": subject.split, "identity": subject.identity.attributes(),
                "scene": {**scene.attributes(), "variation": scene.variation},
                "description": describe(subject.identity),
                "scene_phrase": scene_phrase(scene.attributes()),
                "object_index": subject.index, "view": view, "seed": seed, "size": size,
            }
            for path, data in zip(paths, (_png_bytes(image), _png_bytes(mask), _json_bytes(truth))):
                if not path.exists():
                    _atomic_write(path, data)
            written += 1
    return len(subjects), written


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_LEVEL)
    return buffer.getvalue()


def _json_bytes(record: dict[str, object]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def _atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a torn write."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_if_changed(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != data:
        _atomic_write(path, data)


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; a no-op when disabled so the caller needs no branches."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress() as bar:
        task = bar.add_task("synth objects", total=total)
        yield lambda n: bar.advance(task, n)
