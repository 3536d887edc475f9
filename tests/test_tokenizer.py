"""The hybrid tokenizer on tiny random configs: the residual bookkeeping and the loading contract."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_tokenizer_config
from vlm.quantizer import RunningSum
from vlm.tokenizer import CheckpointError, HybridTokenizer, HybridTokens, TokenizerConfig


def random_pixels(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_encode_gives_codes_per_scale_and_a_float_residual(tiny_tokenizer):
    config = tiny_tokenizer.config
    tokens = tiny_tokenizer.encode_pixels(random_pixels())
    assert [tuple(codes.shape) for codes in tokens.codes] == [(2, size, size) for size in config.scales]
    assert all(codes.dtype == torch.int64 for codes in tokens.codes)
    assert all(int(codes.min()) >= 0 and int(codes.max()) < config.codebook_size for codes in tokens.codes)
    assert tokens.residual.shape == (2, config.latent_channels, config.latent_size, config.latent_size)
    assert tokens.residual.dtype == torch.float32
    assert tiny_tokenizer.decode(tokens).shape == (2, 3, 32, 32)
    assert len(tokens) == 2 and len(tokens[1]) == 1


def test_encode_accepts_pil_images_and_resizes_them(tiny_tokenizer):
    from PIL import Image

    tokens = tiny_tokenizer.encode([Image.new("RGBA", (50, 70), (0, 0, 0, 0)), Image.new("RGB", (9, 9))])
    assert len(tokens) == 2


def test_hybrid_decoding_is_exactly_the_plain_autoencoder(tiny_tokenizer):
    pixels = random_pixels()
    tokens = tiny_tokenizer.encode_pixels(pixels)
    with torch.no_grad():
        plain = tiny_tokenizer.decoder(tiny_tokenizer.encoder(pixels)).clamp(-1, 1)
    hybrid = tiny_tokenizer.decode(tokens, use_residual=True)
    assert torch.allclose(hybrid, plain, atol=1e-5)
    discrete = tiny_tokenizer.decode(tokens, use_residual=False)
    assert (discrete - plain).abs().max() > 1e-3  # a random codebook does lose information


def test_residual_is_what_the_discrete_sum_misses(tiny_tokenizer):
    pixels = random_pixels()
    tokens = tiny_tokenizer.encode_pixels(pixels)
    with torch.no_grad():
        latent = tiny_tokenizer.encoder(pixels)
        discrete = tiny_tokenizer.quantizer.codes_to_latent(tokens.codes)
    assert torch.allclose(discrete + tokens.residual, latent, atol=1e-6)


def test_scale_inputs_match_a_recomputation_from_the_codes(tiny_tokenizer):
    """Recompute VAR/HART's bookkeeping by hand: bicubic up, phi (not on the last scale), area down."""
    quantizer = tiny_tokenizer.quantizer
    tokens = tiny_tokenizer.encode_pixels(random_pixels())
    scales = tiny_tokenizer.config.scales
    latent_size = scales[-1]
    running = torch.zeros_like(tokens.residual)
    expected = []
    with torch.no_grad():
        for index, codes in enumerate(tokens.codes[:-1]):
            embedding = quantizer.codebook.weight[codes].permute(0, 3, 1, 2)
            if embedding.shape[-1] != latent_size:
                embedding = F.interpolate(embedding, size=latent_size, mode="bicubic", align_corners=False)
            fraction = index / (len(scales) - 1)
            conv = quantizer.phi.convs[int((quantizer.phi.ticks - fraction).abs().argmin())]
            running = running + 0.5 * embedding + 0.5 * conv(embedding)
            expected.append(F.interpolate(running, size=scales[index + 1], mode="area"))
        actual = tiny_tokenizer.scale_inputs(tokens.codes)
    assert len(actual) == len(scales) - 1
    for got, want, size in zip(actual, expected, scales[1:]):
        assert got.shape[-2:] == (size, size)
        assert torch.allclose(got, want, atol=1e-6)
    # The last scale is added without phi: the full discrete sum is running + raw embedding.
    last = quantizer.codebook.weight[tokens.codes[-1]].permute(0, 3, 1, 2)
    assert torch.allclose(quantizer.codes_to_latent(tokens.codes), running + last, atol=1e-6)


def test_the_running_sum_is_the_one_next_scale_rule_and_refuses_steps_past_the_end(tiny_tokenizer):
    quantizer = tiny_tokenizer.quantizer
    tokens = tiny_tokenizer.encode_pixels(random_pixels())
    running = RunningSum(quantizer)
    with pytest.raises(ValueError, match="no next scale"):
        running.next_input()  # the first scale reads the model's start vector, not a sum
    with torch.no_grad():
        for codes, teacher_forced in zip(tokens.codes, tiny_tokenizer.scale_inputs(tokens.codes)):
            running.add(codes)
            assert torch.equal(running.next_input(), teacher_forced)
        running.add(tokens.codes[-1])
        assert torch.equal(running.latent, quantizer.codes_to_latent(tokens.codes))
    with pytest.raises(ValueError, match="no next scale"):
        running.next_input()
    with pytest.raises(ValueError, match="already in the sum"):
        running.add(tokens.codes[-1])


def test_save_then_load_is_bit_exact(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    loaded = HybridTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.config == tiny_tokenizer.config
    for name, tensor in tiny_tokenizer.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    pixels = random_pixels()
    before, after = tiny_tokenizer.encode_pixels(pixels), loaded.encode_pixels(pixels)
    assert all(torch.equal(a, b) for a, b in zip(before.codes, after.codes))
    assert torch.equal(tiny_tokenizer.decode(before), loaded.decode(after))
    assert not list((tmp_path / "tok").glob("*.tmp"))


def test_loading_a_checkpoint_of_the_wrong_shape_names_the_mismatch(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    config["codebook_size"] = 128
    (tmp_path / "tok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"quantizer.codebook.weight: checkpoint \(64, 8\) vs config \(128, 8\)"):
        HybridTokenizer.from_pretrained(tmp_path / "tok")


def test_loading_broken_checkpoints_raises_clear_errors(tiny_tokenizer, tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json"):
        HybridTokenizer.from_pretrained(tmp_path / "nowhere")
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        HybridTokenizer.from_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / "config.json").write_text('{"image_size": 32, "colour": 1}')
    with pytest.raises(CheckpointError, match="unknown TokenizerConfig keys \\['colour'\\]"):
        HybridTokenizer.from_pretrained(tmp_path / "tok")


def test_config_rejects_scales_that_do_not_end_at_the_latent_size():
    with pytest.raises(ValueError, match="last scale must equal the latent size 8"):
        TokenizerConfig(scales=(1, 2, 4))
    with pytest.raises(ValueError, match="one entry per level"):
        TokenizerConfig(res_blocks_per_level=(1, 1))


def test_256px_is_only_a_config():
    config = tiny_tokenizer_config(image_size=256, encoder_channels=(4, 8, 8, 8), res_blocks_per_level=(0, 0, 0, 1),
                                   scales=(1, 2, 4, 8, 16, 32))
    model = HybridTokenizer(config).eval()
    tokens = model.encode_pixels(random_pixels(1, 256))
    assert tokens.codes[-1].shape == (1, 32, 32)
    assert model.decode(tokens).shape == (1, 3, 256, 256)


def test_decoding_codes_of_the_wrong_shape_or_range_raises(tiny_tokenizer):
    tokens = tiny_tokenizer.encode_pixels(random_pixels())
    with pytest.raises(ValueError, match="expected codes for 5 scales"):
        tiny_tokenizer.decode(HybridTokens(tokens.codes[:-1], tokens.residual))
    bad = [codes.clone() for codes in tokens.codes]
    bad[0][:] = 1000
    with pytest.raises(ValueError, match=r"codes of scale 0 must lie in \[0, 64\)"):
        tiny_tokenizer.decode(HybridTokens(bad, tokens.residual))


def test_training_pass_takes_either_path_and_has_gradients(tiny_tokenizer):
    tiny_tokenizer.train()
    pixels = random_pixels()
    for use_residual in (True, False):
        tiny_tokenizer.zero_grad()
        output = tiny_tokenizer(pixels, use_residual=use_residual)
        (F.mse_loss(output.reconstruction, pixels) + output.quantized.vq_loss).backward()
        assert tiny_tokenizer.encoder.layers[0].weight.grad.abs().sum() > 0
        assert tiny_tokenizer.quantizer.codebook.weight.grad.abs().sum() > 0
        assert tiny_tokenizer.decoder.layers[0].weight.grad.abs().sum() > 0


def test_a_grown_tokenizer_computes_exactly_what_the_original_did(tiny_tokenizer):
    bigger = tiny_tokenizer_config(res_blocks_per_level=(1, 1, 2), decoder_res_blocks_per_level=(1, 2, 3))
    grown = tiny_tokenizer.grown(bigger).eval()
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in tiny_tokenizer.parameters())
    pixels = random_pixels()
    tokens, grown_tokens = tiny_tokenizer.encode_pixels(pixels), grown.encode_pixels(pixels)
    for codes, grown_codes in zip(tokens.codes, grown_tokens.codes):
        assert torch.equal(codes, grown_codes)
    torch.testing.assert_close(grown.decode(grown_tokens), tiny_tokenizer.decode(tokens))
    torch.testing.assert_close(grown.decode(tokens, use_residual=False), tiny_tokenizer.decode(tokens, False))


def test_growing_refuses_anything_but_extra_blocks(tiny_tokenizer):
    with pytest.raises(ValueError, match="latent_channels"):
        tiny_tokenizer.grown(tiny_tokenizer_config(latent_channels=16))
    with pytest.raises(ValueError, match="may only grow"):
        tiny_tokenizer.grown(tiny_tokenizer_config(decoder_res_blocks_per_level=(0, 0, 1)))
    with pytest.raises(ValueError, match="one entry per level"):
        tiny_tokenizer_config(decoder_res_blocks_per_level=(1, 1))
