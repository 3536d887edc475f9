"""Kill -9 a training run at random moments (inside checkpoint writes too), run the same
command again, and compare the end with an uninterrupted run, bit for bit; and train with
two processes (DDP over gloo) against one process with twice the accumulation.

Tiny configurations (a 2-layer Llama with the real text tokenizer, a small image
tokenizer), so many kill points fit in minutes. Used by `python -m benchmarks.robustness`.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass
class TinySetup:
    backbone: Path
    image_tokenizer: Path
    data: Path
    images: Path  # a folder of images for the tokenizer trainer
    tokenizer_config: Path


def build_tiny_setup(folder: Path) -> TinySetup:
    """A tiny backbone (real SmolLM2 text tokenizer), a tiny image tokenizer, shapes data."""
    from PIL import Image, ImageDraw
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlm.backbone import convert_default_backbone
    from vlm.tokenizer import HybridTokenizer, TokenizerConfig

    folder.mkdir(parents=True, exist_ok=True)
    source = convert_default_backbone()  # once per machine, into the cache; only its text tokenizer is used
    torch.manual_seed(0)
    backbone = folder / "backbone"
    LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 tie_word_embeddings=True)).save_pretrained(backbone)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(source / name, backbone / name)
    config = TokenizerConfig(image_size=32, latent_channels=8, encoder_channels=(8, 16, 16),
                             res_blocks_per_level=(0, 1, 1), codebook_size=64, scales=(1, 2, 3, 5, 8),
                             num_phi_convs=2)
    HybridTokenizer(config).save_pretrained(folder / "image_tokenizer")
    (folder / "tokenizer_config.json").write_text(config.to_json())
    _run([sys.executable, "-m", "training.build_data", "shapes", "--out", str(folder / "data"), "--count", "24",
          "--seed", "1"])
    images = folder / "images"
    images.mkdir(exist_ok=True)
    rng = random.Random(0)
    for index in range(24):
        image = Image.new("RGB", (40, 40), "white")
        box = sorted(rng.sample(range(40), 2)), sorted(rng.sample(range(40), 2))
        ImageDraw.Draw(image).ellipse((box[0][0], box[1][0], box[0][1] + 1, box[1][1] + 1),
                                      fill=tuple(rng.randrange(256) for _ in range(3)))
        image.save(images / f"{index:02d}.png")
    return TinySetup(backbone, folder / "image_tokenizer", folder / "data" / "shapes.jsonl", images,
                     folder / "tokenizer_config.json")


def unified_command(setup: TinySetup, out: Path, steps: int, extra: list[str] = ()) -> list[str]:
    return [sys.executable, "-m", "training.train", "--data", str(setup.data), "--output-dir", str(out),
            "--init", "new", "--backbone", str(setup.backbone), "--image-tokenizer", str(setup.image_tokenizer),
            "--steps", str(steps), "--batch-size", "2", "--gradient-accumulation", "1", "--warmup-steps", "2",
            "--learning-rate", "3e-3", "--checkpoint-every", "2", "--log-every", "1",
            "--no-sample-every-checkpoint", "--mixed-precision", "no", *extra]


def tokenizer_command(setup: TinySetup, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "training.train_tokenizer", "--data", str(setup.images), "--config",
            str(setup.tokenizer_config), "--output-dir", str(out), "--steps", str(steps), "--batch-size", "4",
            "--warmup-steps", "2", "--learning-rate", "3e-3", "--checkpoint-every", "2", "--log-every", "1",
            "--dead-code-restart-every", "3", "--mixed-precision", "no"]


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}


def _run(command: list[str], timeout_s: float = 600.0) -> None:
    subprocess.run(command, cwd=REPOSITORY, env=_environment(), check=True, timeout=timeout_s,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def weights_digest(folder: Path) -> str:
    """One hash over every tensor of every safetensors file under `folder` (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        for name, tensor in sorted(load_file(str(path)).items()):
            digest.update(f"{path.relative_to(folder)}:{name}".encode())
            digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def killed_then_resumed(command: list[str], out: Path, kill_after_s: float) -> bool:
    """Start `command`, SIGKILL it after `kill_after_s` (if still running), run it again to the end.
    Returns whether it was killed (False: it finished first)."""
    process = subprocess.Popen(command, cwd=REPOSITORY, env=_environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=kill_after_s)
        killed = False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed = True
    _run(command)
    return killed


def crash_trials(setup: TinySetup, work: Path, trials: int, seed: int = 0) -> list[dict]:
    """For each trainer: an uninterrupted reference, then `trials` runs killed at seeded random
    moments of its wall time, and two killed inside a checkpoint write, each resumed; each
    must end with the reference's exact weights and log."""
    rng = random.Random(seed)
    results = []
    for name, command_for, final in (("unified", lambda out: unified_command(setup, out, 8), "model"),
                                     ("tokenizer", lambda out: tokenizer_command(setup, out, 8), "tokenizer")):
        reference = work / f"{name}-reference"
        started = time.perf_counter()
        _run(command_for(reference))
        duration = time.perf_counter() - started
        expected = weights_digest(reference / final)
        expected_log = _log_without_times(reference / "log.csv")
        planted = [("state", 2), ("swap", 2)]  # inside the second checkpoint write, then between its renames
        for trial in range(trials + len(planted)):
            out = work / f"{name}-trial{trial}"
            if trial < trials:
                moment = rng.uniform(0.3, 1.0) * duration
                killed = killed_then_resumed(command_for(out), out, moment)
                where = f"after {moment:.2f} s"
            else:
                place, nth = planted[trial - trials]
                killed = killed_inside_checkpoint(command_for(out), place, nth)
                where = f"inside checkpoint write {nth} ({place})"
            exact = weights_digest(out / final) == expected and _log_without_times(out / "log.csv") == expected_log
            results.append({"trainer": name, "kill": where, "killed": killed, "exact": exact})
            shutil.rmtree(out, ignore_errors=True)
    return results


# Runs a trainer (`python -m MODULE ARGS`) in a child process with one fault planted, from outside
# the trainer's code: SIGKILL at the n-th write of a resume state's tensor file (the checkpoint
# format's training_state.safetensors, written with safetensors before the JSON that makes it a
# state) or at the n-th rename that moves a finished checkpoint's predecessor aside (`.old`)
# before the new one takes its place. The patches are made before the trainer is imported, so
# its `from safetensors.torch import save_file` takes the patched function.
KILL_INSIDE = """
import os, runpy, signal, sys
from pathlib import Path
import safetensors.torch
where, nth, module = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls = {"n": 0}
if where == "state":  # the tensors are written, the JSON that makes them a state is not
    original_save_file = safetensors.torch.save_file
    def save_file(tensors, filename, *args, **kwargs):
        result = original_save_file(tensors, filename, *args, **kwargs)
        if str(filename).endswith("training_state.safetensors"):
            calls["n"] += 1
            if calls["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return result
    safetensors.torch.save_file = save_file
else:  # swap_in: the old checkpoint moved aside, the new one not yet in its place
    original_replace = Path.replace
    def replace(self, target):
        if str(self).endswith(".old") or not str(target).endswith(".old"):
            return original_replace(self, target)
        result = original_replace(self, target)
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    Path.replace = replace
sys.argv = [module] + sys.argv[4:]
runpy.run_module(module, run_name="__main__")
"""


def killed_inside_checkpoint(command: list[str], where: str, nth: int) -> bool:
    """Run `command` (a `python -m module ...` list) with a SIGKILL planted in its `nth`
    checkpoint write (`where`: "state" or "swap"), then run it again normally. Returns whether
    the planted kill happened."""
    module, rest = command[2], command[3:]
    child = subprocess.run([sys.executable, "-c", KILL_INSIDE, where, str(nth), module, *rest], cwd=REPOSITORY,
                           env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    killed = child.returncode == -signal.SIGKILL
    _run(command)
    return killed


def _log_without_times(path: Path) -> list[list[str]]:
    """log.csv rows without the wall-clock columns (seconds, tokens/s), which differ run to run."""
    import csv

    with path.open() as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    keep = [index for index, column in enumerate(header) if column not in ("seconds", "tokens_per_s")]
    return [[row[index] for index in keep] for row in rows]


def ddp_matches_one_process(setup: TinySetup, work: Path, steps: int = 4) -> bool:
    """Two processes (gloo DDP, batch 2 each) against one process accumulating 2 forwards of 2:
    the same data and the same averaged gradient, so the weights must agree (to float rounding)."""
    one = work / "ddp-one"
    _run(unified_command(setup, one, steps, ["--gradient-accumulation", "2", "--finetune", "full"]))
    two = work / "ddp-two"
    # torchrun: `accelerate launch --cpu --num_processes 2` starts a single process on a CPU-only machine.
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "training.train"]
    _run(launch + unified_command(setup, two, steps, ["--finetune", "full"])[3:])
    first, second = _tensors(one / "model"), _tensors(two / "model")
    return first.keys() == second.keys() and all(torch.allclose(first[name], second[name], rtol=1e-4, atol=1e-6)
                                                 for name in first)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.rglob("*.safetensors")):
        tensors.update({f"{path.relative_to(folder)}:{name}": value for name, value in load_file(str(path)).items()})
    return tensors
