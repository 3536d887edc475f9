"""Text kept: perplexity of assistant replies in text-only chats, stock backbone vs trained model.

The chats are written by the stock backbone itself with an evaluation seed (prompts from the
same topic and template lists as the training chats, replies sampled afresh), so the base
perplexity is what "unchanged language" looks like and the model's shows what tuning cost.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from benchmarks.evaluation.common import EvalSettings
from vlm.backbone import load_backbone
from vlm.processor import IGNORE_INDEX
from vlm.unified_model import UnifiedVLM
from worlds.text_chats import text_conversations


def heldout_chats(settings: EvalSettings, backbone: str | None) -> list[list[dict]]:
    return list(text_conversations(random.Random(f"text-eval-{settings.seed}"), settings.text_chats, backbone))


def reply_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """(summed negative log-likelihood, count) of the labelled tokens (the assistant's) of a processed
    chat, from its logits (B, L, vocab) and `text_labels` (B, L): each position predicts the next."""
    labels = labels[:, 1:]
    logits = logits[:, :-1].float()
    total = float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"))
    return total, int((labels != IGNORE_INDEX).sum())


@torch.no_grad()
def _perplexity(logits_of, model: UnifiedVLM, chats: list[list[dict]]) -> float:
    total, count = 0.0, 0
    for chat in chats:
        batch = model.processor(chat)
        nll, tokens = reply_nll(logits_of(batch), batch.text_labels)
        total += nll
        count += tokens
    return math.exp(total / count) if count else float("nan")  # nan: no finished chat to score


def text_perplexities(model: UnifiedVLM, settings: EvalSettings) -> tuple[float, float, int]:
    """(stock backbone ppl, model ppl, chats) on the same held-out chats and tokens."""
    backbone_path = model.config.backbone
    chats = heldout_chats(settings, backbone_path)
    base, _ = load_backbone(backbone_path)
    base.eval()
    vocabulary = base.get_input_embeddings().weight.shape[0]
    base_ppl = _perplexity(lambda batch: base(input_ids=batch.input_ids).logits[..., :vocabulary], model, chats)
    model_ppl = _perplexity(lambda batch: model(batch).text_logits, model, chats)
    return base_ppl, model_ppl, len(chats)
