"""A training mix: conversations from several JSONL sources, drawn by weight, reproducibly.

    # data/default/mix.yaml
    sources:
      - {path: shapes.jsonl, weight: 3.0}
      - {path: text.jsonl, weight: 3.0}

Paths are relative to the mix file. A plain JSONL file is a mix of one source.
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
            sources = [(data.parent / source["path"], float(source.get("weight", 1.0))) for source in mix["sources"]]
        else:
            sources = [(data, 1.0)]
        self.names = [path.stem for path, _ in sources]
        self.sources = [load_jsonl(path) for path, _ in sources]
        total = sum(weight for _, weight in sources)
        if total <= 0:
            raise DataError(f"{data}: the weights must add up to more than 0")
        self.weights = [weight / total for _, weight in sources]
        self.seed = seed

    def batch(self, step: int, slice_index: int, size: int) -> list[list[dict]]:
        """Slice `slice_index` (of `size` conversations) of step `step`'s global batch."""
        rng = random.Random(f"{self.seed}-{step}")
        picks = []
        for _ in range(size * (slice_index + 1)):  # one conversation at a time: slices never depend on their count
            source = rng.choices(range(len(self.sources)), weights=self.weights)[0]
            picks.append(self.sources[source][rng.randrange(len(self.sources[source]))])
        return picks[size * slice_index:]
