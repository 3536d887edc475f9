"""The model: the hybrid image tokenizer, the processor and the unified decoder. Imports nothing else of the project."""

from vlm.image_io import ImageLoadError, load_image
from vlm.tokenizer import CheckpointError, HybridTokenizer, HybridTokens, TokenizerConfig
from vlm.unified_model import UnifiedVLM, UnifiedVLMConfig

__all__ = ["CheckpointError", "HybridTokenizer", "HybridTokens", "ImageLoadError", "TokenizerConfig", "UnifiedVLM",
           "UnifiedVLMConfig", "load_image"]
