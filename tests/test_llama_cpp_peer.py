"""The llama.cpp text peer (benchmarks/llama_cpp_peer.py), run against a stand-in environment:
the real one is a C++ build of minutes, made on demand by `benchmarks.speed --peers`."""

from __future__ import annotations

import sys

import pytest

from benchmarks import llama_cpp_peer
from benchmarks.llama_cpp_peer import LLAMA_CPP_VERSION, PeerUnavailable, llama_cpp_tokens_per_s, peer_dir

FAKE_BINDINGS = '''
class Params:
    use_extra_bufts = True
def llama_model_default_params():
    return Params()
'''

FAKE_LLAMA_CPP = '''
from . import llama_cpp as bindings
__version__ = "0-fake"
class Llama:
    def __init__(self, model_path, n_threads, n_ctx, verbose):
        assert model_path.endswith(".gguf") and n_threads == 2
        assert not bindings.llama_model_default_params().use_extra_bufts  # the AMX repacking that crashes
    def reset(self):
        pass
    def generate(self, tokens, temp, reset):
        assert tokens == [1, 2, 3] and temp == 0.0
        while True:
            yield 7
'''


def _fake_environment(tmp_path, monkeypatch, body: str) -> None:
    monkeypatch.setenv("HYBRID_VLM_CACHE", str(tmp_path / "cache"))
    folder = peer_dir()
    (folder / "bin").mkdir(parents=True)
    package = tmp_path / "site" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body)
    (package / "llama_cpp.py").write_text(FAKE_BINDINGS)
    python = folder / "bin" / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "site"} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    (folder / f"llama-cpp-python-{LLAMA_CPP_VERSION}.ok").write_text("built\n")


def test_the_peer_times_a_fixed_number_of_greedy_tokens_from_our_prompt_tokens(tmp_path, monkeypatch):
    _fake_environment(tmp_path, monkeypatch, FAKE_LLAMA_CPP)
    result = llama_cpp_tokens_per_s([1, 2, 3], tokens=5, threads=2, repeats=3, build=False)
    assert result["version"] == "0-fake"
    assert len(result["tokens_per_s"]) == 3 and all(rate > 0 for rate in result["tokens_per_s"])


def test_a_peer_that_fails_says_why(tmp_path, monkeypatch):
    _fake_environment(tmp_path, monkeypatch, "raise ImportError('libllama.so: cannot open shared object file')")
    with pytest.raises(PeerUnavailable, match="libllama.so"):
        llama_cpp_tokens_per_s([1, 2, 3], tokens=5, threads=2, build=False)


def test_without_a_built_environment_it_says_how_to_build_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_VLM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(PeerUnavailable, match="python -m benchmarks.llama_cpp_peer"):
        llama_cpp_peer.peer_python(build=False)
