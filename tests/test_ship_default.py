"""training.ship_default: a trained model becomes the default only whole, within budget, and loadable."""

from __future__ import annotations

import json

import pytest
import torch

from tests.tiny_vlm import drawing_chat, perturbed, tiny_model
from training import ship_default
from vlm.tokenizer import PACKAGED_TOKENIZERS, CheckpointError
from vlm.unified_model import UnifiedVLM


@pytest.fixture
def trained(tiny_parts, tmp_path):
    model = perturbed(tiny_model(tiny_parts))
    model.save_pretrained(tmp_path / "trained")
    return model, tmp_path / "trained"


def losses(model):
    with torch.no_grad():
        return model(model.processor(drawing_chat()), generator=torch.Generator().manual_seed(0)).losses


def test_a_shipped_model_loads_from_the_target_and_predicts_the_same(trained, tmp_path, capsys):
    model, folder = trained
    target = tmp_path / "pretrained" / "model"
    assert ship_default.main([str(folder), "--target", str(target)]) == 0
    assert "shipped" in capsys.readouterr().out
    shipped = UnifiedVLM.from_pretrained(target)
    # Not the shipped tokenizer, so the model keeps its own copy (a reference would not load).
    assert (target / "image_tokenizer").is_dir()
    for name, value in losses(model.eval().fold_adapters()).items():
        torch.testing.assert_close(losses(shipped)[name], value, rtol=1e-5, atol=1e-5)
    assert not target.with_name("model.new").exists() and not target.with_name("model.old").exists()


def test_over_budget_or_unloadable_models_leave_the_default_as_it_was(trained, tmp_path, monkeypatch, capsys):
    _, folder = trained
    target = tmp_path / "pretrained" / "model"
    assert ship_default.main([str(folder), "--target", str(target)]) == 0
    before = {path.name: path.read_bytes() for path in target.iterdir() if path.is_file()}
    monkeypatch.setattr(ship_default, "BUDGET_BYTES", 1000)
    assert ship_default.main([str(folder), "--target", str(target)]) == 1
    assert "the budget is" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(CheckpointError, match="not a hybrid-vlm model folder"):
        ship_default.main([str(broken), "--target", str(target)])
    assert {path.name: path.read_bytes() for path in target.iterdir() if path.is_file()} == before
    assert not target.with_name("model.new").exists()


def test_a_model_on_a_packaged_tokenizer_names_it_instead_of_copying_it(trained, tiny_parts, tmp_path, monkeypatch):
    """A model trained on a tokenizer that ships in the package (e.g. tokenizer512) ships without a
    second copy of it, names it, and loads to the same predictions; a name the package lacks is refused."""
    model, folder = trained
    monkeypatch.setitem(PACKAGED_TOKENIZERS, "tokenizer_tiny", tiny_parts[1])
    target = tmp_path / "pretrained" / "model"
    assert ship_default.main([str(folder), "--target", str(target)]) == 0
    assert not (target / "image_tokenizer").exists()
    config = json.loads((target / "vlm_config.json").read_text())
    assert config["image_tokenizer"] == "tokenizer_tiny"
    shipped = UnifiedVLM.from_pretrained(target)
    for name, value in losses(model.eval().fold_adapters()).items():
        torch.testing.assert_close(losses(shipped)[name], value, rtol=1e-5, atol=1e-5)
    (target / "vlm_config.json").write_text(json.dumps({**config, "image_tokenizer": "tokenizer_gone"}))
    with pytest.raises(CheckpointError, match="names no packaged tokenizer.*tokenizer_gone"):
        UnifiedVLM.from_pretrained(target)
