"""Make a trained model the shipped default (`vlm/pretrained/model`, loaded when no --model is given).

    python -m training.ship_default runs/default_model/model

Copies the model's files, replacing its copy of the image tokenizer by a reference when its
codes are those of a tokenizer shipped in the package (same fingerprint: tokenizer512, the default,
or cosine4096; saves 9-18 MB in the repository, and the model draws with the packaged decoder),
stores the adapter (or fine-tuned backbone) weights in fp16 unless told otherwise (every shipped
file stays in git history; a rank-64 adapter is 78 MB in fp32, 39 MB in fp16, and loading casts it
back to the model's dtype), and refuses a result over the 60 MB budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlm.configuration import IMAGE_TOKENIZER_DIR
from vlm.files import swap_in
from vlm.tokenizer import PACKAGED_TOKENIZERS, HybridTokenizer
from vlm.unified_model import ADAPTER_NAME, BACKBONE_WEIGHTS_NAME, CONFIG_NAME, DEFAULT_MODEL_PATH, UnifiedVLM

BUDGET_BYTES = 60 * 2**20


def packaged_twin(folder: Path) -> str | None:
    """The name of the packaged tokenizer whose codes are this one's (same fingerprint: config, encoder
    and quantizer; its decoder may have been retrained since), if any."""
    ours = HybridTokenizer.from_pretrained(folder).fingerprint()
    for name, path in PACKAGED_TOKENIZERS.items():
        if (path / "config.json").is_file() and HybridTokenizer.from_pretrained(path).fingerprint() == ours:
            return name
    return None


def store_in_fp16(path: Path) -> None:
    """Rewrite a safetensors file's floating-point tensors in fp16; refuse values fp16 cannot hold."""
    state = load_file(str(path))
    half = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
    overflowed = [key for key, value in half.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if overflowed:
        raise ValueError(f"'{path}' has values outside fp16's range in {overflowed[:5]}; ship it with --dtype float32")
    save_file(half, str(path), metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ship_default", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a trained model folder (e.g. runs/default_model/model)")
    parser.add_argument("--target", type=Path, default=DEFAULT_MODEL_PATH, help="where the default model lives")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                        help="how the adapter (or fine-tuned backbone) weights are stored: float16 (default) halves "
                             "them, and loading casts them back; float32 keeps them bit for bit. The image layers "
                             "(image embedder and heads, ~7 MB) stay float32")
    args = parser.parse_args(argv)
    model = UnifiedVLM.from_pretrained(args.model)  # refuse anything that does not load
    staging = args.target.with_name(args.target.name + ".new")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(args.model, staging)
    config = json.loads((staging / CONFIG_NAME).read_text())
    twin = packaged_twin(args.model / IMAGE_TOKENIZER_DIR) if (args.model / IMAGE_TOKENIZER_DIR).is_dir() else None
    if twin is not None:
        shutil.rmtree(staging / IMAGE_TOKENIZER_DIR)
        config["image_tokenizer"] = twin
    # Models saved by earlier versions record the all-weights hash; the shipped one records the
    # codes' hash, so a retrained decoder (train_tokenizer --freeze-encoder) keeps it loading.
    config["image_tokenizer_fingerprint"] = model.image_tokenizer.fingerprint()
    (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    if args.dtype == "float16":
        for name in (ADAPTER_NAME, BACKBONE_WEIGHTS_NAME):
            if (staging / name).is_file():
                try:
                    store_in_fp16(staging / name)
                except ValueError as error:
                    shutil.rmtree(staging)
                    print(f"error: {error}", file=sys.stderr)
                    return 1
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
