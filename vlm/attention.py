"""Which attention kernel the backbone runs, chosen at run time and checked before use.

Every mask here is a 4-D block-causal mask, which PyTorch's SDPA takes on any device, so
SDPA is the default everywhere. On a GPU, FlexAttention (through transformers'
`flex_attention` implementation) can be faster for long sequences; it is tried first
there, and kept only if it reproduces SDPA's outputs on a block-causal probe. flash-attn
is not used: its kernels take causal or padding masks only, not a block-causal one.
Nothing here is required: any failure falls back to SDPA with a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

SDPA = "sdpa"
FLEX = "flex_attention"


def candidate_implementations(device: torch.device) -> list[str]:
    """Preferred kernels for a device, best first.

    Training on a CPU keeps SDPA too: transformers' eager attention was ~15% faster on one
    profiled batch of conversations up to ~700 positions, no faster over six real steps, and it
    keeps every (T x T) attention matrix for the backward: a 12.9 GB trainer, its time going to
    page faults (docs/default_model). `training.train --attention eager` still picks it.
    """
    if device.type == "cuda":
        try:
            from torch.nn.attention import flex_attention  # noqa: F401
        except ImportError:
            return [SDPA]
        return [FLEX, SDPA]
    return [SDPA]


def _probe(model: nn.Module) -> torch.Tensor:
    """Hidden states of a small block-causal input: three text tokens, a 4-position block, one token."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    blocks = torch.tensor([[0, 1, 2, 3, 3, 3, 3, 4]], device=device)
    allowed = blocks[:, None, :] <= blocks[:, :, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(1, 8, model.config.hidden_size, generator=generator).to(device, dtype)
    with torch.no_grad():
        output = model.get_decoder()(inputs_embeds=embeddings, attention_mask=mask[:, None],
                                     position_ids=torch.arange(8, device=device)[None])
    return output.last_hidden_state.float()


def select_attention(model: nn.Module, candidates: Sequence[str] | None = None, tolerance: float = 2e-2) -> str:
    """Switch `model` (an HF causal LM) to the first candidate kernel that matches SDPA on the probe."""
    device = next(model.parameters()).device
    candidates = list(candidates) if candidates is not None else candidate_implementations(device)
    model.set_attn_implementation(SDPA)
    reference = _probe(model)
    for name in candidates:
        if name == SDPA:
            model.set_attn_implementation(SDPA)
            return SDPA
        try:
            model.set_attn_implementation(name)
            difference = (_probe(model) - reference).abs().max().item()
        except Exception as error:  # any failure of an optional kernel means: do not use it
            logger.info("attention kernel %s is unavailable here (%s); trying the next", name, error)
            continue
        if difference <= tolerance:
            logger.info("using attention kernel %s (max difference to SDPA %.2g)", name, difference)
            return name
        logger.warning("attention kernel %s differs from SDPA by %.3g on a block-causal probe; not used",
                       name, difference)
    model.set_attn_implementation(SDPA)
    return SDPA
