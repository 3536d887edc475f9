"""llama.cpp as the text-speed peer: the tool a CPU user would otherwise reach for.

    python -m benchmarks.llama_cpp_peer [--tokens 64] [--threads 2]   # build once if needed, then time

Why a separate environment: llama-cpp-python is a C++ build (minutes on two cores) that the
package never needs, so it is never one of its dependencies. The first call builds it into
`$HYBRID_VLM_CACHE/peers/llama-cpp` (a virtual environment of its own, pinned version, from
the package registry) and later calls reuse it. It runs the very GGUF our backbone is
converted from (SmolLM2-135M-Instruct, Q4_1: 4-bit weights, so it reads ~4x fewer bytes per
token than our float32 backbone), greedy, a fixed number of new tokens after the same chat
prompt, timed like our loop: prompt processing included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import venv
from pathlib import Path

from vlm.backbone import smollm2_gguf_path, text_tokenizer_from_gguf
from vlm.cache import cache_dir

logger = logging.getLogger(__name__)

LLAMA_CPP_VERSION = "0.3.36"

# Runs inside the peer environment: the JSON arguments in argv[1], the JSON result on stdout.
TIMER = r"""
import json, sys, time
import llama_cpp.llama_cpp as bindings
from llama_cpp import Llama
# llama.cpp's AMX weight repacking ("extra buffer types") segfaults on any multi-token batch
# (a prompt) on this project's AMX CPU; one-token decoding does not use it, so it is turned off.
default_params = bindings.llama_model_default_params
def model_params():
    params = default_params()
    params.use_extra_bufts = False
    return params
bindings.llama_model_default_params = model_params
args = json.loads(sys.argv[1])
llm = Llama(model_path=args["gguf"], n_threads=args["threads"], n_ctx=1024, verbose=False)
prompt = args["prompt_ids"]
rates = []
for run in range(args["repeats"] + 1):  # the first run warms up
    llm.reset()
    started = time.perf_counter()
    count = 0
    for _ in llm.generate(prompt, temp=0.0, reset=True):
        count += 1
        if count == args["tokens"]:
            break
    if run:
        rates.append(count / (time.perf_counter() - started))
print(json.dumps({"tokens_per_s": rates, "version": __import__("llama_cpp").__version__}))
"""


class PeerUnavailable(RuntimeError):
    """The llama.cpp environment could not be built or run; the message says why and where the log is."""


def peer_dir() -> Path:
    return cache_dir() / "peers" / "llama-cpp"


def peer_python(build: bool = True) -> Path:
    """The peer environment's Python, building the environment first when it is missing."""
    folder = peer_dir()
    python = folder / "bin" / "python"
    marker = folder / f"llama-cpp-python-{LLAMA_CPP_VERSION}.ok"
    if marker.is_file():
        return python
    if not build:
        raise PeerUnavailable(f"no llama.cpp environment in {folder}; run python -m benchmarks.llama_cpp_peer")
    log = folder.parent / "llama-cpp-build.log"
    logger.warning("building llama-cpp-python %s into %s (once; several minutes on two cores; log: %s)",
                   LLAMA_CPP_VERSION, folder, log)
    folder.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    with log.open("w") as out:
        finished = subprocess.run([str(python), "-m", "pip", "install", "--no-cache-dir",
                                   f"llama-cpp-python=={LLAMA_CPP_VERSION}"], stdout=out, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        raise PeerUnavailable(f"building llama-cpp-python {LLAMA_CPP_VERSION} failed (exit {finished.returncode}); "
                              f"see {log}")
    marker.write_text("built\n")
    return python


def llama_cpp_tokens_per_s(prompt_ids: list[int], tokens: int, threads: int, repeats: int = 3,
                           build: bool = True) -> dict:
    """Greedy tokens/s of llama.cpp on SmolLM2's own GGUF: {'tokens_per_s': [...], 'version': ...}.

    `prompt_ids`: the chat prompt as our tokenizer makes it, so both sides decode from the same tokens.
    """
    python = peer_python(build)
    arguments = json.dumps({"gguf": str(smollm2_gguf_path()), "prompt_ids": prompt_ids, "tokens": tokens,
                            "threads": threads, "repeats": repeats})
    finished = subprocess.run([str(python), "-c", TIMER, arguments], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ""})
    if finished.returncode != 0:
        raise PeerUnavailable(f"llama.cpp timing failed (exit {finished.returncode}): {finished.stderr.strip()[-800:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llama_cpp_peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per timed reply")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="llama.cpp threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed replies (after one warm-up)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from transformers import PreTrainedTokenizerFast

    from benchmarks.speed import TEXT_PROMPT
    tokenizer_dir = text_tokenizer_from_gguf(peer_dir().parent / "smollm2-tokenizer")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    prompt_ids = tokenizer.apply_chat_template(TEXT_PROMPT, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
    result = llama_cpp_tokens_per_s(prompt_ids, args.tokens, args.threads, args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
