"""What a caller can set for one generation request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

PerScale = float | int | Sequence[float] | Sequence[int] | None


@dataclass
class GenerationConfig:
    """Sampling settings for text and images.

    Image settings (`image_temperature`, `image_top_k`, `image_top_p`) take one value for
    every scale or one value per scale (coarse scales often want more diversity than fine
    ones). `cfg_scale` follows the usual convention: 1 is conditional only, larger follows
    the prompt more closely; the strength ramps up over the scales (HART) and the residual
    head uses the full scale.
    """

    max_new_tokens: int = 256  # text tokens of the reply (image tokens do not count)
    min_new_tokens: int = 0  # end-of-turn tokens are suppressed until the reply has this many text tokens
    # A reply that asks for one more image than this ends there ("max_images"); 0 means text only:
    # the model is not allowed to start an image at all.
    max_images: int = 4
    temperature: float = 0.7  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off (HF's multiplicative penalty on seen tokens)
    stop_strings: tuple[str, ...] = ()
    cfg_scale: float = 3.0
    image_temperature: PerScale = 1.0
    image_top_k: PerScale = 0
    image_top_p: PerScale = 1.0
    # Residual head: 0 = discrete-only images; 1 = the distilled one-step head where the model ships
    # one (one DDIM step otherwise); N = N DDIM steps of the diffusion head.
    residual_steps: int = 8
    # Candidate drawings per image: each is drawn in the same batched forwards, and the one whose
    # codes the model finds likeliest given the conversation (summed conditional log-probability)
    # is kept; costs up to this many times the drawing time (4 took 2.7x batched on a 2-core CPU). 1 = draw once.
    image_candidates: int = 1
    previews: bool = False  # emit a decoded preview after every scale (costs one decode per scale)
    force_image: bool = False  # the reply starts with an image instead of sampled text
    num_sequences: int = 1  # answers drawn for one prompt in one batched run
    seed: int | None = None  # None draws a fresh seed; the same seed and settings repeat the output
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)  # extra end-of-turn ids

    @classmethod
    def for_model(cls, model: object, **overrides) -> GenerationConfig:
        """The model's own image sampling defaults (`generation_config.json` in its folder, if it
        has one), then `overrides` (what the user set) on top."""
        saved = getattr(model, "sampling_defaults", {}) or {}
        try:
            cls(**saved)
        except (TypeError, ValueError) as error:
            raise ValueError(f"the model's generation_config.json: {error}") from error
        return cls(**{**saved, **overrides})

    def __post_init__(self) -> None:
        self.stop_strings = tuple(self.stop_strings)
        self.stop_token_ids = tuple(self.stop_token_ids)
        problems = []
        if self.max_new_tokens < 0:
            problems.append(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= max(self.max_new_tokens, 0):
            problems.append(f"min_new_tokens must lie in [0, max_new_tokens], got {self.min_new_tokens}")
        if self.max_images < 0:
            problems.append(f"max_images must be >= 0, got {self.max_images}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.cfg_scale < 0:
            problems.append(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.residual_steps < 0:
            problems.append(f"residual_steps must be >= 0, got {self.residual_steps}")
        if self.image_candidates < 1:
            problems.append(f"image_candidates must be >= 1, got {self.image_candidates}")
        if self.num_sequences < 1:
            problems.append(f"num_sequences must be >= 1, got {self.num_sequences}")
        if any(not text for text in self.stop_strings):
            problems.append("stop_strings may not contain an empty string")
        for name, valid, rule in (("image_temperature", lambda v: v >= 0, ">= 0"),
                                  ("image_top_k", lambda v: v >= 0 and float(v).is_integer(), "a whole number >= 0"),
                                  ("image_top_p", lambda v: 0 < v <= 1, "in (0, 1]")):
            value = getattr(self, name)
            values = list(value) if isinstance(value, Sequence) else [value]
            if not values or any(item is None or not valid(item) for item in values):
                problems.append(f"{name} must be {rule} (one value, or one per scale), got {value!r}")
        if problems:
            raise ValueError("; ".join(problems))


def for_scale(value: PerScale, scale_index: int, num_scales: int, name: str) -> float:
    """The setting that applies at one scale."""
    if value is None:
        raise ValueError(f"{name} must be a number or one number per scale, got None")
    if isinstance(value, int | float):
        return float(value)
    values = list(value)
    if len(values) != num_scales:
        raise ValueError(f"{name} has {len(values)} values but the tokenizer has {num_scales} scales")
    return float(values[scale_index])
