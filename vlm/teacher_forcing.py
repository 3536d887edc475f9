"""Teacher forcing: the unified model's training losses and what is measured with the true codes fed.

A drawn image is fed with its true codes at every scale (the tokenizer's teacher-forcing
inputs); the image head is scored on the next scale's codes, the residual head on the true
residual at the last scale's positions. The same functions give the memorise-16 judge its
teacher-forced accuracy and residual-head distillation its (condition, residual) pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from vlm.configuration import image_scale_weights
from vlm.processor import IGNORE_INDEX, ProcessedBatch, image_block_layout
from vlm.tokenizer import HybridTokens

if TYPE_CHECKING:
    from vlm.unified_model import UnifiedVLM


def dropped_drawings(model: UnifiedVLM, batch: ProcessedBatch, generator: torch.Generator | None,
                     probability: float | None = None) -> set[int]:
    """Classifier-free guidance training: which drawn images (`image_index`es) lose their
    condition, each with `probability` (by default the model's condition dropout; 1.0 takes
    them all). A dropped image sees nothing before its <|image_start|> (`blind_drawings`) and
    gets no source hint (`UnifiedVLM.embed`): exactly what the unconditional branch sees."""
    chance = model.config.condition_dropout if probability is None else probability
    return {layout.image_index for layout in batch.images
            if layout.generated and (chance >= 1.0 or torch.rand((), generator=generator) < chance)}


def blind_drawings(model: UnifiedVLM, batch: ProcessedBatch, mask: torch.Tensor, images: set[int]) -> torch.Tensor:
    """`mask` with the drawn `images` (`image_index`es) seeing nothing before their <|image_start|>.

    The <|image_start|> itself is cut off from what precedes it too: at inference the
    unconditional rows feed it fresh, with nothing cached before it, so its keys and values
    carry no prompt. Left seeing the prompt, it would pass the condition to the image in
    every layer above the first (a test compares the two).
    """
    mask = mask.clone()
    minimum = torch.finfo(mask.dtype).min
    for layout in batch.images:
        if layout.generated and layout.image_index in images:
            length = len(image_block_layout(model.image_tokenizer.config.scales, layout.generated,
                                            layout.final_block)[0])
            mask[layout.sequence_index, 0, layout.start - 1:layout.start + length, :layout.start - 1] = minimum
    return mask


def teacher_forced_losses(model: UnifiedVLM, batch: ProcessedBatch, tokens: HybridTokens | None,
                          text_logits: torch.Tensor | None, hidden: torch.Tensor, generator: torch.Generator | None,
                          metrics: dict[str, torch.Tensor], reference_text_logits: torch.Tensor | None = None,
                          text_kl_weight: float = 0.0
                          ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
    """`text_logits` None: computed here at the labelled positions only (the same loss).
    Fills `metrics` with detached per-scale image losses; also returns the residual head's
    detached (residual, condition) pairs, None without drawn images.

    `reference_text_logits` (from `reference_text_logits`, the same labelled positions) adds
    "text_kl": KL(reference || model) per labelled token, weighted by `text_kl_weight` in the
    total, and takes the place of the text cross-entropy there (still logged as "text"): the
    replies were sampled from the reference, and learning those few samples by heart made the
    model surer of them than the reference was (on the long run's 525 text-only chats the KL
    was 2.3 nats per token while their cross-entropy was ~0.3).
    """
    losses: dict[str, torch.Tensor] = {}
    residual_pairs = None
    targets = batch.text_labels.to(model.device)[:, 1:]
    labelled = targets != IGNORE_INDEX
    if labelled.any():
        logits = model.text_logits(hidden[:, :-1][labelled]) if text_logits is None \
            else text_logits[:, :-1][labelled]
        losses["text"] = F.cross_entropy(logits.float(), targets[labelled])
        if reference_text_logits is not None:
            losses["text_kl"] = text_kl(logits, reference_text_logits)
    drawn = list(drawn_images(batch, tokens, hidden)) if tokens is not None else []
    if drawn:
        scales = model.image_tokenizer.config.scales
        scale_hidden, scale_codes, last_hidden, last_codes, residuals = [], [], [], [], []
        for _, positions, codes, image_tokens in drawn:
            scale_hidden.append(positions)
            scale_codes.append(codes)
            last = scales[-1] ** 2
            last_hidden.append(positions[-last:])
            last_codes.append(codes[-last:])
            residuals.append(image_tokens.residual.flatten(2).transpose(1, 2)[0])
        logits = model.image_head(torch.cat(scale_hidden))
        per_token = F.cross_entropy(logits.float(), torch.cat(scale_codes), reduction="none")
        sizes = torch.tensor([size * size for size in scales], device=per_token.device)
        scale_of = torch.arange(len(scales), device=per_token.device).repeat_interleave(sizes).repeat(len(drawn))
        per_scale = torch.zeros(len(scales), device=per_token.device).index_add(0, scale_of, per_token) \
            / (sizes * len(drawn))
        losses["image"] = (image_scale_weights(scales, model.config.image_loss_per).to(per_scale) * per_scale).sum()
        metrics.update({f"image_scale_{index + 1}": value.detach() for index, value in enumerate(per_scale)})
        condition = model.residual_condition(torch.cat(last_hidden), torch.cat(last_codes))
        residual = torch.cat(residuals)
        losses["residual"] = model.residual_head.loss(residual, condition, generator)
        residual_pairs = (residual.detach(), condition.detach())
    weights = {"text": 0.0 if "text_kl" in losses else 1.0, "image": model.config.image_loss_weight,
               "residual": model.config.residual_loss_weight, "text_kl": text_kl_weight}
    if losses:
        losses["total"] = sum(weights[name] * value for name, value in losses.items())
    return losses, residual_pairs


def text_kl(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean KL(reference || model) over positions, in nats: on replies the reference model wrote,
    the model's expected loss is the reference's entropy plus exactly this."""
    if logits.shape != reference.shape:
        raise ValueError(f"reference text logits {tuple(reference.shape)} do not match the model's "
                         f"{tuple(logits.shape)} (the same labelled positions of the same batch?)")
    return F.kl_div(F.log_softmax(logits.float(), dim=-1), F.log_softmax(reference.float(), dim=-1),
                    log_target=True, reduction="batchmean")


@torch.no_grad()
def reference_text_logits(model: UnifiedVLM, batch: ProcessedBatch) -> torch.Tensor:
    """The stock backbone's text logits (the LoRA adapters switched off) at the labelled
    positions of a text-only batch, in the order `teacher_forced_losses` takes them.

    What keeps the model's text where the backbone had it: on text-only chats the stock model
    is the teacher, with its whole distribution per token rather than one sampled reply.
    """
    from peft import PeftModel

    if not isinstance(model.backbone, PeftModel):
        raise ValueError("a text KL term needs LoRA adapters to switch off (finetune 'lora'); a fully "
                         "fine-tuned backbone no longer holds the stock weights")
    if batch.images:
        raise ValueError("reference text logits are for text-only conversations; this batch has images")
    labelled = batch.text_labels.to(model.device)[:, 1:] != IGNORE_INDEX
    with model.backbone.disable_adapter():
        embeddings = model.embed(batch, None)
        hidden = model.run_decoder(embeddings, batch.attention_mask(embeddings.dtype), batch.position_ids)
        return model.text_logits(hidden[:, :-1][labelled])


def drawn_images(batch: ProcessedBatch, tokens: HybridTokens, hidden: torch.Tensor):
    """Per drawn image: its layout, scale-block hidden states, codes (every scale, flat) and tokens."""
    for layout in batch.images:
        if layout.generated:
            image_tokens = tokens[layout.image_index]
            codes = torch.cat([code.flatten() for code in image_tokens.codes])
            yield layout, hidden[layout.sequence_index, layout.start:layout.start + codes.numel()], codes, \
                image_tokens


def teacher_forced_hidden(model: UnifiedVLM, batch: ProcessedBatch, tokens: HybridTokens | None,
                          blind: bool = False) -> tuple[HybridTokens, torch.Tensor]:
    """The true codes fed: (tokens, last hidden states). No condition dropout, or with `blind`
    every drawn image blind to what precedes it (the unconditional branch's view)."""
    if tokens is None:
        tokens = model.image_tokenizer.encode_pixels(batch.pixels.to(model.device))
    blinded = dropped_drawings(model, batch, None, probability=1.0) if blind else set()
    embeddings = model.embed(batch, tokens, blinded)
    mask = blind_drawings(model, batch, batch.attention_mask(embeddings.dtype), blinded)
    return tokens, model.run_decoder(embeddings, mask, batch.position_ids)

@torch.no_grad()
def teacher_forced_code_logits(model: UnifiedVLM, batch: ProcessedBatch, tokens: HybridTokens | None = None
                               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per drawn image, with the true codes fed: (codebook logits, true codes) over its scale
    positions, every scale in order (scale 1 first). No condition dropout: what the model
    predicts for the conversation as given. Used to measure teacher-forced accuracy."""
    tokens, hidden = teacher_forced_hidden(model, batch, tokens)
    return [(model.image_head(positions).float(), codes)
            for _, positions, codes, _ in drawn_images(batch, tokens, hidden)]

@torch.no_grad()
def teacher_forced_residuals(model: UnifiedVLM, batch: ProcessedBatch, tokens: HybridTokens | None = None,
                             blind: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """With every drawn image's true codes fed: the residual head's conditions (n, s*s, hidden),
    the true residuals (n, s*s, C), and each image's index in `batch.pixels`.

    What residual-head distillation trains on, and what isolates the head in its benchmark
    (the decoder's part is fixed by the true codes). With `blind`, the conditions of the
    unconditional branch (each image blind to its prompt), which guided sampling pairs with them.
    """
    tokens, hidden = teacher_forced_hidden(model, batch, tokens, blind)
    last = model.image_tokenizer.config.scales[-1] ** 2
    conditions, residuals, indices = [], [], []
    for layout, positions, codes, image_tokens in drawn_images(batch, tokens, hidden):
        conditions.append(model.residual_condition(positions[-last:], codes[-last:]).float())
        residuals.append(image_tokens.residual.flatten(2).transpose(1, 2)[0].float())
        indices.append(layout.image_index)
    if not conditions:
        raise ValueError("the batch has no drawn (assistant) images to take residuals from")
    return torch.stack(conditions), torch.stack(residuals), indices
