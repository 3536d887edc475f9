"""What the generation loop streams. Every event names its sequence (row of a batched run)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from vlm.tokenizer import HybridTokens

END_OF_TURN = "end_of_turn"
MAX_TOKENS = "max_tokens"
MAX_IMAGES = "max_images"
STOP_STRING = "stop_string"
CANCELLED = "cancelled"


@dataclass
class TextDelta:
    sequence: int
    text: str
    token_ids: list[int]  # the sampled ids this delta comes from (held back while a character is incomplete)


@dataclass
class ImageStarted:
    sequence: int
    image_index: int  # 0 for the reply's first image


@dataclass
class ScalePreview:
    """The discrete image so far, after one more scale (only when previews are asked for)."""

    sequence: int
    image_index: int
    scale_index: int
    image: Image.Image


@dataclass
class ImageFinished:
    sequence: int
    image_index: int
    image: Image.Image
    tokens: HybridTokens  # the codes per scale and the residual it was decoded from


@dataclass
class Done:
    sequence: int
    reason: str  # END_OF_TURN, MAX_TOKENS, MAX_IMAGES, STOP_STRING or CANCELLED


Event = TextDelta | ImageStarted | ScalePreview | ImageFinished | Done
