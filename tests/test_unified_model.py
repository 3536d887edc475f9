"""UnifiedVLM on a tiny random Llama with the real SmolLM2 text tokenizer and a tiny image tokenizer."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_vlm import drawing_chat, perturbed, tiny_model
from vlm.decoding_cache import empty_cache
from vlm.unified_model import UnifiedVLM


def test_forward_gives_all_three_losses_and_they_are_the_ones_its_logits_give(tiny_parts):
    import torch.nn.functional as F

    from vlm.processor import IGNORE_INDEX

    model = tiny_model(tiny_parts)
    batch = model.processor(drawing_chat())
    generator = torch.Generator().manual_seed(0)
    output = model(batch, generator=generator)
    assert set(output.losses) == {"text", "image", "residual", "total"}
    # Text: next-token cross-entropy at the labelled positions of the full logits.
    targets = batch.text_labels[:, 1:]
    labelled = targets != IGNORE_INDEX
    text = F.cross_entropy(output.text_logits[:, :-1][labelled].float(), targets[labelled])
    torch.testing.assert_close(output.losses["text"], text)
    # Image: the head's logits at the scale positions against the tokenizer's own codes, scale by
    # scale, row-major (the default weighting: every code alike).
    codes = model.image_tokenizer.encode_pixels(batch.pixels).codes
    scales = model.image_tokenizer.config.scales
    scale_logits = model.image_head(output.hidden_states[0][(batch.levels[0] >= 0) & (batch.levels[0] < len(scales))])
    image = F.cross_entropy(scale_logits.float(), torch.cat([scale_codes[0].flatten() for scale_codes in codes]))
    torch.testing.assert_close(output.losses["image"], image)
    torch.testing.assert_close(output.losses["total"],
                               output.losses["text"] + output.losses["image"] + output.losses["residual"])
    # Training's lean path (logits only where labels need them) gives the same losses.
    lean = model(batch, generator=torch.Generator().manual_seed(0), all_logits=False)
    for name in ("text", "image", "residual"):
        torch.testing.assert_close(lean.losses[name], output.losses[name], rtol=1e-5, atol=1e-5)


def test_gradients_reach_new_layers_head_and_adapters_and_nothing_frozen(tiny_parts):
    model = tiny_model(tiny_parts)
    model.train()
    model(model.processor(drawing_chat())).losses["total"].backward()
    named = dict(model.named_parameters())
    trainable = {name for name, parameter in named.items() if parameter.requires_grad}
    assert any("lora_" in name for name in trainable)
    assert any(name.startswith("image_embedder") for name in trainable)
    assert any(name.startswith("residual_head") for name in trainable)
    assert not any(name.startswith("image_tokenizer") for name in trainable)
    assert not any("base_layer" in name for name in trainable)  # stock backbone weights stay frozen
    received = {name for name in trainable if named[name].grad is not None and named[name].grad.abs().sum() > 0}
    assert any("lora_B" in name for name in received)  # lora_A's gradient is zero while lora_B is at zero
    assert {"image_embedder.start", "image_head.1.weight"} <= received
    assert any(name.startswith("residual_head") for name in received)


def test_save_then_load_gives_identical_outputs(tiny_parts, tmp_path):
    model = tiny_model(tiny_parts)
    with torch.no_grad():  # move the zero-initialised parts so the round trip is meaningful
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.01)
    model.eval().fold_adapters()  # as from_pretrained returns it
    batch = model.processor(drawing_chat())
    generator = torch.Generator().manual_seed(0)
    before = model(batch, generator=generator)
    model.save_pretrained(tmp_path / "saved")
    loaded = UnifiedVLM.from_pretrained(tmp_path / "saved")
    after = loaded(batch, generator=torch.Generator().manual_seed(0))
    assert torch.equal(before.text_logits, after.text_logits)
    assert torch.equal(before.image_logits, after.image_logits)
    assert torch.equal(before.losses["residual"], after.losses["residual"])


@pytest.mark.slow
def test_a_tiny_model_overfits_one_conversation_with_an_image(tiny_parts):
    model = tiny_model(tiny_parts, finetune="full")
    model.train()
    batch = model.processor(drawing_chat())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(100):  # logits where labels need them, as training computes them (3x faster than all)
        losses = model(batch, generator=generator, all_logits=False).losses
        history.append({name: value.item() for name, value in losses.items()})
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
    # Measured at step 100: text 0.024, image 0.006, residual 0.23 of their first losses. The
    # diffusion loss falls slowest (its noise draws differ every step): 0.1 takes 250 steps.
    for name, share in (("text", 0.1), ("image", 0.1), ("residual", 0.4)):
        first = sum(step[name] for step in history[:5]) / 5
        last = sum(step[name] for step in history[-10:]) / 10  # the diffusion loss is noisy step to step
        assert last <= share * first, (name, first, last)


def test_incremental_decoding_equals_the_full_forward(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    chat = drawing_chat() + [{"role": "user", "content": "Make it blue."}]
    batch = model.processor(chat)
    tokens = model.image_tokenizer.encode_pixels(batch.pixels)
    quantizer = model.image_tokenizer.quantizer
    scales = model.image_tokenizer.config.scales
    start = batch.images[0].start
    with torch.no_grad():
        full = model(batch, tokens).hidden_states[0]
        cache = empty_cache(1, model.device)
        pieces = [model.extend(cache, model.embed(batch, tokens)[:, :start], batch.block_ids[:, :start])]
        latent = None
        for level, size in enumerate(scales):  # the scale blocks, as generation feeds them
            block_input = None if level == 0 else quantizer.next_scale_input(latent, level - 1)
            pieces.append(model.extend(cache, model.image_block_embeddings(level, block_input),
                                       torch.zeros(1, size * size, dtype=torch.long)))
            contribution = quantizer.scale_contribution(level, tokens.codes[level])
            latent = contribution if latent is None else latent + contribution
        cache.hide(torch.tensor([0]), start, cache.length)  # the scale blocks, once drawn, as generation does
        final = model.image_block_embeddings(len(scales), latent + tokens.residual)
        pieces.append(model.extend(cache, final, torch.zeros(1, final.shape[1], dtype=torch.long)))
        rest = batch.input_ids[:, cache.length:]
        pieces.append(model.extend(cache, model.language_model.get_input_embeddings()(rest),
                                   torch.arange(rest.shape[1])[None]))
    incremental = torch.cat(pieces, dim=1)[0]
    image_length = sum(size * size for size in scales) + scales[-1] ** 2
    text_before, image, text_after = start, slice(start, start + image_length), slice(start + image_length, None)
    assert (incremental[:text_before] - full[:text_before]).abs().max() < 1e-4
    assert (incremental[image] - full[image]).abs().max() < 1e-4  # every scale block and the final block
    assert (incremental[text_after] - full[text_after]).abs().max() < 1e-4
    assert cache.next_position.item() == batch.input_ids.shape[1]
    # A prefill of the whole conversation in one chunk gives the same, and leaves the scale blocks hidden.
    with torch.no_grad():
        prefilled, prefill_cache = model.start_decoding(batch, tokens)
    assert (prefilled[0] - full).abs().max() < 1e-4
    assert torch.equal(prefill_cache.key_visible, cache.key_visible)


def test_a_ragged_batch_decodes_like_each_row_alone(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    chats = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me a long story about a cat."}]]
    next_ids = torch.tensor([[42], [7]])
    with torch.no_grad():
        _, cache = model.start_decoding(model.processor(chats, add_generation_prompt=True))
        together = model.extend(cache, model.language_model.get_input_embeddings()(next_ids),
                                torch.zeros(2, 1, dtype=torch.long))
        for row, chat in enumerate(chats):
            _, alone_cache = model.start_decoding(model.processor(chat, add_generation_prompt=True))
            alone = model.extend(alone_cache, model.language_model.get_input_embeddings()(next_ids[row:row + 1]),
                                 torch.zeros(1, 1, dtype=torch.long))
            assert (together[row] - alone[0]).abs().max() < 1e-4
            assert cache.next_position[row] == alone_cache.next_position[0]


def test_folding_adapters_for_speed_does_not_change_outputs_and_unfolding_trains_again(tiny_parts):
    model = perturbed(tiny_model(tiny_parts)).unfold_adapters()
    batch = model.processor(drawing_chat())
    with torch.no_grad():
        unmerged = model(batch).text_logits
        merged = model.fold_adapters()(batch).text_logits
    assert (merged - unmerged).abs().max() < 1e-4
    assert not any("lora_" in name for name, _ in model.language_model.named_parameters())  # out of the path
    with pytest.raises(RuntimeError, match="unfold_adapters"):
        model.train()  # a folded model's adapters would get no gradient
    model.unfold_adapters().train()
    model(batch).losses["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A" in n)


def test_loading_refuses_a_model_paired_with_another_image_tokenizer(tiny_parts, tmp_path):
    import json

    from tests.conftest import tiny_tokenizer_config
    from vlm.tokenizer import CheckpointError, HybridTokenizer

    model = tiny_model(tiny_parts)
    model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "vlm_config.json").read_text())
    assert config["image_tokenizer_fingerprint"] == model.image_tokenizer.fingerprint()
    UnifiedVLM.from_pretrained(tmp_path / "model")  # its own tokenizer: fine
    torch.manual_seed(5)
    HybridTokenizer(tiny_tokenizer_config()).save_pretrained(tmp_path / "model" / "image_tokenizer")
    with pytest.raises(CheckpointError, match="trained on image tokenizer"):
        UnifiedVLM.from_pretrained(tmp_path / "model")


def test_a_retrained_decoder_keeps_the_model_valid_but_a_changed_encoder_does_not(tiny_parts, tmp_path):
    """The fingerprint covers what gives codes their meaning (config, encoder, quantizer), not the
    decoder, which only turns latents into pixels (training.train_tokenizer --freeze-encoder)."""
    from vlm.tokenizer import CheckpointError, HybridTokenizer

    model = tiny_model(tiny_parts)
    model.save_pretrained(tmp_path / "model")
    tokenizer_dir = tmp_path / "model" / "image_tokenizer"
    tokenizer = HybridTokenizer.from_pretrained(tokenizer_dir)
    with torch.no_grad():
        next(tokenizer.decoder.parameters()).add_(0.5)
    tokenizer.save_pretrained(tokenizer_dir)
    loaded = UnifiedVLM.from_pretrained(tmp_path / "model")
    assert torch.equal(next(loaded.image_tokenizer.decoder.parameters()), next(tokenizer.decoder.parameters()))
    with torch.no_grad():
        next(tokenizer.encoder.parameters()).add_(0.5)
    tokenizer.save_pretrained(tokenizer_dir)
    with pytest.raises(CheckpointError, match="trained on image tokenizer"):
        UnifiedVLM.from_pretrained(tmp_path / "model")


def test_a_model_saved_with_the_legacy_fingerprint_still_loads(tiny_parts, tmp_path):
    import json

    model = tiny_model(tiny_parts)
    model.save_pretrained(tmp_path / "model")
    config_path = tmp_path / "model" / "vlm_config.json"
    config = json.loads(config_path.read_text())
    legacy = model.image_tokenizer.legacy_fingerprint()
    assert legacy != config["image_tokenizer_fingerprint"]
    config_path.write_text(json.dumps({**config, "image_tokenizer_fingerprint": legacy}))
    UnifiedVLM.from_pretrained(tmp_path / "model")


def test_every_saved_config_key_is_a_field_and_unknown_keys_are_named(tiny_parts, tmp_path):
    import json
    from dataclasses import fields

    from vlm.configuration import UnifiedVLMConfig
    from vlm.tokenizer import CheckpointError

    model = tiny_model(tiny_parts)
    model.save_pretrained(tmp_path / "model")
    path = tmp_path / "model" / "vlm_config.json"
    saved = json.loads(path.read_text())
    assert set(saved) == {field.name for field in fields(UnifiedVLMConfig)}
    assert saved["vocab_size"] == len(model.processor) and saved["image_tokenizer"] == "image_tokenizer"
    assert UnifiedVLMConfig.from_dict(saved).residual_head == model.config.residual_head  # nested dict -> dataclass
    path.write_text(json.dumps(saved | {"lora_rnk": 8, "colour": "red"}))
    with pytest.raises(CheckpointError, match=r"unknown UnifiedVLMConfig keys \['colour', 'lora_rnk'\]"):
        UnifiedVLM.from_pretrained(tmp_path / "model")
    path.write_text(json.dumps(saved | {"residual_head": saved["residual_head"] | {"widht": 3}}))
    with pytest.raises(CheckpointError, match=r"residual_head: unknown ResidualHeadConfig keys \['widht'\]"):
        UnifiedVLM.from_pretrained(tmp_path / "model")
    path.write_text(json.dumps({key: value for key, value in saved.items() if key != "vocab_size"}))
    with pytest.raises(CheckpointError, match="no vocab_size"):
        UnifiedVLM.from_pretrained(tmp_path / "model")


def test_skipping_an_unread_final_block_leaves_the_image_losses_unchanged(tiny_parts):
    model = perturbed(tiny_model(tiny_parts))
    full = model.processor(drawing_chat())
    lean = model.processor(drawing_chat(), skip_unread_final_blocks=True)
    assert lean.input_ids.shape[1] < full.input_ids.shape[1]
    outputs = [model(batch, generator=torch.Generator().manual_seed(0), all_logits=False) for batch in (full, lean)]
    # The scale blocks never saw the final block: the codes' and the residual's losses are the same.
    for name in ("image", "residual"):
        torch.testing.assert_close(outputs[1].losses[name], outputs[0].losses[name], rtol=1e-5, atol=1e-5)
    # Nor the residual head's conditions, which residual-head distillation collects from lean batches.
    from vlm.teacher_forcing import teacher_forced_residuals
    lean_conditions, lean_residuals, lean_indices = teacher_forced_residuals(model, lean)
    full_conditions, full_residuals, full_indices = teacher_forced_residuals(model, full)
    assert lean_indices == full_indices
    torch.testing.assert_close(lean_conditions, full_conditions, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lean_residuals, full_residuals)
    # Blinding it for classifier-free guidance covers its scale blocks and stops at <|image_end|>.
    from vlm.teacher_forcing import blind_drawings, dropped_drawings
    drawn = lean.images[0]
    scale_positions = sum(size * size for size in model.image_tokenizer.config.scales)
    blind = blind_drawings(model, lean, lean.attention_mask(), dropped_drawings(model, lean, None, 1.0))[0, 0]
    prompt = slice(0, drawn.start - 1)
    assert (blind[drawn.start - 1:drawn.start + scale_positions, prompt] < 0).all()
    assert (blind[drawn.start + scale_positions, prompt] == 0).all()
