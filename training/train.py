"""Instruction-tune the unified model on mixed text/image conversations.

    python -m training.train --data data/default/mix.yaml --output-dir runs/model
    python -m training.train --config my_run.yaml                    # the same flags as YAML/JSON keys
    python -m training.train --init default --data my.jsonl --output-dir runs/mine   # fine-tune the default model
    accelerate launch --config_file training/accelerate/ddp.yaml -m training.train --config my_run.yaml

Running the same command again resumes from OUTPUT/checkpoint (model, optimizer,
scheduler, RNG and data position). OUTPUT/model is the trained model: load it with
`UnifiedVLM.from_pretrained`, `python -m chat --model OUTPUT/model` or
`python app.py --model OUTPUT/model`. OUTPUT/log.csv has the losses, OUTPUT/loss_curve.png
their plot, OUTPUT/samples/ images generated at each checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import broadcast
from torch import nn
from tqdm.auto import tqdm

from training.batching import length_groups
from training.cli import parse_config
from training.mixed_data import MixedConversations
from training.residual_updates import update_residual_head
from training.run_log import append_row, resume_log, write_loss_curve
from training.schedule import use_config_peaks, warmup_cosine
from training.state_io import has_state, load_state, restore_rng, rng_state, save_state
from training.token_cache import TokenCache
from training.validation import VALIDATION_LOG, HeldOutLosses, log_validation, write_validation_curve
from vlm.backbone import bf16_is_fast
from vlm.files import recover, swap_in
from vlm.teacher_forcing import reference_text_logits
from vlm.unified_model import UnifiedVLM, UnifiedVLMConfig

logger = logging.getLogger(__name__)

SAMPLE_PROMPTS = ["Draw a red circle.", "Draw a smiling face.", "How do I draw a house? Show me step by step."]


@dataclass
class TrainConfig:
    data: str = ""  # a JSONL file, or a YAML mix: {"sources": [{"path": ..., "weight": ...}]}
    output_dir: str = ""
    init: str = "new"  # "new" (default backbone, untrained image layers), "default" (shipped model) or a folder
    backbone: str | None = None  # for init "new": a HF causal-LM folder (default: SmolLM2-135M-Instruct)
    image_tokenizer: str | None = None  # for init "new": a tokenizer folder (default: the shipped one)
    finetune: str = "lora"  # for init "new": "lora" or "full"
    lora_rank: int = 16
    lora_alpha: int | None = None  # None: 2 x lora_rank (the shipped rank-16 model used 32)
    condition_dropout: float = 0.1
    image_input_norm: bool = False  # for init "new": image inputs at the text embeddings' scale
    source_hint: bool = False  # drawings read the conversation's previous image (added if the model lacks it)
    image_loss_per: str = "token"  # "token" or "scale": how the image loss averages over codes
    steps: int = 2000
    batch_size: int = 4
    gradient_accumulation: int = 2
    attention: Literal["auto", "eager", "sdpa"] = "auto"  # the backbone's attention kernel while training
    max_batch_tokens: int = 2048  # per forward: a batch is split by length into forwards of this size; 0: not
    learning_rate: float = 5e-4
    image_layers_learning_rate: float | None = None  # None: the same as learning_rate
    residual_head_learning_rate: float | None = None  # None: the same as learning_rate
    residual_head_updates: int = 0  # extra head-only updates per step on the step's (residual, condition) pairs
    warmup_steps: int = 100
    min_learning_rate_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    checkpoint_every: int = 200
    log_every: int = 10
    sample_every_checkpoint: bool = True
    validation_data: str | None = None  # a JSONL file or a YAML mix of held-out conversations
    validation_conversations: int = 24  # per source of validation_data
    validation_every: int | None = None  # None: at every checkpoint
    text_kl_weight: float = 0.0  # KL to the stock backbone (adapters off) on text-only chats' replies; 0: off
    stop_after_minutes: float | None = None  # checkpoint, save and stop after this much wall time; re-run resumes
    seed: int = 0


HELP = {
    "data": "training data: a JSONL file of conversations, or a YAML mix of several with weights",
    "output_dir": "folder for checkpoint/, model/, log.csv, loss_curve.png, samples/; resumes from its checkpoint",
    "init": "'new' (default backbone + untrained image layers), 'default' (the shipped model) or a model folder",
    "backbone": "with --init new: a Hugging Face causal-LM folder (default: SmolLM2-135M-Instruct)",
    "image_tokenizer": "with --init new: an image tokenizer folder (save_pretrained; default: the shipped one)",
    "finetune": "with --init new: 'lora' (adapters + new layers) or 'full' (every backbone weight too)",
    "lora_rank": "with --init new: LoRA rank",
    "lora_alpha": "with --init new: LoRA alpha; adapters are scaled by alpha / rank, so a fixed alpha makes a "
                  "higher rank learn slower; unset: 2 x --lora-rank",
    "condition_dropout": "share of drawn images trained without their prompt (classifier-free guidance)",
    "image_loss_per": "how each scale's mean code loss is weighed: 'token' (by its number of codes; the 64 "
                      "finest codes dominate), 'scale' (equally) or 'side' (by its side length, in between)",
    "image_input_norm": "with --init new: RMS-normalise image inputs to the text embeddings' scale "
                        "(without it they are ~4x larger; it did not change the memorise-16 loss)",
    "source_hint": "a drawn image's scale positions also read the conversation's previous image where they "
                   "draw (edits, step-by-step drawings); a model without the layer gets it, starting at zero",
    "steps": "optimizer steps in total",
    "batch_size": "conversations per forward on each process",
    "gradient_accumulation": "batches per optimizer step",
    "attention": "attention kernel while training: 'auto' (the model's own choice: SDPA, or FlexAttention on "
                 "a GPU where it checks out), 'eager' or 'sdpa'. Eager keeps every attention matrix for the "
                 "backward (GBs at 1,000+ positions). Not saved with the model",
    "max_batch_tokens": "padded positions per forward: each batch is sorted by length and split into forwards "
                        "of at most this many (a longer conversation goes alone), so short drawings are not "
                        "padded to long step-by-step answers; the gradient is the batch's all the same. "
                        "0: one forward per batch",
    "learning_rate": "peak AdamW learning rate (backbone: adapters, or every weight with --finetune full)",
    "image_layers_learning_rate": "peak learning rate of the new layers that read and write codes (image "
                                  "embedder, image head); default: --learning-rate",
    "residual_head_learning_rate": "peak learning rate of the residual diffusion head (its loss diverged at "
                                   "1e-2 where the image head thrived); default: --learning-rate",
    "residual_head_updates": "extra updates of the residual head alone after each step, on the (residual, "
                             "condition) pairs that step computed, with fresh noise (a few ms each; the head "
                             "learns slower than the codes otherwise)",
    "warmup_steps": "linear warm-up steps before cosine decay",
    "min_learning_rate_ratio": "the cosine decay ends at this fraction of the peak",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "gradient clipping norm",
    "mixed_precision": "'auto' (bf16 where the hardware has bf16 units: CUDA, or a CPU with AVX512/AMX; fp32 "
                       "elsewhere), 'no' (fp32) or 'bf16' autocast. On an AVX2-only CPU a bf16 step is ~15x "
                       "slower than fp32",
    "checkpoint_every": "steps between checkpoints (and samples)",
    "log_every": "steps between log.csv rows",
    "sample_every_checkpoint": "generate a few sample replies into samples/ at each checkpoint",
    "validation_data": "held-out conversations (a JSONL file or a YAML mix, e.g. data/default/validation/mix.yaml): "
                       "their losses per source go to validation.csv and validation_curve.png; an empty value "
                       "turns it off (over a config file that sets it)",
    "validation_conversations": "held-out conversations scored per source of --validation-data",
    "validation_every": "steps between held-out measurements (also one before the first step); "
                        "default: --checkpoint-every",
    "text_kl_weight": "weight of a loss that keeps the replies of text-only chats where the stock backbone has "
                      "them: KL(backbone || model) per reply token, the backbone being this model with its LoRA "
                      "adapters switched off, in place of their cross-entropy (learning a few sampled replies "
                      "by heart made the model surer of them than the backbone). One extra forward without "
                      "gradients over the text-only chats, which go in forwards of their own. Needs "
                      "--finetune lora; 0: off (cross-entropy)",
    "stop_after_minutes": "after the step that passes this many minutes of wall time (from this start), "
                          "checkpoint, save the model and stop; the same command resumes (for a session or a "
                          "lent GPU with a time limit); unset: run to --steps",
    "seed": "seed for weights, data order, condition dropout and diffusion noise",
}


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    return parse_config(TrainConfig, HELP, argv, prog="python -m training.train", doc=__doc__,
                        required=("data", "output_dir"))


def resolve_precision(requested: str) -> str:
    """'auto' -> 'bf16' where bf16 matmuls are fast (`vlm.backbone.bf16_is_fast`), else 'no'."""
    if requested != "auto":
        return requested
    return "bf16" if bf16_is_fast() else "no"


IMAGE_LAYER_PREFIXES = ("image_embedder.", "image_head.")
RESIDUAL_HEAD_PREFIX = "residual_head."


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups, each at its own rate: the backbone's trainable weights, the new layers
    that read and write codes, and the residual head.

    The new layers start from scratch on features the backbone already has, and learn far
    faster with a higher rate (docs/overfit); the residual head's diffusion loss does not
    tolerate the same rate, so it has its own.
    """
    backbone, image, residual = [], [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            group = image if name.startswith(IMAGE_LAYER_PREFIXES) else \
                residual if name.startswith(RESIDUAL_HEAD_PREFIX) else backbone
            group.append(parameter)
    return [{"params": backbone, "lr": config.learning_rate},
            {"params": image, "lr": config.image_layers_learning_rate or config.learning_rate},
            {"params": residual, "lr": config.residual_head_learning_rate or config.learning_rate}]


def frozen_linears_in_bf16(model: UnifiedVLM) -> int:
    """Store the backbone's frozen Linear weights in bf16, for training under bf16 autocast;
    returns how many. Autocast keeps a cast copy only of weights that take gradients, so it
    cast every frozen fp32 weight again at every forward: a profiled 69-token forward and
    backward spent a third of its time in those copies. The same bf16 values then go into the
    same matmuls, so losses and gradients are bit for bit those of fp32 storage (tested).
    Only the decoder layers' projections: the text head (tied to the embedding in SmolLM2),
    the norms and everything trainable stay float32; nothing of the frozen backbone is saved,
    so the files are unchanged."""
    count = 0
    for module in model.language_model.get_decoder().layers.modules():
        if type(module) is nn.Linear and module.weight.dtype == torch.float32 \
                and not any(parameter.requires_grad for parameter in module.parameters()):
            module.to(torch.bfloat16)
            count += 1
    return count


def build_model(config: TrainConfig, checkpoint: Path) -> UnifiedVLM:
    if (checkpoint / "model").is_dir():
        return UnifiedVLM.from_pretrained(checkpoint / "model", for_training=True)
    if config.init == "new":
        model_config = UnifiedVLMConfig(finetune=config.finetune, lora_rank=config.lora_rank,
                                        lora_alpha=config.lora_alpha or 2 * config.lora_rank,
                                        condition_dropout=config.condition_dropout,
                                        image_input_norm=config.image_input_norm,
                                        source_hint=config.source_hint)
        model_config.image_loss_per = config.image_loss_per
        if config.backbone:
            model_config.backbone = config.backbone
        return UnifiedVLM.from_backbone(model_config, config.image_tokenizer)
    model = UnifiedVLM.from_pretrained(None if config.init == "default" else config.init, for_training=True)
    if model.residual_head.drop_one_step():
        logger.warning("the model's distilled one-step residual head was dropped: it no longer matches the head "
                       "once training moves it; re-distil after training (python -m training.distill_residual)")
    model.config.condition_dropout = config.condition_dropout
    model.config.image_loss_per = config.image_loss_per
    if config.source_hint and not model.config.source_hint:
        model.add_source_hint()
    return model


def forward_groups(model: UnifiedVLM, conversations: list, config: TrainConfig,
                   held: list[bool] | None = None) -> tuple[list[list[int]], set[int]]:
    """A step's conversations cut into forwards by length (`length_groups`); with a text KL term
    the text-only ones held to the backbone (`held`, per conversation: its source's `text_kl`; all
    when None) go in forwards of their own, the only ones its reference pass runs on. Also
    returns those conversations' indices."""
    batch = model.processor(conversations, skip_unread_final_blocks=True)
    lengths = batch.padding_mask.sum(dim=1).tolist()
    if not config.text_kl_weight:
        return length_groups(lengths, config.max_batch_tokens or None), set()
    with_images = {layout.sequence_index for layout in batch.images}
    text_only = [index for index in range(len(conversations))
                 if index not in with_images and (held is None or held[index])]
    learnt = sorted(set(range(len(conversations))) - set(text_only))
    groups = []
    for indices in (text_only, learnt):
        for group in length_groups([lengths[index] for index in indices], config.max_batch_tokens or None):
            groups.append([indices[position] for position in group])
    return groups, set(text_only)


def save_checkpoint(checkpoint: Path, model: UnifiedVLM, optimizer, scheduler, step: int,
                    generator: torch.Generator) -> None:
    """Everything a resume needs, written beside the old checkpoint and swapped in at the end."""
    staging = checkpoint.with_name(checkpoint.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging / "model")
    save_state(staging, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                         "rng": rng_state(generator)})
    swap_in(staging, checkpoint)


def write_samples(model: UnifiedVLM, out: Path, seed: int,
                  precision: Callable[[], AbstractContextManager] = nullcontext) -> None:
    """A few replies to SAMPLE_PROMPTS, generated in `precision` (the trainer's autocast: bf16
    frozen weights need it)."""
    from generation import GenerationConfig, generate  # generation depends on vlm only; imported late

    # Eval mode with the adapters left unfolded: folding and unfolding would nudge the frozen
    # weights, and a resumed run would then differ from an uninterrupted one.
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, prompt in enumerate(SAMPLE_PROMPTS):
        with precision():
            reply = generate(model, [{"role": "user", "content": prompt}],
                             GenerationConfig(seed=seed, max_new_tokens=80, max_images=5, temperature=0.7))[0]
        for image_index, image in enumerate(reply.images):
            image.save(out / f"prompt{index}_image{image_index}.png")
        lines.append(f"## {prompt}\n{reply.text}\n({len(reply.images)} image(s), ended: {reply.reason})\n")
    (out / "replies.md").write_text("\n".join(lines))
    model.train()
    model.image_tokenizer.eval()


def time_is_up(started: float, minutes: float | None, accelerator: Accelerator) -> bool:
    """Whether `minutes` of wall time have passed since `started`, agreed by every process (the
    first one's clock decides, so all stop at the same step)."""
    if minutes is None:
        return False
    flag = torch.tensor([float(time.time() - started >= 60 * minutes)], device=accelerator.device)
    if accelerator.num_processes > 1:
        flag = broadcast(flag, from_process=0)
    return bool(flag.item())


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    precision = resolve_precision(config.mixed_precision)
    logger.info("mixed precision: %s (asked: %s)", precision, config.mixed_precision)
    # cpu=True: without it, torchrun's processes on a CPU-only machine each train alone.
    # find_unused_parameters: a batch without a drawn image leaves the image head and residual head unused.
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    output = Path(config.output_dir)
    checkpoint = output / "checkpoint"
    recover(checkpoint)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    data = MixedConversations(config.data, config.seed)
    model = build_model(config, checkpoint)
    if config.text_kl_weight < 0:
        raise ValueError(f"--text-kl-weight must be 0 or more, got {config.text_kl_weight}")
    if config.text_kl_weight and model.config.finetune != "lora":
        raise ValueError(f"--text-kl-weight {config.text_kl_weight} needs a LoRA model: its reference is the "
                         f"backbone with the adapters off, and this model's backbone is fine-tuned "
                         f"'{model.config.finetune}'")
    if precision == "bf16" and model.config.finetune == "lora":
        logger.info("%d frozen backbone Linear weights kept in bf16 (bf16 autocast computes with them so anyway)",
                    frozen_linears_in_bf16(model))
    model.train()
    if config.attention != "auto":
        model.language_model.set_attn_implementation(config.attention)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(model, config), betas=(0.9, 0.95),
                                  weight_decay=config.weight_decay)
    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps, config.min_learning_rate_ratio)
    generator = torch.Generator().manual_seed(config.seed)
    step = 0
    if has_state(checkpoint):
        state = load_state(checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        peaks = list(scheduler.base_lrs)
        scheduler.load_state_dict(state["scheduler"])
        if (saved := use_config_peaks(scheduler, peaks)) != peaks:
            logger.warning("peak learning rates changed on resume: %s (checkpoint) -> %s (this run)", saved, peaks)
        step = state["step"]
        restore_rng(state["rng"], generator)
        logger.info("resumed from %s at step %d", checkpoint, step)
    if step >= config.steps:
        logger.info("already trained for %d steps (--steps %d); nothing to do", step, config.steps)
        return
    prepared, optimizer = accelerator.prepare(model, optimizer)
    unwrapped: UnifiedVLM = accelerator.unwrap_model(prepared)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    log_path = output / "log.csv"
    token_cache = TokenCache(unwrapped.image_tokenizer)
    validation_log = output / VALIDATION_LOG
    held_out = HeldOutLosses(config.validation_data, config.validation_conversations, config.batch_size) \
        if config.validation_data else None
    validation_every = config.validation_every or config.checkpoint_every
    if accelerator.is_main_process:
        resume_log(log_path, step)
        resume_log(validation_log, step if step else -1)  # a fresh start measures step 0 again
    scale_columns = [f"image_scale_{index + 1}" for index in range(len(unwrapped.image_tokenizer.config.scales))]
    loss_columns = ["total", "text", *(["text_kl"] if config.text_kl_weight else []), "image", "residual",
                    *scale_columns]
    columns = ["step", *loss_columns, "learning_rate", "tokens", "padding", "tokens_per_s", "seconds"]

    def validate() -> None:
        if held_out is not None and accelerator.is_main_process:
            results = held_out.measure(unwrapped, token_cache, config.seed, accelerator.autocast)
            log_validation(validation_log, step, results, scale_columns,
                           {name: len(conversations) for name, conversations in held_out.sources.items()})
            write_validation_curve(validation_log, output / "validation_curve.png")

    if step == 0:
        validate()
    progress = tqdm(total=config.steps, initial=step, desc="train", disable=not accelerator.is_main_process)
    started = time.time()
    window_tokens, window_padded, window_started = 0, 0, time.time()
    # A log row is the mean over the forwards since the previous row (each loss over the forwards
    # that had it: a batch without text labels has no text loss).
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    while step < config.steps:
        residual_pairs = []
        for micro_step in range(config.gradient_accumulation):
            slice_index = micro_step * accelerator.num_processes + accelerator.process_index
            drawn = data.draw(step, slice_index, config.batch_size)
            conversations = [conversation for _, conversation in drawn]
            # Condition dropout and the residual head's noise: seeded by the slice, like the data.
            generator.manual_seed(config.seed * 1_000_003 + step * 1_009 + slice_index)
            groups, text_only = forward_groups(unwrapped, conversations, config,
                                               [data.text_kl[source] for source, _ in drawn])
            for group_index, group in enumerate(groups):
                batch = unwrapped.processor([conversations[index] for index in group], skip_unread_final_blocks=True)
                share = len(group) / len(conversations) / config.gradient_accumulation
                last = micro_step == config.gradient_accumulation - 1 and group_index == len(groups) - 1
                with nullcontext() if last else accelerator.no_sync(prepared):
                    tokens = token_cache.tokens(batch.pixels) if len(batch.pixels) else None
                    reference = None
                    if config.text_kl_weight and group[0] in text_only:
                        with accelerator.autocast():
                            reference = reference_text_logits(unwrapped, batch)
                    output_ = prepared(batch, tokens, generator=generator, all_logits=False,
                                       reference_text_logits=reference, text_kl_weight=config.text_kl_weight)
                    if "total" in output_.losses:  # a forward of chats whose replies were all cut has none
                        accelerator.backward(output_.losses["total"] * share)
                for name, value in (output_.losses | output_.metrics).items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(group)
                    counts[name] = counts.get(name, 0) + len(group)
                window_tokens += int(batch.padding_mask.sum())
                window_padded += batch.padding_mask.numel()
                if output_.residual_pairs is not None:
                    residual_pairs.append(output_.residual_pairs)
        accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        update_residual_head(unwrapped.residual_head, optimizer, residual_pairs, config.residual_head_updates,
                             generator, accelerator, config.max_grad_norm)
        scheduler.step()
        step += 1
        progress.update(1)
        if "total" in output_.losses:
            progress.set_postfix(loss=f"{float(output_.losses['total'].detach()):.3f}")
        if step % config.log_every == 0 or step == config.steps:
            if accelerator.is_main_process:
                elapsed = time.time() - window_started
                row = {"step": step, **{name: f"{sums[name] / counts[name]:.5f}" if counts.get(name) else ""
                                       for name in loss_columns},
                       "learning_rate": f"{scheduler.get_last_lr()[0]:.3e}", "tokens": window_tokens,
                       "padding": f"{1 - window_tokens / max(window_padded, 1):.3f}",
                       "tokens_per_s": f"{window_tokens / max(elapsed, 1e-9):.1f}",
                       "seconds": f"{time.time() - started:.1f}"}
                append_row(log_path, columns, row)
            window_tokens, window_padded, window_started = 0, 0, time.time()
            sums, counts = {}, {}
        out_of_time = time_is_up(started, config.stop_after_minutes, accelerator)
        if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint(checkpoint, unwrapped, optimizer, scheduler, step, generator)
                unwrapped.save_pretrained(output / "model")
                if config.sample_every_checkpoint:
                    write_samples(unwrapped, output / "samples" / f"step_{step:06d}", config.seed,
                                  accelerator.autocast)
        if step % validation_every == 0 or step == config.steps:
            validate()
        if out_of_time:
            logger.info("stopped at step %d after --stop-after-minutes %g; re-run the same command to resume",
                        step, config.stop_after_minutes)
            break
    progress.close()
    if accelerator.is_main_process:
        write_loss_curve(log_path, output / "loss_curve.png")
        logger.info("done: model in %s, loss curve in %s", output / "model", output / "loss_curve.png")


if __name__ == "__main__":
    main()
