"""Generation speed on this machine: next-scale images against a raster baseline, and text.

    python -m benchmarks.speed [--model PATH] [--json PATH]

- `ms_per_image_next_scale`: one 64x64 image by next-scale prediction (one forward per
  scale over the KV cache), CFG on, N residual steps, decoded to pixels, and its final
  block fed back: from the loop's ImageStarted event to the event after its ImageFinished.
- `ms_to_image_shown`: the same until ImageFinished, which the loop sends as soon as the
  pixels are decoded (a chat shows the image while the final block is fed back).
- `ms_per_image_raster`: the same work done raster-order: one forward per image token
  (the same number of tokens, 1 + 4 + ... + 64), the same backbone, cache, CFG branch,
  residual head and decoding.
- `text_tokens_per_s` / `hf_generate_tokens_per_s`: greedy text of a fixed length through
  our loop and through the stock backbone's own `generate()` on the same prompt. The stock
  backbone runs in float32, as `from_pretrained` loads it (also its fastest dtype for one-token
  steps on a CPU), whatever `--dtype` our model has.
- with `--peers`, `llama_cpp_tokens_per_s`: llama.cpp on the GGUF our backbone comes from,
  the same prompt tokens and length (benchmarks/llama_cpp_peer.py; built into its own
  environment the first time), and `text_fraction_of_llama_cpp`. For images the peer is
  the same model in raster order (`ms_per_image_raster`).
- `rss_at_rest_mb` / `peak_rss_drawing_mb`: this process's resident memory with the model
  loaded (what the app holds besides Gradio), and its peak while drawing one image (sampled
  every 5 ms), both before the stock backbone is loaded for the text comparison.

Every number is the median of `--repeats` runs after a warm-up run.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from benchmarks.app_load import resident_mb, sampling_memory
from benchmarks.llama_cpp_peer import llama_cpp_tokens_per_s
from chat.quiet import add_dtype_flag
from chat.session import load_chat_model_and_source
from generation import GenerationConfig, ImageFinished, ImageStarted, TextDelta, stream_generate
from generation.sampling import filter_logits, guide
from generation.timing import StageTimer
from vlm.backbone import load_backbone, resolve_dtype
from vlm.image_io import tensor_to_pil
from vlm.unified_model import UnifiedVLM

logger = logging.getLogger(__name__)

IMAGE_PROMPT = [{"role": "user", "content": "Draw a red apple."}]
TEXT_PROMPT = [{"role": "user", "content": "Tell me about the history of the bicycle."}]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (save_pretrained); default: the shipped default model, or the untrained "
                             "default architecture when none is shipped (speed does not depend on the weights)")
    add_dtype_flag(parser)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--cfg-scale", type=float, default=3.0, help="classifier-free guidance scale for images")
    parser.add_argument("--residual-steps", type=int, default=8, help="residual head sampling steps")
    parser.add_argument("--text-tokens", type=int, default=64, help="length of the timed text replies")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--peers", action="store_true",
                        help="also time llama.cpp on the same GGUF (the first run builds llama-cpp-python into "
                             "its own environment under the cache folder: several minutes)")
    return parser.parse_args(argv)


def memory_mb(model: UnifiedVLM, cfg_scale: float, residual_steps: int) -> dict[str, float]:
    """Resident memory at rest and its peak while one image is drawn (sampled every 5 ms)."""
    gc.collect()
    rest = resident_mb()
    samples: list[float] = []
    with sampling_memory(samples, 0.005):
        next_scale_image_seconds(model, cfg_scale, residual_steps, seed=0)
    return {"rss_at_rest_mb": rest, "peak_rss_drawing_mb": max(rest, *samples, resident_mb())}


def median_of(function, repeats: int) -> float:
    function()  # warm-up
    return statistics.median(function() for _ in range(repeats))


def next_scale_image_seconds(model: UnifiedVLM, cfg_scale: float, residual_steps: int, seed: int,
                             timer: StageTimer | None = None) -> tuple[float, float]:
    """(seconds until the image is shown, seconds until its final block is fed back too): from the
    loop's ImageStarted to its ImageFinished, and to the event after it (the reply's end)."""
    config = GenerationConfig(force_image=True, max_new_tokens=0, cfg_scale=cfg_scale,
                              residual_steps=residual_steps, seed=seed)
    started = shown = fed_back = None
    for event in stream_generate(model, IMAGE_PROMPT, config, timer=timer):
        now = time.perf_counter()
        if isinstance(event, ImageStarted):
            started = now
        elif isinstance(event, ImageFinished):
            shown = now
        elif shown is not None and fed_back is None:
            fed_back = now
    return shown - started, fed_back - started


def image_breakdown(model: UnifiedVLM, cfg_scale: float, residual_steps: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per stage of one image, timed by the real loop (after a warm-up)."""
    per_stage: dict[str, list[float]] = defaultdict(list)
    for seed in range(repeats + 1):
        timer = StageTimer()
        next_scale_image_seconds(model, cfg_scale, residual_steps, 1_000 + seed, timer)
        if seed:
            for name, seconds in timer.seconds.items():
                per_stage[name].append(1000 * seconds)
    return {name: statistics.median(values) for name, values in per_stage.items()}


def image_positions(scales: tuple[int, ...], guided: bool) -> tuple[int, int]:
    """Decoder positions one image feeds: (scale blocks incl. <|image_start|>, over both branches when
    guided; final block incl. <|image_end|>, conditional only)."""
    per_branch = 1 + sum(size * size for size in scales)
    return per_branch * (2 if guided else 1), scales[-1] ** 2 + 1


def backbone_matmul_parameters(model: UnifiedVLM) -> int:
    """Weights a position multiplies through in the decoder layers (not the embeddings or LM head)."""
    return sum(parameter.numel() for parameter in model.language_model.model.layers.parameters()
               if parameter.dim() == 2)


def matmul_gflops(dtype: torch.dtype, repeats: int = 20) -> float:
    """A (2048 x 576) @ (576 x 1536) matmul, the backbone's MLP shape, in GFLOP/s: this machine's peak
    for the work a forward does."""
    left, right = torch.randn(2048, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    for _ in range(3):
        torch.mm(left, right)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(left, right)
        times.append(time.perf_counter() - started)
    return 2 * 2048 * 576 * 1536 / statistics.median(times) / 1e9


@torch.no_grad()
def raster_image_seconds(model: UnifiedVLM, cfg_scale: float, residual_steps: int, seed: int) -> float:
    """Raster-order baseline: every image token is its own block and its own forward."""
    generator = torch.Generator().manual_seed(seed)
    processor, embedder = model.processor, model.image_embedder
    scales = model.image_tokenizer.config.scales
    codebook = model.image_tokenizer.quantizer.codebook.weight
    _, cache = model.start_decoding(processor(IMAGE_PROMPT, add_generation_prompt=True))
    started = time.perf_counter()
    guided = cfg_scale != 1
    if guided:  # the unconditional branch as a blind second row of the same forwards, as in the loop
        cache.add_blind_rows(torch.tensor([0]))
    rows = cache.batch_size
    one = torch.zeros(rows, 1, dtype=torch.long)
    start_id = torch.full((rows, 1), processor.image_start_id)
    model.extend(cache, model.text_embeddings(start_id), one)
    places = []
    for level, size in enumerate(scales):
        centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1).view(-1, 2)
        places.append(embedder.place(torch.full((size * size,), level, dtype=torch.long), grid))
    places = torch.cat(places)
    next_input = embedder.start[None, None] + places[0]
    last_hidden = []
    for index in range(places.shape[0]):
        hidden = model.extend(cache, next_input.expand(rows, -1, -1), one)[:, -1]
        logits = model.image_head(hidden)
        if guided:
            logits = guide(logits[:1], logits[1:], (cfg_scale - 1) * index / places.shape[0])
        scores = filter_logits(logits, 1.0, 0, 1.0)
        code = torch.multinomial(scores.softmax(-1), 1, generator=generator)[0]
        if index >= places.shape[0] - scales[-1] ** 2:
            last_hidden.append((hidden[0], hidden[-1], code))
        if index + 1 < places.shape[0]:
            next_input = (embedder.content(codebook[code]) + places[index + 1])[None]
    cache.drop_rows_from(1)
    # The rest is the same work as the next-scale path: residual head, decode, final block.
    side = scales[-1]
    codes = torch.stack([code for _, _, code in last_hidden]).view(1, side, side)
    condition = model.residual_condition(torch.stack([h for h, _, _ in last_hidden]), codes.flatten())
    unconditional_condition = model.residual_condition(torch.stack([h for _, h, _ in last_hidden]), codes.flatten())
    residual = torch.zeros(side * side, codebook.shape[1])
    if residual_steps:
        residual = model.residual_head.sample(condition, residual_steps, generator, unconditional_condition,
                                              cfg_scale - 1)
    latent = model.image_tokenizer.quantizer.embed(codes).float() + residual.view(1, side, side, -1).permute(0, 3, 1, 2)
    tensor_to_pil(model.image_tokenizer.decode_latent(latent))
    final = model.image_block_embeddings(len(scales), latent)
    model.extend(cache, final, torch.zeros(1, final.shape[1], dtype=torch.long))
    return time.perf_counter() - started


def our_text_seconds(model: UnifiedVLM, tokens: int) -> tuple[float, int]:
    config = GenerationConfig(temperature=0.0, max_new_tokens=tokens, min_new_tokens=tokens, max_images=0)
    started = time.perf_counter()
    count = sum(len(event.token_ids) for event in stream_generate(model, TEXT_PROMPT, config)
                if isinstance(event, TextDelta))
    return time.perf_counter() - started, count


@torch.no_grad()
def hf_text_seconds(stock: AutoModelForCausalLM, prompt_ids: torch.Tensor, tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    output = stock.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False,
                            max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=stock.config.eos_token_id)
    return time.perf_counter() - started, output.shape[1] - prompt_ids.shape[1]


def run(model: UnifiedVLM, stock: AutoModelForCausalLM, args: argparse.Namespace) -> dict:
    seeds = iter(range(10_000))
    next_scale_image_seconds(model, args.cfg_scale, args.residual_steps, next(seeds))  # warm-up
    timings = [next_scale_image_seconds(model, args.cfg_scale, args.residual_steps, next(seeds))
               for _ in range(args.repeats)]
    shown = statistics.median(seconds for seconds, _ in timings)
    next_scale = statistics.median(seconds for _, seconds in timings)
    breakdown = image_breakdown(model, args.cfg_scale, args.residual_steps, args.repeats)
    scale_positions, final_positions = image_positions(model.image_tokenizer.config.scales, args.cfg_scale != 1)
    parameters = backbone_matmul_parameters(model)
    forward_ms = sum(ms for name, ms in breakdown.items() if name.endswith("forward"))
    forward_gflop = 2 * parameters * (scale_positions + final_positions) / 1e9
    raster = median_of(lambda: raster_image_seconds(model, args.cfg_scale, args.residual_steps, next(seeds)),
                       args.repeats)
    tokenizer = model.processor.tokenizer
    prompt_ids = tokenizer.apply_chat_template(TEXT_PROMPT, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)["input_ids"]
    ours, hf = [], []
    our_text_seconds(model, args.text_tokens)
    hf_text_seconds(stock, prompt_ids, args.text_tokens)
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
        seconds, count = our_text_seconds(model, args.text_tokens)
        ours.append(count / seconds)
        seconds, count = hf_text_seconds(stock, prompt_ids, args.text_tokens)
        hf.append(count / seconds)
    peers = {}
    if args.peers:
        llama = llama_cpp_tokens_per_s(prompt_ids[0].tolist(), args.text_tokens, torch.get_num_threads(), args.repeats)
        rate = statistics.median(llama["tokens_per_s"])
        peers = {"llama_cpp_tokens_per_s": rate, "llama_cpp_version": llama["version"],
                 "text_fraction_of_llama_cpp": statistics.median(ours) / rate}
    return {
        "ms_per_image_next_scale": 1000 * next_scale,
        "ms_to_image_shown": 1000 * shown,
        "ms_per_image_raster": 1000 * raster,
        "text_tokens_per_s": statistics.median(ours),
        "hf_generate_tokens_per_s": statistics.median(hf),
        **peers,
        "image_breakdown_ms": breakdown,
        "image_forward_positions": scale_positions + final_positions,
        "image_forward_gflop": forward_gflop,
        "image_forward_gflops_per_s": forward_gflop / (forward_ms / 1000),
        "matmul_peak_gflops_per_s": {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)},
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, description = load_chat_model_and_source(args.model, resolve_dtype(args.dtype), args.int8)
    memory = memory_mb(model, args.cfg_scale, args.residual_steps)
    stock, _ = load_backbone(model.config.backbone, torch.float32)  # the stock model as users load it
    stock.eval()
    results = {**run(model, stock, args), **memory}
    scales = model.image_tokenizer.config.scales
    print(f"model: {description}; backbone in {model.decoder_dtype}; {torch.get_num_threads()} CPU threads; "
          f"median of {args.repeats} runs")
    print(f"image: {model.image_tokenizer.config.image_size}px, scales {scales}, cfg {args.cfg_scale}, "
          f"{args.residual_steps} residual steps; text: {args.text_tokens} greedy tokens\n")
    print("| measurement | value |\n|---|---|")
    forwards = len(scales) + 1  # the scales and the final block
    print(f"| ms per image, next-scale ({forwards} decoder forwards) | {results['ms_per_image_next_scale']:.1f} |")
    print(f"| ms until that image is shown (before its final block) | {results['ms_to_image_shown']:.1f} |")
    raster = sum(size * size for size in scales) + 2
    print(f"| ms per image, raster ({raster} decoder forwards) | {results['ms_per_image_raster']:.1f} |")
    print(f"| speed-up of next-scale | {results['ms_per_image_raster'] / results['ms_per_image_next_scale']:.1f}x |")
    print(f"| text tokens/s, our loop | {results['text_tokens_per_s']:.1f} |")
    print(f"| text tokens/s, backbone generate() (float32) | {results['hf_generate_tokens_per_s']:.1f} |")
    text_ratio = results["text_tokens_per_s"] / results["hf_generate_tokens_per_s"]
    print(f"| our text speed / generate()'s | {text_ratio:.2f}x |")
    if args.peers:
        print(f"| text tokens/s, llama.cpp {results['llama_cpp_version']} (Q4_1 GGUF) | "
              f"{results['llama_cpp_tokens_per_s']:.1f} |")
        print(f"| our text speed as a fraction of llama.cpp's | {results['text_fraction_of_llama_cpp']:.2f} |")
    print(f"| resident memory with the model loaded, MB | {results['rss_at_rest_mb']:.0f} |")
    print(f"| peak resident memory while drawing, MB | {results['peak_rss_drawing_mb']:.0f} |")
    breakdown = results["image_breakdown_ms"]
    total = sum(breakdown.values())
    print(f"\nwhere one next-scale image's time goes (timed inside the loop; {total:.0f} ms in all):\n")
    print("| stage | ms | share |\n|---|---|---|")
    for name, ms in breakdown.items():
        print(f"| {name} | {ms:.1f} | {ms / total:.0%} |")
    peaks = results["matmul_peak_gflops_per_s"]
    print(f"\ndecoder forwards: {results['image_forward_positions']} positions, "
          f"{results['image_forward_gflop']:.1f} GFLOP of weight matmuls, "
          f"{results['image_forward_gflops_per_s']:.0f} GFLOP/s achieved; a {2048}x576x1536 matmul on this "
          f"machine: {peaks['fp32']:.0f} GFLOP/s fp32, {peaks['bf16']:.0f} GFLOP/s bf16")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
