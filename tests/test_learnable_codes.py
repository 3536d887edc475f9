"""Codes a decoder can learn: squared-L2 look-up, flat images giving flat codes, k-means codebooks,
and the tokenizer's training data and benchmark pieces."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from PIL import Image

from tests.conftest import tiny_tokenizer_config
from training.codebook_kmeans import kmeans_codebook, lloyd, nearest
from vlm.tokenizer import HybridTokenizer, TokenizerConfig
from worlds.image_sets import PhotoCrops, SyntheticRenders, photo_paths, stack_pixels


def test_l2_lookup_picks_one_code_for_every_zero_rest(tiny_tokenizer):
    quantizer = tiny_tokenizer.quantizer
    zeros = torch.zeros(50, tiny_tokenizer.config.latent_channels)
    tiny = torch.randn(50, tiny_tokenizer.config.latent_channels, generator=torch.Generator().manual_seed(0)) * 1e-6
    codes = torch.cat([quantizer.lookup(zeros), quantizer.lookup(tiny)])
    assert codes.unique().numel() == 1
    assert int(codes[0]) == int(quantizer.codebook.weight.norm(dim=-1).argmin())


def test_l2_lookup_is_the_nearest_code_by_distance(tiny_tokenizer):
    vectors = torch.randn(200, tiny_tokenizer.config.latent_channels, generator=torch.Generator().manual_seed(1))
    expected = torch.cdist(vectors, tiny_tokenizer.quantizer.codebook.weight).argmin(dim=-1)
    assert torch.equal(tiny_tokenizer.quantizer.lookup(vectors), expected)


def test_cosine_lookup_scatters_near_zero_rests_which_l2_does_not():
    torch.manual_seed(0)
    cosine = HybridTokenizer(tiny_tokenizer_config(lookup="cosine")).quantizer
    noise = torch.randn(500, 8, generator=torch.Generator().manual_seed(2)) * 1e-4
    assert cosine.lookup(noise).unique().numel() > 10
    torch.manual_seed(0)
    assert HybridTokenizer(tiny_tokenizer_config()).quantizer.lookup(noise).unique().numel() == 1


@pytest.mark.parametrize("colour", ["white", "black", (30, 70, 220)])
def test_a_flat_image_gives_one_code_per_scale(tiny_tokenizer, colour):
    tokens = tiny_tokenizer.encode(Image.new("RGB", (32, 32), colour))
    assert [int(codes.unique().numel()) for codes in tokens.codes] == [1] * len(tiny_tokenizer.config.scales)


def test_zero_padding_makes_the_border_of_a_flat_image_differ(tiny_tokenizer):
    """Why the new tokenizers use replicate padding: with zero padding a blank canvas is not flat."""
    torch.manual_seed(0)
    zero_padded = HybridTokenizer(tiny_tokenizer_config(padding_mode="zeros")).eval()
    latent = zero_padded.encoder(zero_padded.preprocess(Image.new("RGB", (32, 32), "white")))
    assert (latent - latent.mean(dim=(2, 3), keepdim=True)).abs().max() > 1e-3


def test_checkpoints_without_the_new_fields_load_as_the_cosine_zero_padded_tokenizer(tiny_tokenizer, tmp_path):
    legacy = HybridTokenizer(tiny_tokenizer_config(lookup="cosine", padding_mode="zeros"))
    legacy.save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    del values["lookup"], values["padding_mode"]
    (tmp_path / "config.json").write_text(json.dumps(values))
    loaded = HybridTokenizer.from_pretrained(tmp_path)
    assert (loaded.config.lookup, loaded.config.padding_mode) == ("cosine", "zeros")
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    for ours, theirs in zip(loaded.encode_pixels(pixels).codes, legacy.eval().encode_pixels(pixels).codes):
        assert torch.equal(ours, theirs)
    # A config written by hand gets today's defaults, not the legacy ones.
    assert TokenizerConfig.from_dict({}).lookup == "l2"


def test_config_rejects_unknown_lookups_and_paddings():
    with pytest.raises(ValueError, match="lookup"):
        tiny_tokenizer_config(lookup="dot")
    with pytest.raises(ValueError, match="padding_mode"):
        tiny_tokenizer_config(padding_mode="reflect101")


def test_growing_may_change_the_codebook_size_and_lookup(tiny_tokenizer):
    bigger = tiny_tokenizer.grown(tiny_tokenizer_config(codebook_size=128, lookup="cosine"))
    assert bigger.quantizer.codebook.weight.shape[0] == 128 and bigger.config.lookup == "cosine"
    for ours, theirs in zip(bigger.encoder.parameters(), tiny_tokenizer.encoder.parameters()):
        assert torch.equal(ours, theirs)


def test_lloyd_finds_well_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([centre + 0.1 * torch.randn(100, 2, generator=generator) for centre in centres])
    found = lloyd(points, points[torch.tensor([0, 150, 250])], iterations=10, generator=generator)
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.1
    assert nearest(points, found).unique().numel() == 3


def test_kmeans_codebook_lowers_the_quantization_error(tiny_tokenizer):
    pixels = stack_pixels(SyntheticRenders(48, image_size=32))
    before = HybridTokenizer(tiny_tokenizer.config)
    before.load_state_dict(tiny_tokenizer.state_dict())
    error_before = float(before.quantizer(before.encoder(pixels)).residual.square().mean())
    kmeans_codebook(tiny_tokenizer, pixels, rounds=2, iterations=5)
    error_after = float(tiny_tokenizer.quantizer(tiny_tokenizer.encoder(pixels)).residual.square().mean())
    assert error_after < error_before


def test_synthetic_renders_are_seeded_and_include_blank_canvases():
    first, second = SyntheticRenders(40, image_size=32, seed=3), SyntheticRenders(40, image_size=32, seed=3)
    assert torch.equal(first[7]["pixels"], second[7]["pixels"])
    assert first[0]["pixels"].shape == (3, 32, 32)
    assert any(bool((first[index]["pixels"] == 1).all()) for index in range(40))
    with pytest.raises(ValueError, match="count"):
        SyntheticRenders(0)


def test_photo_crops_are_seeded_and_split_by_photo():
    train, heldout = PhotoCrops("train", 8, image_size=32), PhotoCrops("heldout", 8, image_size=32)
    assert torch.equal(train[3]["pixels"], PhotoCrops("train", 8, image_size=32)[3]["pixels"])
    assert train[0]["pixels"].shape == (3, 32, 32) and -1 <= float(train[0]["pixels"].min())
    assert not torch.equal(train[0]["pixels"], heldout[0]["pixels"])
    with pytest.raises(ValueError, match="split"):
        PhotoCrops("test", 4)


def test_photo_splits_hold_distinct_photographs():
    # Byte-identical copies ship in the wheels (gradio's cheetah1.jpg and cheetah1-copy.jpg): a
    # copy on both sides would score training photos as held-out, and one twice would weigh double.
    def digests(paths):
        return [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]

    train, heldout = digests(photo_paths("train")), digests(photo_paths("heldout"))
    assert len(train) == 20 and len(heldout) == 3
    assert len(set(train)) == len(train) and len(set(heldout)) == len(heldout)
    assert not set(train) & set(heldout)


def test_tokenizer_benchmark_code_statistics_and_thumbnail(tiny_tokenizer):
    from benchmarks.tokenizer import code_statistics, flat_shapes, thumbnail

    assert len(flat_shapes()) == 240
    stats = code_statistics(tiny_tokenizer)
    scales = tiny_tokenizer.config.scales
    assert len(stats["code_entropy_per_scale"]) == len(scales)
    assert stats["blank_codes_per_scale"] == [1] * len(scales)
    assert all(0 <= value <= torch.log(torch.tensor(64.0)) + 1e-4 for value in stats["code_entropy_per_scale"])
    flat = torch.full((2, 3, 64, 64), 0.25)
    assert torch.allclose(thumbnail(flat, 16), flat, atol=1e-5)
