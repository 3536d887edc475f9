"""The source hint: a drawing reads the conversation's previous image where it draws.

Teacher forcing and the generation loop must build the same hinted inputs (the same logits
in both), the unconditional branch and dropped conditions must see no hint, and a model that
gets the layer late must not change until it is trained.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from generation import GenerationConfig, ImageFinished
from generation.loop import stream_generate
from tests.tiny_vlm import drawing_chat, perturbed, tiny_model
from vlm.next_scale import ImageDrawing
from vlm.teacher_forcing import blind_drawings, dropped_drawings
from vlm.tokenizer import HybridTokens
from vlm.unified_model import UnifiedVLM


def upload(colour: str = "blue") -> Image.Image:
    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).rectangle((4, 8, 20, 24), fill=colour)
    return image


def edit_request(colour: str = "blue") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": upload(colour)},
                                         {"type": "text", "text": "Make it red."}]}]


def join(first: HybridTokens, second: HybridTokens) -> HybridTokens:
    return HybridTokens([torch.cat([a, b]) for a, b in zip(first.codes, second.codes)],
                        torch.cat([first.residual, second.residual]))


@pytest.fixture
def hinted(tiny_parts) -> UnifiedVLM:
    return perturbed(tiny_model(tiny_parts, source_hint=True))


def test_a_late_hint_layer_starts_at_zero_and_changes_nothing(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    conversation = edit_request() + [drawing_chat()[1]]
    batch = model.processor(conversation)
    with torch.no_grad():
        before = model(batch).image_logits
        model.add_source_hint()
        after = model(batch).image_logits
    assert model.config.source_hint and model.image_embedder.hint_projection is not None
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_the_hint_reaches_only_drawings_that_follow_an_image(hinted):
    drawn = hinted.processor(drawing_chat())  # no image before the drawing: nothing to hint with
    edit = hinted.processor(edit_request() + [drawing_chat()[1]])
    with torch.no_grad():
        tokens = hinted.image_tokenizer.encode_pixels(drawn.pixels)
        plain = hinted.embed(drawn, tokens)
        hinted.image_embedder.hint_projection.weight.add_(1.0)
        torch.testing.assert_close(hinted.embed(drawn, tokens), plain, rtol=0, atol=0)
        tokens = hinted.image_tokenizer.encode_pixels(edit.pixels)
        drawing = next(layout for layout in edit.images if layout.generated)
        with_hint = hinted.embed(edit, tokens)
        without = hinted.embed(edit, tokens, unhinted={drawing.image_index})
    scales = hinted.image_tokenizer.config.scales
    positions = slice(drawing.start, drawing.start + sum(size * size for size in scales))
    assert not torch.allclose(with_hint[0, positions], without[0, positions], atol=1e-3)
    final_block = slice(positions.stop, positions.stop + scales[-1] ** 2)  # reads the image, not its source
    torch.testing.assert_close(with_hint[0, final_block], without[0, final_block], rtol=0, atol=0)
    torch.testing.assert_close(with_hint[0, :drawing.start], without[0, :drawing.start], rtol=0, atol=0)


def test_generation_feeds_the_hint_teacher_forcing_trains_with(hinted):
    """The conditional logits inside generation equal a full forward's over the finished
    conversation; the unconditional branch's equal a forward with the drawing blind (no
    prompt, no hint), recovered from the guided logits at the scales guidance ramps up."""
    seen = {"image": [], "image_guided": []}
    config = GenerationConfig(seed=0, force_image=True, max_new_tokens=1, temperature=0.0, cfg_scale=3.0)
    events = list(stream_generate(hinted, edit_request(), config,
                                  logits_hook=lambda kind, x: seen.get(kind, []).append(x)))
    finished = next(event for event in events if isinstance(event, ImageFinished))
    conversation = edit_request() + [{"role": "assistant", "content": [{"type": "image", "image": finished.image}]}]
    batch = hinted.processor(conversation)
    tokens = join(hinted.image_tokenizer.encode_pixels(batch.pixels[:1]), finished.tokens)
    scales = hinted.image_tokenizer.config.scales
    count = sum(size * size for size in scales)
    drawing = batch.images[1]
    with torch.no_grad():
        full = hinted(batch, tokens).image_logits
        blind = dropped_drawings(hinted, batch, None, 1.0)
        hidden = hinted.run_decoder(hinted.embed(batch, tokens, blind),
                                    blind_drawings(hinted, batch, batch.attention_mask(), blind), batch.position_ids)
        blind_logits = hinted.image_head(hidden[0, drawing.start:drawing.start + count])
    start = sum(size * size for size in scales[:1])
    conditional = torch.cat([logits.flatten(0, 1) for logits in seen["image"]])
    full_drawing = full[scales[-1] ** 2:][:count]  # the upload's final block comes first
    torch.testing.assert_close(conditional, full_drawing, rtol=0, atol=1e-4)
    guided = torch.cat([logits.flatten(0, 1) for logits in seen["image_guided"]])
    ramps = torch.cat([torch.full((size * size,), (config.cfg_scale - 1) * index / (len(scales) - 1))
                       for index, size in enumerate(scales)])
    unconditional = ((1 + ramps[:, None]) * conditional - guided) / ramps[:, None].clamp_min(1e-9)
    torch.testing.assert_close(unconditional[start:], blind_logits[start:], rtol=0, atol=1e-3)


def test_an_unchanged_source_holds_every_code_of_the_drawing(hinted):
    """What the hint carries: looked up, the source's still-missing vectors are the codes the
    tokenizer gives the image itself, scale by scale, when the drawing equals its source."""
    from vlm.quantizer import RunningSum

    pixels = hinted.processor(edit_request()).pixels
    quantizer = hinted.image_tokenizer.quantizer
    with torch.no_grad():
        tokens = hinted.image_tokenizer.encode_pixels(pixels)
        source = hinted.finished_latents(tokens)
        running = RunningSum(quantizer)
        for scale_index, codes in enumerate(tokens.codes):
            missing = quantizer.still_missing(source, scale_index, running.next_input() if scale_index else None)
            looked_up = quantizer.lookup(missing.permute(0, 2, 3, 1).flatten(0, 2)).view_as(codes)
            assert torch.equal(looked_up, codes), scale_index
            running.add(codes)


def test_a_model_without_the_hint_ignores_sources_and_bad_sources_are_refused(tiny_parts, hinted):
    plain = perturbed(tiny_model(tiny_parts))
    latent = torch.zeros(1, plain.image_tokenizer.config.latent_channels, 4, 4)
    assert ImageDrawing(plain, 1, [latent]).sources is None
    with pytest.raises(ValueError, match="2 sources for 1 images"):
        ImageDrawing(hinted, 1, [latent, latent])
    with pytest.raises(ValueError, match="no source hint layer"):
        plain.image_embedder.hint(torch.zeros(3, latent.shape[1]))


def test_saved_and_loaded_with_its_hint_and_refused_without_it(hinted, tmp_path):
    from safetensors.torch import load_file, save_file

    from vlm.tokenizer import CheckpointError
    from vlm.unified_model import LAYERS_NAME

    hinted.save_pretrained(tmp_path / "model")
    loaded = UnifiedVLM.from_pretrained(tmp_path / "model")
    assert loaded.config.source_hint
    torch.testing.assert_close(loaded.image_embedder.hint_projection.weight,
                               hinted.image_embedder.hint_projection.weight)
    path = str(tmp_path / "model" / LAYERS_NAME)
    save_file({key: value for key, value in load_file(path).items() if "hint" not in key}, path)
    with pytest.raises(CheckpointError, match="hint_projection"):
        UnifiedVLM.from_pretrained(tmp_path / "model")


def test_training_gives_a_trained_model_the_hint_and_a_new_one_is_built_with_it(tiny_parts, tmp_path):
    from training.train import TrainConfig, build_model

    backbone_dir, tokenizer_dir = tiny_parts
    common = {"data": "unused.jsonl", "output_dir": str(tmp_path), "backbone": str(backbone_dir),
              "image_tokenizer": str(tokenizer_dir), "lora_rank": 4}
    new = build_model(TrainConfig(**common, source_hint=True), tmp_path / "no-checkpoint")
    assert new.config.source_hint and new.image_embedder.hint_projection is not None
    perturbed(tiny_model(tiny_parts)).save_pretrained(tmp_path / "trained")
    kept = build_model(TrainConfig(**common, init=str(tmp_path / "trained")), tmp_path / "no-checkpoint")
    assert not kept.config.source_hint and kept.image_embedder.hint_projection is None
    given = build_model(TrainConfig(**common, init=str(tmp_path / "trained"), source_hint=True),
                        tmp_path / "no-checkpoint")
    assert given.config.source_hint and not given.image_embedder.hint_projection.weight.any()
    assert given.image_embedder.hint_projection.weight.requires_grad


def test_the_source_copy_benchmark_finds_every_code_of_an_unchanged_source(tiny_parts, tmp_path):
    import json
    import random

    from benchmarks.source_copy import edit_pairs, main, measure
    from vlm.tokenizer import HybridTokenizer

    tokenizer = HybridTokenizer.from_pretrained(tiny_parts[1]).eval()
    size = tokenizer.config.image_size
    pairs = edit_pairs(random.Random(0), 4, size)
    same = measure(tokenizer, [(source, source) for source, _ in pairs])
    assert same["same_code_all"] == same["hint_lookup_all"] == 1.0 and same["cells_with_changed_pixels"] == 0
    edited = measure(tokenizer, pairs)
    assert 0 < edited["cells_with_changed_pixels"] < 1 and edited["same_code_all"] < 1
    main(["--tokenizer", str(tiny_parts[1]), "--pairs", "3", "--json", str(tmp_path / "copy.json")])
    assert json.loads((tmp_path / "copy.json").read_text())["steps"]["pairs"] == 3
    with pytest.raises(SystemExit):
        main(["--tokenizer", str(tiny_parts[1]), "--pairs", "0"])
