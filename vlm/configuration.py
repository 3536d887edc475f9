"""The unified model's configuration: everything needed to rebuild it around a stock backbone.

Kept apart from the model (as Hugging Face keeps configuration_x.py beside modeling_x.py) so
that trainers, configs on disk and the loss weighting can be read without the model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vlm.backbone import DEFAULT_BACKBONE
from vlm.config_io import config_from_dict
from vlm.residual_head import ResidualHeadConfig

IMAGE_TOKENIZER_DIR = "image_tokenizer"  # the model folder's copy of its image tokenizer
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# How the image loss weighs each scale's mean code loss: "token" by its number of codes (the
# finest scale, 64 of 130 codes, dominates and the single first code is 1/130), "scale" equally
# (the coarse codes that place the object weigh more), "side" by its side length (in between).
IMAGE_LOSS_WEIGHTINGS = ("token", "scale", "side")


def image_scale_weights(scales: tuple[int, ...], per: str) -> torch.Tensor:
    """Weights (summing to 1) of each scale's mean code loss in the image loss."""
    sizes = torch.tensor(scales, dtype=torch.float32)
    weights = {"token": sizes.square(), "scale": torch.ones_like(sizes), "side": sizes}[per]
    return weights / weights.sum()


# What a saved config that lacks a field meant when it was written (before the field existed).
LEGACY_CONFIG_VALUES = {"image_input_norm": False, "source_hint": False}


@dataclass
class UnifiedVLMConfig:
    """Everything needed to rebuild the model around a stock backbone; saved as JSON."""

    backbone: str = DEFAULT_BACKBONE  # the default's name, or a local HF folder
    finetune: str = "lora"  # "lora": adapters + new token rows; "full": every backbone weight
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_target_modules: tuple[str, ...] = LORA_TARGETS
    num_position_frequencies: int = 8
    condition_dropout: float = 0.1
    image_loss_weight: float = 1.0
    image_loss_per: str = "token"  # "token" (each code the same), "scale" (each scale the same) or "side"
    residual_loss_weight: float = 1.0
    attention: str = "auto"  # backbone attention kernel: "auto" (checked at load; vlm.attention), "sdpa", ...
    # Image inputs RMS-normalised to the text embeddings' scale (see ImageEmbedder). Off by default:
    # on the memorise-16 benchmark it did not move the loss (docs/overfit); kept for A/Bs.
    image_input_norm: bool = False
    # A drawn image's scale positions also read the previous image of the conversation where
    # they draw (ImageEmbedder.hint): edits and step-by-step drawings start from their source.
    source_hint: bool = False
    residual_head: ResidualHeadConfig = field(default_factory=ResidualHeadConfig)
    # What the weights were saved with, written by save_pretrained and checked by from_pretrained
    # (None: not saved yet). `image_tokenizer` is the folder inside the model that holds its
    # tokenizer, or the name of a tokenizer shipped in the package (vlm.tokenizer.PACKAGED_TOKENIZERS:
    # "tokenizer512", "cosine4096"), which must have the saved fingerprint.
    vocab_size: int | None = None
    image_tokenizer: str = IMAGE_TOKENIZER_DIR
    image_tokenizer_fingerprint: str | None = None

    @classmethod
    def from_dict(cls, values: dict, source: str | None = None) -> UnifiedVLMConfig:
        """A saved config; a key that is not a field is refused, naming it. A field the saved
        file lacks takes its legacy value (LEGACY_CONFIG_VALUES), else its default."""
        return config_from_dict(cls, {**LEGACY_CONFIG_VALUES, **values}, source)

    def __post_init__(self) -> None:
        self.lora_target_modules = tuple(self.lora_target_modules)
        if self.image_loss_per not in IMAGE_LOSS_WEIGHTINGS:
            raise ValueError(f"image_loss_per must be one of {', '.join(IMAGE_LOSS_WEIGHTINGS)}, "
                             f"got {self.image_loss_per!r}")
        if self.finetune not in ("lora", "full"):
            raise ValueError(f"finetune must be 'lora' or 'full', got {self.finetune!r}")
