"""Textual Inversion and DreamBooth-LoRA peers (issue 17): the project's baseline vs diffusers'
example script, whole commands as a user runs them, same tiny SD folder, images, resolution,
batch, lr, steps and seed, one torch thread each. Prints steps/s and peak RSS, writes JSON.

    python -m benchmarks.customization_peer --method ti|lora --peer-script DIR
        [--steps 200] [--short-steps 50] [--repeats 5] [--data DREAMBENCH] [--quick]

DIR holds diffusers' `examples/textual_inversion/textual_inversion.py` and
`examples/dreambooth/train_dreambooth_lora.py` at the installed diffusers version (they are not
in this repository); without `--peer-script` only the project side runs. Contenders, each a fresh
process (OMP_NUM_THREADS=1, offline) writing into a fresh folder, rounds interleaved after a
warm-up round:
- project: what `tamer eval` runs per subject (`tasks.methods.TextualInversion` or
  `DreamBoothLora`: load the profile's base pipeline, train, save in diffusers' format, load the
  result back into the pipeline);
- peer: the diffusers script with the flags it needs to run offline on the same inputs
  (checkpoints and intermediate saves pushed past the last step; nothing else changed).
Each side also runs at `--short-steps`: the per-round difference gives steps/s with start-up
(imports, model loading, saving) left out. Peak RSS is the child's own (`wait4`). After the
rounds both sides' files are loaded with `load_textual_inversion` / `load_lora_weights`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.eval_subjects import Subject

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import (interleaved, measured_marginal_rate, paired, parse_quick, print_paired,  # noqa: E402
                               print_summaries, summary, write_result)

DREAMBENCH = Path(os.environ.get("TAMER_DREAMBENCH")
                  or REPO.parent / "shared" / "data" / "dreambench")
# One torch thread, no hub: the same process layout on both sides.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
             "TOKENIZERS_PARALLELISM": "false"}

# The project side: what `tamer eval` runs for one subject of one baseline.
PROJECT = """
import json, sys
from pathlib import Path
from model.profiles import load_profile
from storage.shards import ShardStore
from tamer.model_config import DreamBoothLoraConfig, TextualInversionConfig
from tasks.methods import Context, DreamBoothLora, Sampling, TextualInversion
from tasks.eval_subjects import load_subjects

method, data, work, settings = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
cls, config = {"ti": (TextualInversion, TextualInversionConfig),
               "lora": (DreamBoothLora, DreamBoothLoraConfig)}[method]
subject = load_subjects(data, ShardStore(str(work / "root")), None, 1, 1).subjects[0]
baseline = cls(Context(load_profile("tiny"), Sampling(50, 7.5, 3.0, "ddim"), work), config(**settings))
state = baseline.prepare(subject)
print(json.dumps({"phrase": state.phrase, "bytes": state.bytes_stored}))
"""


@dataclass(frozen=True)
class Peer:
    """One baseline: the peer script, the file both sides write, the recipe's batch, its lr."""

    name: str
    script: str
    weights_file: str
    batch: int
    lr: float
    peer_flags: Callable[[Path, str, str, "Settings"], list[str]]  # (images, subject, class)


@dataclass(frozen=True)
class Settings:
    steps: int
    batch: int
    lr: float
    seed: int
    resolution: int


def _ti_flags(images: Path, subject: str, noun: str, s: Settings) -> list[str]:
    return ["--train_data_dir", str(images), "--placeholder_token", f"<{subject}>",
            "--initializer_token", noun, "--save_steps", str(s.steps + 1)]


def _lora_flags(images: Path, subject: str, noun: str, s: Settings) -> list[str]:
    return ["--instance_data_dir", str(images), "--instance_prompt", f"a photo of sks {noun}",
            "--rank", "4"]


PEERS = {"ti": Peer("textual_inversion", "textual_inversion.py", "learned_embeds.safetensors",
                    batch=4, lr=5e-4 * 4, peer_flags=_ti_flags),
         "lora": Peer("dreambooth_lora", "train_dreambooth_lora.py",
                      "pytorch_lora_weights.safetensors", batch=1, lr=1e-4,
                      peer_flags=_lora_flags)}


def measured(command: list[str], log: Path, cwd: Path) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of one child process; its output goes to `log`."""
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not all children's
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... exited {child.returncode}:\n"
                           f"{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


def project_command(method: str, data: Path, work: Path, s: Settings) -> list[str]:
    settings = {"steps": s.steps, "batch_size": s.batch, "lr": s.lr, "seed": s.seed}
    return [sys.executable, "-c", PROJECT, method, str(data), str(work), json.dumps(settings)]


def peer_command(peer: Peer, script_dir: Path, sd_dir: Path, images: Path, subject: str,
                 noun: str, out: Path, s: Settings) -> list[str]:
    return [sys.executable, str(script_dir / peer.script), "--pretrained_model_name_or_path",
            str(sd_dir), "--output_dir", str(out), "--resolution", str(s.resolution),
            "--center_crop", "--train_batch_size", str(s.batch), "--learning_rate", str(s.lr),
            "--max_train_steps", str(s.steps), "--seed", str(s.seed),
            "--checkpointing_steps", str(s.steps + 1), *peer.peer_flags(images, subject, noun, s)]


def loads(method: str, files: dict[str, Path], token: str) -> dict[str, dict]:
    """Load each side's file into the tiny base pipeline the way diffusers users do; `loads`:
    what the pipeline then holds is exactly what the file holds."""
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    from model.dreambooth_lora import load_lora
    from model.finetune import base_pipeline

    pipe = base_pipeline("tiny")
    report = {}
    for side, path in files.items():
        saved = load_file(str(path))
        if method == "ti":
            pipe.load_textual_inversion(str(path), token=token)
            row = pipe.text_encoder.get_input_embeddings().weight[
                pipe.tokenizer.convert_tokens_to_ids(token)]
            report[side] = {"loads": bool(torch.equal(row, saved[token][0])),
                            "shape": list(saved[token].shape)}
            pipe.unload_textual_inversion(token)
        else:
            load_lora(pipe, path, side)
            state = convert_state_dict_to_diffusers(
                get_peft_model_state_dict(pipe.unet, adapter_name=side))
            back = {f"unet.{key}": value for key, value in state.items()}
            report[side] = {"loads": back.keys() == saved.keys() and all(
                torch.equal(back[key], saved[key]) for key in saved), "tensors": len(saved)}
            pipe.delete_adapters(side)
    return report


@dataclass
class Rounds:
    """The contenders of one benchmark: each run is a fresh child writing into a fresh folder;
    the newest output of each is kept (for the load check), older ones removed."""

    method: str
    peer: Peer
    script_dir: Path | None
    data: Path
    subject: Subject
    sd_dir: Path
    work: Path
    rss: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # side -> its newest full-length file
    count: int = 0

    def contender(self, side: str, name: str, s: Settings) -> Callable[[], float]:
        def run() -> float:
            self.count += 1
            out = self.work / f"{name}{self.count}"
            out.mkdir()
            if side == "project":
                command = project_command(self.method, self.data, out, s)
                written = out / self.peer.name / self.subject.name / self.peer.weights_file
            else:
                command = peer_command(self.peer, self.script_dir, self.sd_dir,
                                       self.data / self.subject.name, self.subject.name,
                                       self.subject.class_noun, out, s)
                written = out / self.peer.weights_file
            seconds, peak = measured(command, self.work / f"{name}.log", out)
            if not written.is_file():
                raise RuntimeError(f"{side} finished without writing {written}")
            self.rss.setdefault(name, []).append(peak)
            if name in self.outputs:
                shutil.rmtree(self.outputs[name])
            self.outputs[name] = out
            if name == side:
                self.files[side] = written
            return seconds
        return run


def compare(sides: list[str], steps: int, short_steps: int, seconds: dict[str, list[float]],
            rss: dict[str, list[int]]) -> dict:
    """Each side's figures per round, printed, and project / peer where both ran."""
    whole = {side: [steps / t for t in seconds[side]] for side in sides}
    steady = {side: measured_marginal_rate(f"{side} without start-up", steps - short_steps, seconds[side],
                                           seconds[f"{side}_short"]) for side in sides} if short_steps else {}
    if None in steady.values():  # both sides or neither
        steady = {}
    mib = {side: [b / 2**20 for b in rss[side]] for side in sides}
    print_summaries({f"{side} whole command": v for side, v in whole.items()}, "steps/s")
    print_summaries({f"{side} without start-up": v for side, v in steady.items()}, "steps/s")
    print_summaries({f"{side} peak RSS": v for side, v in mib.items()}, "MiB")
    comparisons = {}
    if "peer" in sides:
        comparisons = {"whole_command": paired(whole["project"], whole["peer"]),
                       "peak_rss": paired(mib["project"], mib["peer"])}
        if steady:
            comparisons["without_startup"] = paired(steady["project"], steady["peer"])
        for name, comparison in comparisons.items():
            print_paired(f"project / peer, {name}", comparison)
    return {"steps_per_s": {side: summary(v) for side, v in whole.items()},
            "steps_per_s_without_startup": {side: summary(v) for side, v in steady.items()},
            "peak_rss_mib": {side: summary(v) for side, v in mib.items()},
            "project_vs_peer": comparisons}


def measure(args: argparse.Namespace, peer: Peer, work: Path) -> dict:
    """Both sides' interleaved rounds in `work`, the load check; the result file's content."""
    from diffusers import __version__ as diffusers_version

    from model.tiny import RESOLUTION, ensure_built
    from storage.shards import ShardStore
    from tasks.eval_subjects import load_subjects

    store = ShardStore(str(work / "subjects"))
    subject = load_subjects(str(args.data), store, None, 1, 1).subjects[0]
    rounds = Rounds(args.method, peer, args.peer_script, args.data, subject, ensure_built("sd"),
                    work)
    base = Settings(args.steps, args.batch or peer.batch, peer.lr, args.seed, RESOLUTION)
    sides = ["project"] + (["peer"] if args.peer_script else [])
    contenders = {}
    lengths = [(args.steps, "")] + ([(args.short_steps, "_short")] if args.short_steps else [])
    for steps, suffix in lengths:
        for side in sides:
            contenders[side + suffix] = rounds.contender(side, side + suffix,
                                                         replace(base, steps=steps))
    seconds = interleaved(contenders, repeats=args.repeats, warmup=0 if args.quick else 1)
    rss = {name: values[-args.repeats:] for name, values in rounds.rss.items()}  # no warm-up

    print(f"{peer.name}, subject {subject.name} ({len(subject.images)} images) at "
          f"{base.resolution} px, batch {base.batch}, lr {base.lr}, {args.steps} steps, "
          f"{args.repeats} interleaved rounds, one torch thread per side:")
    figures = compare(sides, args.steps, args.short_steps, seconds, rss)
    loaded = loads(args.method, rounds.files, f"<{subject.name}>")
    print(f"loaded back into the base pipeline: {loaded}")
    script = args.peer_script / peer.script if args.peer_script else None
    return {
        "method": peer.name, "quick": args.quick, "subject": subject.name,
        "images": len(subject.images), "resolution": base.resolution, "batch": base.batch,
        "lr": base.lr, "seed": base.seed, "steps": args.steps, "short_steps": args.short_steps,
        "repeats": args.repeats, "torch_threads": 1, "sd_folder": rounds.sd_dir.name,
        "peer_script": None if script is None else {
            "file": script.name, "diffusers": diffusers_version,
            "sha256": hashlib.sha256(script.read_bytes()).hexdigest()},
        **figures, "loads": loaded, "target": "project >= 1.0x peer steps/s (whole command)"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(PEERS), required=True)
    parser.add_argument("--peer-script", type=Path, default=None,
                        help="folder holding diffusers' example scripts; none: project side only")
    parser.add_argument("--data", type=Path, default=DREAMBENCH, help="DreamBench-layout folder")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--short-steps", type=int, default=50,
                        help="second run per side for steps/s without start-up; 0: none")
    parser.add_argument("--batch", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_quick(parser, argv, dict(steps=3, short_steps=0, repeats=1),
                       "3 steps, one round, no warm-up, no short run (the test suite's)")
    if not 0 <= args.short_steps < args.steps:
        parser.error("--short-steps must be >= 0 and below --steps")
    peer = PEERS[args.method]
    if args.peer_script and not (args.peer_script / peer.script).is_file():
        parser.error(f"{args.peer_script / peer.script} does not exist: fetch diffusers' "
                     f"examples at the installed version into that folder")

    work = Path(tempfile.mkdtemp(prefix=f"tamer-bench-{args.method}-peer-"))
    try:
        result = measure(args, peer, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_result(f"{args.method}_peer", result)


if __name__ == "__main__":
    main()
