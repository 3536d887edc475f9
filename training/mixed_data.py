"""A training mix: conversations from several JSONL sources, drawn by weight, reproducibly.

    # data/default/mix.yaml
    sources:
      - {path: shapes.jsonl, weight: 3.0}
      - {path: text.jsonl, weight: 3.0}
      - {path: edit_words.jsonl, weight: 8.0, text_kl: false}

Paths are relative to the mix file. A plain JSONL file is a mix of one source. With
`--text-kl-weight`, text-only chats are held to the stock backbone instead of learnt from their
replies; `text_kl: false` exempts a source whose text-only chats teach a task of this model (edits
in words), which the stock backbone would otherwise pull back to its own answers.
"""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from training.data import DataError, load_jsonl


class MixedConversations:
    """Conversations from several sources, drawn by weight.

    Each step draws one global batch from (seed, step) alone; every forward (micro-step m
    on process p of P) takes slice m * P + p of it. So a resumed run sees exactly the data an
    uninterrupted one would, and two processes see, between them, exactly what one process
    sees with twice the gradient accumulation: the same training, split differently.
    """

    def __init__(self, data: str | Path, seed: int):
        data = Path(data)
        if data.suffix in (".yaml", ".yml", ".json"):
            try:
                mix = yaml.safe_load(data.read_text())
            except (OSError, yaml.YAMLError) as error:
                raise DataError(f"cannot read data mix {data}: {error}") from error
            if not isinstance(mix, dict) or not isinstance(mix.get("sources"), list) or not mix["sources"]:
                raise DataError(f'{data}: a data mix needs a "sources" list of {{path, weight}}')
            sources = [(data.parent / source["path"], float(source.get("weight", 1.0)), _text_kl(source, data))
                       for source in mix["sources"]]
        else:
            sources = [(data, 1.0, True)]
        self.names = [path.stem for path, _, _ in sources]
        self.sources = [load_jsonl(path) for path, _, _ in sources]
        self.text_kl = [held for _, _, held in sources]  # per source: text-only chats held to the backbone
        total = sum(weight for _, weight, _ in sources)
        if total <= 0:
            raise DataError(f"{data}: the weights must add up to more than 0")
        self.weights = [weight / total for _, weight, _ in sources]
        self.seed = seed

    def batch(self, step: int, slice_index: int, size: int) -> list[list[dict]]:
        """Slice `slice_index` (of `size` conversations) of step `step`'s global batch."""
        return [conversation for _, conversation in self.draw(step, slice_index, size)]

    def draw(self, step: int, slice_index: int, size: int) -> list[tuple[int, list[dict]]]:
        """`batch`'s conversations, each with the index of the source it came from."""
        rng = random.Random(f"{self.seed}-{step}")
        picks = []
        for _ in range(size * (slice_index + 1)):  # one conversation at a time: slices never depend on their count
            source = rng.choices(range(len(self.sources)), weights=self.weights)[0]
            picks.append((source, self.sources[source][rng.randrange(len(self.sources[source]))]))
        return picks[size * slice_index:]


def _text_kl(source: dict, data: Path) -> bool:
    held = source.get("text_kl", True)
    if not isinstance(held, bool):
        raise DataError(f"{data}: text_kl of source {source.get('path')!r} must be true or false, got {held!r}")
    return held
