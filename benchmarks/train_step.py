"""Model size and the cost of one training step on this machine.

    python -m benchmarks.train_step [--model PATH] [--batch-size N] [--finetune lora|full] [--json PATH]

Prints parameter counts (backbone, new image layers, residual head, adapters, trainable
in all) and, for a batch of drawing conversations (a request, a sentence and a 64x64
image the assistant draws), the median time of a full training step (forward, the three
losses, backward, AdamW), the tokens per second that makes, and the process's peak
resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from vlm.unified_model import UnifiedVLM, UnifiedVLMConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder to start from; default: a new model around the default backbone")
    parser.add_argument("--finetune", choices=("lora", "full"), default="lora",
                        help="for a new model: LoRA adapters or every backbone weight")
    parser.add_argument("--batch-size", type=int, default=8, help="conversations per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (median) after one warm-up step")
    parser.add_argument("--bf16", action="store_true", help="run the step under bfloat16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def count(parameters) -> int:
    return sum(parameter.numel() for parameter in parameters)


def parameter_counts(model: UnifiedVLM) -> dict[str, int]:
    named = dict(model.named_parameters())
    adapters = count(p for name, p in named.items() if "lora_" in name or "trainable_tokens_delta" in name)
    backbone = count(p for name, p in named.items() if name.startswith("backbone.")) - adapters
    return {
        "backbone": backbone,
        "image_layers": count(model.image_embedder.parameters()) + count(model.image_head.parameters()),
        "residual_head": count(model.residual_head.parameters()),
        "adapters": adapters,
        "image_tokenizer_frozen": count(model.image_tokenizer.parameters()),
        "trainable": count(p for p in model.parameters() if p.requires_grad),
    }


def drawing_batch(size: int, image_size: int) -> list[list[dict]]:
    colours = ["red", "blue", "green", "orange", "purple", "black", "teal", "gold"]
    conversations = []
    for index in range(size):
        colour = colours[index % len(colours)]
        image = Image.new("RGB", (image_size, image_size), "white")
        ImageDraw.Draw(image).ellipse((8, 8, image_size - 8, image_size - 8), fill=colour)
        conversations.append([
            {"role": "user", "content": f"Please draw a {colour} circle for me."},
            {"role": "assistant", "content": [{"type": "text", "text": f"Here is a {colour} circle:"},
                                              {"type": "image", "image": image}]},
        ])
    return conversations


def peak_memory_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = UnifiedVLM.from_pretrained(args.model) if args.model else \
        UnifiedVLM.from_backbone(UnifiedVLMConfig(finetune=args.finetune))
    model.train()
    counts = parameter_counts(model)
    batch = model.processor(drawing_batch(args.batch_size, model.image_tokenizer.config.image_size))
    tokens = int(batch.padding_mask.sum())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(batch, generator=generator).losses["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    step()
    seconds = statistics.median(step() for _ in range(args.repeats))
    results = {**{f"params_{name}": value for name, value in counts.items()},
               "batch_conversations": args.batch_size, "batch_tokens": tokens, "step_seconds": seconds,
               "train_tokens_per_s": tokens / seconds, "peak_rss_mib": peak_memory_mib()}
    print(f"{torch.get_num_threads()} CPU threads; finetune={model.config.finetune}; bf16={args.bf16}\n")
    print("| parameters | count |\n|---|---|")
    for name, value in counts.items():
        print(f"| {name.replace('_', ' ')} | {value / 1e6:.2f} M |")
    print("\n| training step | value |\n|---|---|")
    print(f"| batch | {args.batch_size} conversations, {tokens} tokens |")
    print(f"| step time (median of {args.repeats}) | {seconds:.2f} s |")
    print(f"| tokens/s | {tokens / seconds:.0f} |")
    print(f"| peak resident memory | {results['peak_rss_mib']:.0f} MiB |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
