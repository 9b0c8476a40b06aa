"""Which subjects an evaluation runs on, with their real images, class noun and prompts.

Three sources, one `Subject` shape (prompts use "{}" for the subject, which each method fills
with its own words: the class noun, "<token>", "sks <class>"):
- a DreamBench-layout folder (`prompts_and_classes.txt` + `<subject>/NN.jpg`): the 25 object or
  live-subject prompts by class; live subjects are the dogs and the cat, as in DreamBench;
- a synth folder (`synth.json`): identities (the held-out split when there is one), prompted
  with scenes the identity was never rendered in;
- the dataset under the root: subjects never seen in training: held out in the split the
  run pinned (storage/splits.py), or absent from the `images` version it pinned.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from storage.images import load_rgb
from storage.shards import ShardStore
from storage.splits import HELD_OUT, record_splits, split_key
from tamer.synth import SCENE_PHRASES, scene_phrase, view_scene

PROMPTS_FILE = "prompts_and_classes.txt"
SYNTH_FILE = "synth.json"
LIVE_CLASSES = frozenset({"dog", "cat"})
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_PROMPT = re.compile(r"'(.+?)'\.format\(unique_token, class_token\)")


@dataclass(frozen=True)
class Subject:
    name: str
    class_noun: str
    images: tuple[Image.Image, ...]  # real images, RGB; the first is the one-shot reference
    prompts: tuple[str, ...]  # "{}" = the subject
    # synth subjects only: the identity's attributes, and each prompt's scene attributes (what
    # the profile's oracle checks generated images against)
    identity: dict[str, str] | None = None
    prompt_scenes: tuple[dict[str, str], ...] | None = None


@dataclass(frozen=True)
class SubjectSet:
    subjects: list[Subject]
    source: str  # dreambench:<dir> | synth:<dir> | dataset:<root>
    fingerprint: str  # of exactly the images and prompts evaluated


def load_subjects(data: str | None, store: ShardStore, run: dict | None, subjects: int | None,
                  prompts: int | None) -> SubjectSet:
    """The first `subjects` subjects (by name) with their first `prompts` prompts (None = all)."""
    if data is None:
        return held_out_subjects(store, run, subjects, prompts)
    folder = Path(data)
    if (folder / PROMPTS_FILE).is_file():
        return dreambench_subjects(folder, subjects, prompts)
    if (folder / SYNTH_FILE).is_file():
        return synth_subjects(folder, subjects, prompts)
    raise FileNotFoundError(f"{folder} has neither {PROMPTS_FILE} (DreamBench layout) nor {SYNTH_FILE} (synth)")


def parse_prompts_and_classes(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """DreamBench's file -> ({subject: class}, {"object": prompts, "live": prompts}), with
    'a {0} {1} in the snow' turned into 'a {} in the snow'."""
    classes: dict[str, str] = {}
    lists: dict[str, list[str]] = {"object": [], "live": []}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Object Prompts"):
            current = "object"
        elif stripped.startswith("Live Subject Prompts"):
            current = "live"
        elif current and (match := _PROMPT.search(stripped)):
            lists[current].append(match.group(1).replace("{0} {1}", "{}"))
        elif current is None and stripped.count(",") == 1 and stripped != "subject_name,class":
            subject, noun = (part.strip() for part in stripped.split(","))
            classes[subject] = noun
    if not classes or not all(lists.values()):
        raise ValueError(f"no classes or prompt lists found in {PROMPTS_FILE}")
    return classes, lists


def dreambench_subjects(folder: Path, limit: int | None, n_prompts: int | None) -> SubjectSet:
    classes, lists = parse_prompts_and_classes((folder / PROMPTS_FILE).read_text())
    names = sorted(name for name in classes if (folder / name).is_dir())[:limit]
    subjects, files = [], [folder / PROMPTS_FILE]
    for name in names:
        paths = _image_files(folder / name)
        files += paths
        kind = "live" if classes[name] in LIVE_CLASSES else "object"
        subjects.append(Subject(name, classes[name], _open_all(paths), tuple(lists[kind][:n_prompts])))
    return SubjectSet(subjects, f"dreambench:{folder}", _files_fingerprint(files, subjects))


def synth_subjects(folder: Path, limit: int | None, n_prompts: int | None) -> SubjectSet:
    truths: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(folder.glob("*/*.json")):
        truths[path.parent.name].append(json.loads(path.read_text()))
    held_out = [name for name, views in truths.items() if views[0].get("split") == "held_out"]
    names = sorted(held_out or truths)[:limit]
    subjects, files = [], []
    for name in names:
        paths = [p for p in _image_files(folder / name) if not p.name.endswith(".mask.png")]
        files += paths
        views = truths[name]
        subjects.append(synth_subject(name, views[0]["class_name"], _open_all(paths), views[0], len(views),
                                      n_prompts))
    return SubjectSet(subjects, f"synth:{folder}", _files_fingerprint(files, subjects))


def synth_subject(name: str, class_noun: str, images: tuple[Image.Image, ...], truth: dict, first_view: int,
                  count: int | None) -> Subject:
    """Prompted with scenes from views the identity was never rendered in (views >=
    `first_view`), with the truth of both for the oracle."""
    views = range(first_view, first_view + (count or len(GENERIC_PROMPTS)))
    attributes = (view_scene(truth["seed"], truth["object_index"], v).attributes() for v in views)
    scenes = tuple({key: value for key, value in scene.items() if key in SCENE_PHRASES} for scene in attributes)
    return Subject(name, class_noun, images, tuple(_prompt(scene_phrase(scene)) for scene in scenes),
                   dict(truth.get("identity") or {}) or None, scenes)


def _prompt(scene: str) -> str:
    """The synth captions' form, "a {}, <scene>" (`tamer.synth_world.class_prompt`): without the
    comma the synth base read "a sks square on a wooden surface" as hearts and crescents."""
    return f"a {{}}, {scene}"


GENERIC_PROMPTS = tuple(_prompt(phrase) for phrase in SCENE_PHRASES["background"].values())


def held_out_subjects(store: ShardStore, run: dict | None, limit: int | None,
                      n_prompts: int | None) -> SubjectSet:
    """Dataset subjects the run never trained on, decided from the versions it pinned: held
    out in its split, or not in its `images` at all (first ingested later). Without a run (or
    for a run recorded before runs pinned versions): the current held-out split."""
    from tasks.runs import pinned_store  # the run registry's reader: one definition

    table = store.read("images", ["image_id", "subject", "class_name", "image", "meta", "ingested_at"])
    rows: dict[str, list[dict]] = defaultdict(list)
    for row in table.to_pylist():
        rows[split_key(row["subject"], row["image_id"])].append(row)
    pinned = pinned_store(store, run)
    splits = record_splits(pinned)  # recorded before pinning: reads only
    trained = {split_key(row["subject"], row["image_id"])
               for row in pinned.read("images", ["image_id", "subject"]).to_pylist()}

    def unseen(name: str) -> bool:
        return name not in trained or splits[name]["split"] == HELD_OUT

    names = sorted(filter(unseen, rows))[:limit]
    if not names:
        raise ValueError("no held-out subjects in the dataset: the run trained on every subject "
                         "(a dataset needs two subjects for one to be held out); pass a DreamBench "
                         "or synth folder")
    subjects = []
    for name in names:
        group = sorted(rows[name], key=lambda row: row["ingested_at"])
        truth = json.loads(group[0]["meta"] or "{}")
        noun, images = group[0]["class_name"] or "object", tuple(load_rgb(row["image"]) for row in group)
        subjects.append(synth_subject(name, noun, images, truth, len(group), n_prompts) if "object_index" in truth
                        else Subject(name, noun, images, GENERIC_PROMPTS[:n_prompts]))
    return SubjectSet(subjects, f"dataset:{store.location.root}", store.fingerprint())


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _open_all(paths: list[Path]) -> tuple[Image.Image, ...]:
    return tuple(Image.open(path).convert("RGB") for path in paths)


def _files_fingerprint(files: list[Path], subjects: list[Subject]) -> str:
    """Hash of the evaluated files' names and sizes and of the prompts: the folder's version."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.parent.name}/{path.name}:{path.stat().st_size}\n".encode())
    for subject in subjects:
        digest.update(f"{subject.name}:{subject.class_noun}:{'|'.join(subject.prompts)}\n".encode())
    return digest.hexdigest()[:16]
