"""Make a trained model the shipped default (`vlm/pretrained/model`, loaded when no --model is given).

    python -m training.ship_default runs/default_model/model

Copies the model's files, replacing its copy of the image tokenizer by a reference when it
is a tokenizer shipped in the package bit for bit (the default one or tokenizer512; saves 9-18 MB
in the repository), and refuses a result over the 60 MB budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from vlm.files import swap_in
from vlm.tokenizer import PACKAGED_TOKENIZERS, HybridTokenizer
from vlm.unified_model import CONFIG_NAME, DEFAULT_MODEL_PATH, IMAGE_TOKENIZER_DIR, UnifiedVLM

BUDGET_BYTES = 60 * 2**20


def packaged_twin(folder: Path) -> str | None:
    """The name of the packaged tokenizer with this one's config and weights (its fingerprint), if any."""
    ours = HybridTokenizer.from_pretrained(folder).fingerprint()
    for name, path in PACKAGED_TOKENIZERS.items():
        if (path / "config.json").is_file() and HybridTokenizer.from_pretrained(path).fingerprint() == ours:
            return name
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ship_default", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a trained model folder (e.g. runs/default_model/model)")
    parser.add_argument("--target", type=Path, default=DEFAULT_MODEL_PATH, help="where the default model lives")
    args = parser.parse_args(argv)
    UnifiedVLM.from_pretrained(args.model)  # refuse anything that does not load
    staging = args.target.with_name(args.target.name + ".new")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(args.model, staging)
    twin = packaged_twin(args.model / IMAGE_TOKENIZER_DIR)
    if twin is not None:
        shutil.rmtree(staging / IMAGE_TOKENIZER_DIR)
        config = json.loads((staging / CONFIG_NAME).read_text())
        config["image_tokenizer"] = twin
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    size = sum(path.stat().st_size for path in staging.rglob("*") if path.is_file())
    if size > BUDGET_BYTES:
        shutil.rmtree(staging)
        print(f"error: the model is {size / 2**20:.1f} MB; the budget is {BUDGET_BYTES // 2**20} MB", file=sys.stderr)
        return 1
    swap_in(staging, args.target)
    print(f"shipped {args.model} -> {args.target} ({size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
