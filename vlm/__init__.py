"""The model: the hybrid image tokenizer and (later) the unified decoder. Imports nothing else of the project."""

from vlm.image_io import ImageLoadError, load_image
from vlm.tokenizer import CheckpointError, HybridTokenizer, HybridTokens, TokenizerConfig

__all__ = ["CheckpointError", "HybridTokenizer", "HybridTokens", "ImageLoadError", "TokenizerConfig", "load_image"]
