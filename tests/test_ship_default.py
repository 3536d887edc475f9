"""training.ship_default: a trained model becomes the default only whole, within budget, and loadable."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

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
    assert ship_default.main([str(folder), "--target", str(target), "--dtype", "float32"]) == 0
    assert "shipped" in capsys.readouterr().out
    shipped = UnifiedVLM.from_pretrained(target)
    # Not the shipped tokenizer, so the model keeps its own copy (a reference would not load).
    assert (target / "image_tokenizer").is_dir()
    for name, value in losses(model.eval().fold_adapters()).items():
        torch.testing.assert_close(losses(shipped)[name], value, rtol=1e-5, atol=1e-5)
    assert not target.with_name("model.new").exists() and not target.with_name("model.old").exists()


def test_a_model_saved_with_the_legacy_fingerprint_ships_with_the_codes_fingerprint(trained, tmp_path):
    import json

    model, folder = trained
    config_path = folder / "vlm_config.json"
    saved = config_path.read_text()
    config = json.loads(saved)
    legacy = model.image_tokenizer.legacy_fingerprint()
    config_path.write_text(json.dumps({**config, "image_tokenizer_fingerprint": legacy}))
    target = tmp_path / "pretrained" / "model"
    try:
        assert ship_default.main([str(folder), "--target", str(target), "--dtype", "float32"]) == 0
    finally:
        config_path.write_text(saved)
    shipped = json.loads((target / "vlm_config.json").read_text())
    assert shipped["image_tokenizer_fingerprint"] == model.image_tokenizer.fingerprint()


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
    assert ship_default.main([str(folder), "--target", str(target), "--dtype", "float32"]) == 0
    assert not (target / "image_tokenizer").exists()
    config = json.loads((target / "vlm_config.json").read_text())
    assert config["image_tokenizer"] == "tokenizer_tiny"
    shipped = UnifiedVLM.from_pretrained(target)
    for name, value in losses(model.eval().fold_adapters()).items():
        torch.testing.assert_close(losses(shipped)[name], value, rtol=1e-5, atol=1e-5)
    (target / "vlm_config.json").write_text(json.dumps({**config, "image_tokenizer": "tokenizer_gone"}))
    with pytest.raises(CheckpointError, match="names no packaged tokenizer.*tokenizer_gone"):
        UnifiedVLM.from_pretrained(target)


def test_a_model_naming_the_old_default_tokenizer_still_loads_it(trained, tiny_parts, tmp_path, monkeypatch):
    """Models saved while the cosine tokenizer was the default name it "default"; now that
    tokenizer512 is the default, that name still means the cosine one (cosine4096)."""
    model, folder = trained
    monkeypatch.setitem(PACKAGED_TOKENIZERS, "cosine4096", tiny_parts[1])
    target = tmp_path / "pretrained" / "model"
    assert ship_default.main([str(folder), "--target", str(target), "--dtype", "float32"]) == 0
    config = json.loads((target / "vlm_config.json").read_text())
    assert config["image_tokenizer"] == "cosine4096"
    (target / "vlm_config.json").write_text(json.dumps({**config, "image_tokenizer": "default"}))
    shipped = UnifiedVLM.from_pretrained(target)
    assert shipped.image_tokenizer.fingerprint() == model.image_tokenizer.fingerprint()


def test_fp16_storage_halves_the_adapter_and_predicts_nearly_the_same(trained, tmp_path):
    """The default stores the adapter in fp16: half the bytes, the image layers untouched, and the
    loaded model's losses within fp16 rounding of the trained one's."""
    model, folder = trained
    target = tmp_path / "pretrained" / "model"
    assert ship_default.main([str(folder), "--target", str(target)]) == 0
    adapter = load_file(str(target / "adapter.safetensors"))
    assert {value.dtype for value in adapter.values()} == {torch.float16}
    assert (target / "adapter.safetensors").stat().st_size < 0.6 * (folder / "adapter.safetensors").stat().st_size
    assert (target / "image_layers.safetensors").read_bytes() == (folder / "image_layers.safetensors").read_bytes()
    shipped = UnifiedVLM.from_pretrained(target)
    assert shipped.decoder_dtype == torch.float32
    expected = losses(model.eval().fold_adapters())
    for name, value in losses(shipped).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-2, atol=1e-3)


def test_weights_fp16_cannot_hold_are_refused_and_nothing_is_shipped(trained, tmp_path, capsys):
    _, folder = trained
    state = load_file(str(folder / "adapter.safetensors"))
    first = sorted(state)[0]
    state[first] = state[first] * 0 + 1e6
    save_file(state, str(folder / "adapter.safetensors"))
    target = tmp_path / "pretrained" / "model"
    assert ship_default.main([str(folder), "--target", str(target)]) == 1
    error = capsys.readouterr().err
    assert "outside fp16's range" in error and first in error and "--dtype float32" in error
    assert not target.exists() and not target.with_name("model.new").exists()
