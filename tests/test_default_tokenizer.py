"""The shipped tokenizers (vlm/pretrained/tokenizer, the default, and tokenizer512), on real data.

These load the real default weights (18 MB) and render the held-out emoji: a few seconds,
the only tests in this file. They guard what the README promises, not a tiny config.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import reconstruct, tokenizer
from vlm.tokenizer import DEFAULT_TOKENIZER_PATH, HybridTokenizer

PACKAGED_512 = DEFAULT_TOKENIZER_PATH.parent / "tokenizer512"
JSON_KEYS = {"psnr_discrete", "psnr_hybrid", "ssim_discrete", "ssim_hybrid", "codebook_usage",
             "encode_images_per_s", "decode_images_per_s"}


@pytest.mark.slow
def test_benchmark_writes_every_key_and_the_shipped_tokenizer_keeps_its_quality(tmp_path, capsys):
    """Regression guard at the shipped tokenizer's measured level on the first 64 held-out emoji
    (hybrid 25.71 dB, discrete 21.96 dB; on all 377: 27.4 and 23.7, `python -m benchmarks.tokenizer`).
    The issue's bar (hybrid >= 30 dB, gap >= 4 dB) is not met yet; raise these floors when a
    better tokenizer ships."""
    output = tmp_path / "tokenizer.json"
    tokenizer.main(["--json", str(output), "--limit", "64", "--repeats", "1", "--batch-size", "16",
                    "--speed-images", "16", "--photos", "16", "--geneval-prompts", "2"])
    results = json.loads(output.read_text())
    assert JSON_KEYS <= set(results)
    assert "| PSNR hybrid (dB) |" in capsys.readouterr().out
    assert results["num_images"] == 64
    assert results["psnr_hybrid"] >= 25.2
    assert results["psnr_hybrid"] - results["psnr_discrete"] >= 3.2
    assert results["codebook_usage"] >= 0.3
    assert 0.0 < results["ssim_discrete"] < results["ssim_hybrid"] <= 1.0
    assert results["encode_images_per_s"] > 0 and results["decode_images_per_s"] > 0


def test_default_loads_without_a_path_and_reconstructs(tmp_path):
    model = HybridTokenizer.from_pretrained()
    assert model.config.scales == (1, 2, 3, 4, 6, 8) and model.config.codebook_size == 4096
    grid = tmp_path / "grid.png"
    reconstruct.main(["--count", "4", "--out", str(grid)])
    assert grid.stat().st_size > 1000


@pytest.mark.slow
def test_the_packaged_512_code_tokenizer_gives_learnable_codes():
    """vlm/pretrained/tokenizer512, the learnable-codes tokenizer the next default model trains on:
    the learnable-codes issue's bars on the fixed shapes set (`python -m benchmarks.tokenizer --model
    vlm/pretrained/tokenizer512`: scale-6/8 entropy 1.54/2.93 nats, one code per scale for a blank
    canvas; the cosine tokenizer gave 7.0/7.0 nats and 28/59 codes)."""
    model = HybridTokenizer.from_pretrained(PACKAGED_512)
    assert model.config.codebook_size == 512
    assert (model.config.lookup, model.config.padding_mode) == ("l2", "replicate")
    stats = tokenizer.code_statistics(model)
    assert stats["blank_codes_per_scale"] == [1] * len(model.config.scales)
    assert max(stats["code_entropy_per_scale"][-2:]) <= 3.0
