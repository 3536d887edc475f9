"""The hybrid image tokenizer: pixels <-> multi-scale discrete codes + a continuous residual.

`HybridTokenizer.encode` gives `HybridTokens`; `decode` turns them back into pixels, either
from the discrete codes alone (what the decoder model predicts token by token) or with
the residual added (what the residual diffusion head predicts). With the true residual,
hybrid decoding is exactly the plain autoencoder: the residual holds all the codes lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from vlm.autoencoder import Decoder, Encoder, grow_into
from vlm.config_io import config_from_dict
from vlm.image_io import ImageInput, images_to_tensor, tensor_to_pil
from vlm.quantizer import LOOKUPS, MultiScaleQuantizer, QuantizerOutput

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
# Tokenizers shipped in the package, by the name a model's config may give instead of carrying a copy.
# "tokenizer512" (512 codes, squared-L2 look-up: codes a decoder model can learn) is the default: the
# one loaded when no path is given, and the one the default chat model draws with. "cosine4096" (the
# folder `pretrained/tokenizer`) is the first tokenizer, cosine look-up over 4096 codes, kept for the
# models trained on it.
PACKAGED_TOKENIZERS = {"tokenizer512": PRETRAINED_DIR / "tokenizer512", "cosine4096": PRETRAINED_DIR / "tokenizer"}
DEFAULT_TOKENIZER_PATH = PACKAGED_TOKENIZERS["tokenizer512"]
# Names earlier versions wrote into model configs: "default" was the cosine tokenizer while it was the default.
LEGACY_TOKENIZER_NAMES = {"default": "cosine4096"}


def packaged_tokenizer(name: str) -> Path | None:
    """The folder of the tokenizer shipped in the package under `name` (or a legacy name), else None."""
    return PACKAGED_TOKENIZERS.get(LEGACY_TOKENIZER_NAMES.get(name, name))


class CheckpointError(ValueError):
    """A checkpoint folder is missing files or does not match its own config."""


# What a saved config that lacks a field meant when it was written (before the field existed).
LEGACY_DEFAULTS = {"lookup": "cosine", "padding_mode": "zeros"}


@dataclass
class TokenizerConfig:
    """Every size of the tokenizer; saved as JSON beside the weights."""

    image_size: int = 64
    image_channels: int = 3
    latent_channels: int = 32
    # Width per resolution level, full resolution first; each further level halves the size.
    encoder_channels: tuple[int, ...] = (32, 64, 128, 192)
    res_blocks_per_level: tuple[int, ...] = (0, 1, 1, 2)
    # The decoder's blocks per level (full resolution first); None mirrors the encoder. A deeper
    # decoder buys reconstruction quality without changing the codes the encoder gives.
    decoder_res_blocks_per_level: tuple[int, ...] | None = None
    codebook_size: int = 4096
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    num_phi_convs: int = 4
    phi_residual_ratio: float = 0.5
    commitment_weight: float = 0.25
    # "l2": nearest code by squared distance (VAR, HART); "cosine": the first tokenizer's rule.
    lookup: str = "l2"
    # Padding of every 3x3 convolution: "replicate" keeps flat images flat up to the border.
    padding_mode: str = "replicate"

    def __post_init__(self) -> None:
        self.encoder_channels = tuple(self.encoder_channels)
        self.res_blocks_per_level = tuple(self.res_blocks_per_level)
        self.scales = tuple(self.scales)
        if self.decoder_res_blocks_per_level is not None:
            self.decoder_res_blocks_per_level = tuple(self.decoder_res_blocks_per_level)
        for name in ("res_blocks_per_level", "decoder_res_blocks_per_level"):
            blocks = getattr(self, name)
            if blocks is not None and len(blocks) != len(self.encoder_channels):
                raise ValueError(
                    f"{name} {blocks} needs one entry per level of encoder_channels {self.encoder_channels}"
                )
        if self.image_size % self.downsample_factor:
            raise ValueError(f"image_size {self.image_size} is not divisible by {self.downsample_factor}")
        if self.scales[-1] != self.latent_size:
            raise ValueError(
                f"the last scale must equal the latent size {self.latent_size} "
                f"(image_size {self.image_size} / downsample {self.downsample_factor}), got scales {self.scales}"
            )
        if list(self.scales) != sorted(set(self.scales)):
            raise ValueError(f"scales must grow strictly, got {self.scales}")
        if self.lookup not in LOOKUPS:
            raise ValueError(f"lookup must be one of {LOOKUPS}, got {self.lookup!r}")
        if self.padding_mode not in ("zeros", "replicate"):
            raise ValueError(f"padding_mode must be 'zeros' or 'replicate', got {self.padding_mode!r}")

    @property
    def decoder_blocks(self) -> tuple[int, ...]:
        return self.decoder_res_blocks_per_level or self.res_blocks_per_level

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.encoder_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample_factor

    @property
    def tokens_per_image(self) -> int:
        return sum(size * size for size in self.scales)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values: dict, source: str | None = None) -> TokenizerConfig:
        return config_from_dict(cls, values, source)


@dataclass
class HybridTokens:
    """An image as the decoder model sees it: codes per scale plus the continuous residual."""

    codes: list[torch.Tensor]  # per scale, (B, s, s) int64
    residual: torch.Tensor  # (B, latent_channels, h, w) float32

    def __len__(self) -> int:
        return self.residual.shape[0]

    def __getitem__(self, index: int | slice) -> HybridTokens:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return HybridTokens([codes[index] for codes in self.codes], self.residual[index])

    def to(self, device: torch.device | str) -> HybridTokens:
        return HybridTokens([codes.to(device) for codes in self.codes], self.residual.to(device))


@dataclass
class TokenizerOutput:
    """A training pass: the reconstruction and what the losses need."""

    reconstruction: torch.Tensor  # (B, 3, H, W) in roughly [-1, 1]
    quantized: QuantizerOutput


class HybridTokenizer(nn.Module):
    """Encoder, multi-scale quantizer and decoder, with the HF-style loading contract."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.image_channels, config.latent_channels, config.encoder_channels,
                               config.res_blocks_per_level, config.padding_mode)
        self.quantizer = MultiScaleQuantizer(
            config.codebook_size,
            config.latent_channels,
            config.scales,
            config.num_phi_convs,
            config.phi_residual_ratio,
            config.commitment_weight,
            config.lookup,
            config.padding_mode,
        )
        self.decoder = Decoder(config.image_channels, config.latent_channels, config.encoder_channels,
                               config.decoder_blocks, config.padding_mode)

    def grown(self, config: TokenizerConfig) -> HybridTokenizer:
        """A copy with the deeper encoder/decoder of `config` that computes exactly what this one does.

        Extra residual blocks start as the identity (last convolution zeroed), so training a
        bigger tokenizer can resume from a trained smaller one instead of from scratch.
        Besides growing, `config` may change the look-up rule, the padding and the codebook
        size; a codebook of a new size starts untrained (see `training.codebook_kmeans`), so
        such a copy no longer computes what this one does and needs training.
        """
        ours = asdict(self.config)
        theirs = asdict(config)
        changeable = {"res_blocks_per_level", "decoder_res_blocks_per_level", "lookup", "padding_mode",
                      "codebook_size"}
        changed = sorted(key for key in ours if key not in changeable and ours[key] != theirs[key])
        if changed:
            raise ValueError("a grown tokenizer may only add residual blocks or change lookup, padding_mode and "
                             f"codebook_size; these fields differ: {changed}")
        for name, old, new in (
            ("res_blocks_per_level", self.config.res_blocks_per_level, config.res_blocks_per_level),
            ("decoder_res_blocks_per_level", self.config.decoder_blocks, config.decoder_blocks),
        ):
            if any(after < before for before, after in zip(old, new)):
                raise ValueError(f"{name} may only grow: {old} -> {new}")
        grown = HybridTokenizer(config).to(self.device)
        quantizer_state = self.quantizer.state_dict()
        if config.codebook_size != self.config.codebook_size:
            quantizer_state["codebook.weight"] = grown.quantizer.codebook.weight.detach().clone()
        grown.quantizer.load_state_dict(quantizer_state)
        grow_into(self.encoder.layers, grown.encoder.layers)
        grow_into(self.decoder.layers, grown.decoder.layers)
        return grown

    @property
    def device(self) -> torch.device:
        return self.quantizer.codebook.weight.device

    def preprocess(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """Any image inputs -> (B, 3, S, S) in [-1, 1] on this model's device."""
        return images_to_tensor(images, self.config.image_size).to(self.device)

    def forward(self, pixels_BCHW: torch.Tensor, use_residual: bool) -> TokenizerOutput:
        """Training pass through one of the two paths: hybrid (plain autoencoder) or discrete-only."""
        latent = self.encoder(pixels_BCHW)
        quantized = self.quantizer(latent)
        decoder_input = latent if use_residual else quantized.latent_discrete
        return TokenizerOutput(self.decoder(decoder_input), quantized)

    @torch.no_grad()
    def encode(self, images: ImageInput | Sequence[ImageInput]) -> HybridTokens:
        """Images (anything `load_image` reads; tensors in [0, 1]) -> tokens."""
        return self.encode_pixels(self.preprocess(images))

    @torch.no_grad()
    def encode_pixels(self, pixels_BCHW: torch.Tensor) -> HybridTokens:
        """Model-space pixels (B, 3, S, S) in [-1, 1], as `preprocess` makes them -> tokens."""
        quantized = self.quantizer(self.encoder(pixels_BCHW.to(self.device)))
        return HybridTokens(quantized.codes, quantized.residual)

    @torch.no_grad()
    def decode_latent(self, latent_BCHW: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent_BCHW.to(self.device)).clamp(-1, 1)

    def latent(self, tokens: HybridTokens, use_residual: bool = True) -> torch.Tensor:
        """(B, C, h, w): the discrete sum of the codes, plus the residual unless `use_residual=False`."""
        latent = self.quantizer.codes_to_latent([codes.to(self.device) for codes in tokens.codes])
        return latent + tokens.residual.to(self.device) if use_residual else latent

    @torch.no_grad()
    def decode(self, tokens: HybridTokens, use_residual: bool = True) -> torch.Tensor:
        """Tokens -> (B, 3, S, S) pixels in [-1, 1]; `use_residual=False` is discrete-only decoding."""
        return self.decode_latent(self.latent(tokens, use_residual))

    def decode_to_images(self, tokens: HybridTokens, use_residual: bool = True) -> list[Image.Image]:
        return tensor_to_pil(self.decode(tokens, use_residual))

    def scale_inputs(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-scale inputs for the decoder model; see `MultiScaleQuantizer.scale_inputs`."""
        return self.quantizer.scale_inputs([item.to(self.device) for item in codes])

    def fingerprint(self) -> str:
        """A short hash of the config and every weight but the decoder's: what gives the codes and
        residuals their meaning to a model trained on them.

        A chat model that names a tokenizer instead of carrying a copy records this, so it is
        never silently paired with a different one (every code would mean something else). The
        decoder is left out because it only turns latents into pixels: a decoder fine-tuned (or
        deepened, `decoder_res_blocks_per_level`) with the encoder frozen
        (`training.train_tokenizer --freeze-encoder`) keeps the fingerprint, and every model
        trained on the tokenizer draws with the better decoder.
        """
        # The decoder's depth is hashed as "mirrors the encoder" whatever it is, so tokenizers
        # saved before it could change keep their fingerprints.
        codes_config = replace(self.config, decoder_res_blocks_per_level=None)
        return self._hash(lambda name: not name.startswith("decoder."), codes_config)

    def legacy_fingerprint(self) -> str:
        """The hash that models saved by earlier versions recorded (config and every weight, the
        decoder's included); UnifiedVLM.from_pretrained still accepts it."""
        return self._hash(lambda name: True, self.config)

    def _hash(self, keep: Callable[[str], bool], config: TokenizerConfig) -> str:
        digest = hashlib.sha256(config.to_json().encode())
        for name, tensor in sorted(self.state_dict().items()):
            if keep(name):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
        return digest.hexdigest()[:16]

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json + model.safetensors; writes to temporary names first so a crash never
        leaves a half-written checkpoint over a good one."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        weights_tmp = directory / (WEIGHTS_NAME + ".tmp")
        config_tmp = directory / (CONFIG_NAME + ".tmp")
        save_file(tensors, str(weights_tmp), metadata={"format": "pt"})
        config_tmp.write_text(self.config.to_json())
        weights_tmp.replace(directory / WEIGHTS_NAME)
        config_tmp.replace(directory / CONFIG_NAME)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path | None = None, device: str | torch.device = "cpu"
    ) -> HybridTokenizer:
        """Load a folder written by `save_pretrained`; None loads the shipped default tokenizer."""
        directory = Path(directory) if directory is not None else DEFAULT_TOKENIZER_PATH
        config_path = directory / CONFIG_NAME
        weights_path = directory / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise CheckpointError(f"tokenizer checkpoint '{directory}' has no {path.name}")
        try:
            # A checkpoint saved before a field existed was made with that field's legacy value.
            config = TokenizerConfig.from_dict({**LEGACY_DEFAULTS, **json.loads(config_path.read_text())})
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise CheckpointError(f"'{config_path}' is not a valid tokenizer config: {error}") from error
        model = cls(config)
        try:
            state = load_file(str(weights_path))
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"'{weights_path}' is not a readable safetensors file: {error}") from error
        expected = model.state_dict()
        problems = [f"missing {name}" for name in expected if name not in state]
        problems += [f"unexpected {name}" for name in state if name not in expected]
        problems += [
            f"{name}: checkpoint {tuple(state[name].shape)} vs config {tuple(tensor.shape)}"
            for name, tensor in expected.items()
            if name in state and state[name].shape != tensor.shape
        ]
        if problems:
            raise CheckpointError(
                f"'{weights_path}' does not match '{config_path}': " + "; ".join(problems[:5])
                + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
            )
        model.load_state_dict(state)
        logger.info("loaded tokenizer from %s", directory)
        return model.to(device).eval()
