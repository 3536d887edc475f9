"""What every model-loading command line shares: quiet output (library deprecation warnings
and weight-loading progress bars are noise to someone chatting, so they are hidden unless
asked, `--verbose`), an early check of `--model`, and `--dtype`."""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path


def quiet(verbose: bool = False) -> None:
    if verbose:
        return
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("transformers", "accelerate", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="show library warnings and model-loading progress (hidden by default)")


def check_model_folder(parser: argparse.ArgumentParser, model: Path | None) -> None:
    """A wrong --model fails at once, before seconds of loading."""
    if model is not None and not model.is_dir():
        parser.error(f"--model {model}: no such folder")


def add_dtype_flag(parser: argparse.ArgumentParser, default: str = "float32") -> None:
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default=default,
                        help="backbone weights: bfloat16 halves the bytes each decoder pass reads (the limit on "
                             "a CPU) and runs on AMX/AVX512-BF16 units; auto = bfloat16 where the hardware has "
                             "them (a GPU, or a CPU with AVX512/AMX), float32 elsewhere")
    parser.add_argument("--int8", action="store_true",
                        help="add an int8 copy of the decoder's weights (one scale per output row) for inputs "
                             "of a few rows (up to 16 beside float32 weights; beside bfloat16 4 where oneDNN runs "
                             "bf16, whose larger inputs then take a pre-packed copy, else 8): a text token reads a "
                             "quarter of the bytes; outputs differ slightly from the float weights'. With --dtype "
                             "bfloat16 the fastest pair on an AVX512/AMX CPU (README: Speed)")
