"""Held-out losses per data source, measured at checkpoints: the curves that say whether a run still learns.

A training log row mixes the sources by their weights and sees each conversation once, with
fresh condition dropout and diffusion noise; it cannot tell which kind of data stopped
improving. Here a fixed set of held-out conversations per source is scored the same way at
every checkpoint (eval mode: no condition dropout; the residual loss with the same noise each
time), so the numbers are comparable across steps and across runs on the same set.
`python -m training.build_data default` writes such a set to `validation/mix.yaml`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from training.mixed_data import MixedConversations
from training.run_log import append_row, log_loss_figure, read_log
from training.token_cache import TokenCache
from vlm.unified_model import UnifiedVLM

VALIDATION_LOG = "validation.csv"
LOSS_NAMES = ("total", "text", "image", "residual")


class HeldOutLosses:
    """The first `per_source` conversations of each source of a mix, scored in batches of `batch_size`."""

    def __init__(self, data: str | Path, per_source: int, batch_size: int):
        if per_source < 1 or batch_size < 1:
            raise ValueError(f"per_source and batch_size must be at least 1, got {per_source} and {batch_size}")
        mix = MixedConversations(data, seed=0)
        self.sources = {name: conversations[:per_source] for name, conversations in zip(mix.names, mix.sources)}
        self.batch_size = batch_size

    @torch.no_grad()
    def measure(self, model: UnifiedVLM, token_cache: TokenCache, seed: int = 0,
                precision: Callable[[], AbstractContextManager] = nullcontext) -> dict[str, dict[str, float]]:
        """{source: {loss name: mean over its conversations}}; the model's train/eval mode is restored.

        `precision` makes the context each forward runs in (the trainer's `accelerator.autocast`).
        Each batch's losses count by its number of conversations; a loss that no batch of a
        source has (text-free drawings have no text loss) is left out of that source.
        """
        was_training = model.training
        model.eval()
        results = {}
        try:
            for name, conversations in self.sources.items():
                generator = torch.Generator().manual_seed(seed)
                sums: dict[str, float] = {}
                weights: dict[str, int] = {}
                for start in range(0, len(conversations), self.batch_size):
                    chunk = conversations[start:start + self.batch_size]
                    batch = model.processor(chunk)
                    tokens = token_cache.tokens(batch.pixels) if len(batch.pixels) else None
                    with precision():
                        output = model(batch, tokens, generator=generator, all_logits=False)
                    for loss, value in (output.losses | output.metrics).items():
                        sums[loss] = sums.get(loss, 0.0) + float(value) * len(chunk)
                        weights[loss] = weights.get(loss, 0) + len(chunk)
                results[name] = {loss: sums[loss] / weights[loss] for loss in sums}
        finally:
            model.train(was_training)
        return results


def log_validation(path: Path, step: int, results: dict[str, dict[str, float]], scale_columns: list[str],
                   counts: dict[str, int]) -> None:
    """One row per source in validation.csv, with the number of conversations it was scored on
    (`counts`; a source may hold fewer than were asked for)."""
    columns = ["step", "source", "conversations", *LOSS_NAMES, *scale_columns]
    for source, losses in results.items():
        row = {"step": step, "source": source, "conversations": counts[source],
               **{name: f"{losses[name]:.5f}" if name in losses else "" for name in (*LOSS_NAMES, *scale_columns)}}
        append_row(path, columns, row)


def write_validation_curve(path: Path, out: Path) -> None:
    """Held-out text and image loss per source against the step (validation_curve.png)."""
    _, rows = read_log(path)
    if not rows:
        return
    figure, axes = log_loss_figure(3, 16)
    for axis, loss in zip(axes, ("text", "image", "residual")):
        for source in dict.fromkeys(row["source"] for row in rows):
            points = [(int(row["step"]), float(row[loss])) for row in rows if row["source"] == source and row[loss]]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=source)
        axis.set_title(f"held-out {loss} loss per source")
        axis.set_ylabel("loss (nats)" if loss != "residual" else "loss")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.savefig(out)
