"""Train a fresh model for a small fixed budget with the real trainer: what the recipe and
tokenizer A/B benchmarks (`benchmarks.overfit`, `benchmarks.learnability`) share.

The trainer runs as a user runs it, `python -m training.train ...` in a child process from
the repository root; nothing of `training` is imported here."""

from __future__ import annotations

import csv
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlm.unified_model import UnifiedVLM

REPOSITORY = Path(__file__).resolve().parent.parent
RECIPE = REPOSITORY / "training" / "configs" / "default_model.yaml"


@dataclass
class FreshRun:
    """A short training run of a new model; `extra` are `python -m training.train` flags that
    override the recipe (an A/B is two runs that differ in one of them)."""

    steps: int
    batch_size: int = 8
    warmup_steps: int = 10
    seed: int = 0
    tokenizer: str | None = None
    recipe: Path = RECIPE
    extra: list[str] = field(default_factory=list)

    def command(self, data_path: Path, run_dir: Path) -> list[str]:
        """The `python -m training.train` command line of this run, its paths absolute."""
        argv = ["--config", str(Path(self.recipe).resolve()), "--data", str(Path(data_path).resolve()),
                "--output-dir", str(Path(run_dir).resolve()), "--init", "new", "--steps", str(self.steps),
                "--batch-size", str(self.batch_size), "--gradient-accumulation", "1",
                "--warmup-steps", str(self.warmup_steps), "--checkpoint-every", str(self.steps), "--log-every", "1",
                "--no-sample-every-checkpoint", "--seed", str(self.seed),
                "--validation-data", ""]  # the recipe's held-out set belongs to its own data mix
        if self.tokenizer:
            argv += ["--image-tokenizer", self.tokenizer]
        return [sys.executable, "-m", "training.train", *absolute_paths(argv + self.extra)]

    def train(self, data_path: Path, run_dir: Path) -> float:
        """Train into `run_dir` (model/ and log.csv) in a child process whose progress and messages
        go to this terminal; returns the wall time in seconds (the child's start included)."""
        command = self.command(data_path, run_dir)
        started = time.time()
        finished = subprocess.run(command, cwd=REPOSITORY)  # the environment (OMP_NUM_THREADS...) passes through
        if finished.returncode != 0:
            raise SystemExit(f"the training run failed with exit code {finished.returncode} (its messages are "
                             f"above): {shlex.join(command)}")
        return time.time() - started


def absolute_paths(arguments: list[str], here: Path | None = None) -> list[str]:
    """The trainer runs in the repository root: each argument (or `--flag=value` value) that names
    an existing file or folder relative to `here` (default: this process's folder) is made
    absolute, so it names the same one there."""
    here = Path.cwd() if here is None else here
    if here.resolve() == REPOSITORY:
        return list(arguments)

    def absolute(value: str) -> str:
        return str((here / value).resolve()) if value and not Path(value).is_absolute() and (here / value).exists() \
            else value

    out = []
    for argument in arguments:
        if argument.startswith("-"):
            flag, equals, value = argument.partition("=")
            out.append(flag + equals + absolute(value) if equals else argument)
        else:
            out.append(absolute(argument))
    return out


def read_log(path: Path) -> list[dict[str, float]]:
    with path.open() as handle:
        return [{key: float(value) for key, value in row.items() if value not in ("", "nan")}
                for row in csv.DictReader(handle)]


def window_mean(rows: list[dict[str, float]], key: str) -> float:
    values = [row[key] for row in rows if key in row]
    return sum(values) / len(values) if values else float("nan")


@torch.no_grad()
def image_losses(model: UnifiedVLM, conversations: list[list[dict]], batch_size: int = 8) -> dict[str, float]:
    """Teacher-forced image loss, overall and per scale ("image", "image_scale_k"), averaged over
    batches, with no condition dropout: the held-out loss of a drawing data set."""
    model.eval()
    sums: dict[str, float] = {}
    batches = 0
    for start in range(0, len(conversations), batch_size):
        output = model(model.processor(conversations[start:start + batch_size]), all_logits=False)
        for name, value in ({"image": output.losses["image"]} | output.metrics).items():
            sums[name] = sums.get(name, 0.0) + float(value)
        batches += 1
    return {name: value / batches for name, value in sums.items()}


def run_in_work_dir(work_dir: Path | None, prefix: str, run: Callable[[Path], dict]) -> dict:
    """`run(work)` in `work_dir` (kept: data, model, log) or in a temporary folder removed after.
    A kept folder must not hold a run already: the benchmark trains a fresh model."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix=prefix) as work:
            return run(Path(work))
    if (work_dir / "run").exists():
        raise SystemExit(f"{work_dir / 'run'} exists: give a new --work-dir (a fresh model is trained)")
    work_dir.mkdir(parents=True, exist_ok=True)
    return run(work_dir)
