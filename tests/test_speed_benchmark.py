"""`python -m benchmarks.speed` end to end on a tiny random model (what it reports, not how fast)."""

from __future__ import annotations

import json

import pytest

from benchmarks import speed
from tests.tiny_vlm import perturbed, tiny_model


@pytest.mark.slow
def test_the_speed_benchmark_reports_every_measure_and_the_image_shows_before_its_final_block(tiny_parts, tmp_path,
                                                                                               capsys):
    perturbed(tiny_model(tiny_parts)).save_pretrained(tmp_path / "model")
    speed.main(["--model", str(tmp_path / "model"), "--repeats", "1", "--text-tokens", "4", "--residual-steps", "2",
                "--json", str(tmp_path / "speed.json"), "--dtype", "float32"])
    results = json.loads((tmp_path / "speed.json").read_text())
    assert 0 < results["ms_to_image_shown"] < results["ms_per_image_next_scale"]
    assert results["ms_per_image_raster"] > 0 and results["text_tokens_per_s"] > 0
    assert "final block forward" in results["image_breakdown_ms"]
    assert 0 < results["rss_at_rest_mb"] <= results["peak_rss_drawing_mb"]
    assert "llama_cpp_tokens_per_s" not in results  # the llama.cpp peer only with --peers
    assert "ms until that image is shown" in capsys.readouterr().out
