"""The model: the hybrid image tokenizer, the processor and the unified decoder. Imports nothing else of the project."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlm.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ImageLoadError": "vlm.image_io",
    "load_image": "vlm.image_io",
    "CheckpointError": "vlm.tokenizer",
    "HybridTokenizer": "vlm.tokenizer",
    "HybridTokens": "vlm.tokenizer",
    "TokenizerConfig": "vlm.tokenizer",
    "UnifiedVLM": "vlm.unified_model",
    "UnifiedVLMConfig": "vlm.unified_model",
})

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on first use
    from vlm.image_io import ImageLoadError, load_image  # noqa: F401
    from vlm.tokenizer import CheckpointError, HybridTokenizer, HybridTokens, TokenizerConfig  # noqa: F401
    from vlm.unified_model import UnifiedVLM, UnifiedVLMConfig  # noqa: F401
