"""Quiet command lines: library deprecation warnings and weight-loading progress bars are
noise to someone chatting, so the CLIs hide them unless asked (`--verbose`)."""

from __future__ import annotations

import logging
import warnings


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
