"""VAR-style multi-scale residual quantizer with HART's continuous residual.

The residual bookkeeping here is the single definition used everywhere (tokenizer
training, the decoder model's teacher forcing and inference): for each scale, take what
is left of the latent at that scale's size, look up the nearest code, bring it back to the
latent grid, refine it with phi, and subtract it from what is left. The last scale is at
the latent's own size and is added without phi (HART), so that

    f = sum_k phi_k(up(e_k)) + e_last + residual.

Codes are looked up by squared L2 distance on the unnormalised vector (VAR's and HART's
rule): a near-zero rest always maps to the same small code, so flat regions get the same
codes every time and a decoder model can learn them. The first tokenizer looked codes up by
cosine similarity, which picks by the *direction* of near-zero rests, i.e. by noise
(measured: ~7 nats per token at the finest scales); `lookup="cosine"` keeps it loadable.

Maths runs in float32 even under autocast: argmin over thousands of codes is not bf16 work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    """What one pass of the quantizer gives the tokenizer and its trainer."""

    codes: list[torch.Tensor]  # per scale, (B, s, s) int64
    latent_discrete: torch.Tensor  # (B, C, H, W): sum of the refined code embeddings
    residual: torch.Tensor  # (B, C, H, W): f - latent_discrete, exactly
    vq_loss: torch.Tensor  # scalar: codebook + commitment, averaged over scales
    latents_per_scale: list[torch.Tensor]  # per scale, (B * s * s, C): the vectors looked up


def area_downsample(latent_BCHW: torch.Tensor, size: int) -> torch.Tensor:
    if latent_BCHW.shape[-1] == size:
        return latent_BCHW
    return F.interpolate(latent_BCHW, size=(size, size), mode="area")


def bicubic_upsample(latent_BCHW: torch.Tensor, size: int) -> torch.Tensor:
    if latent_BCHW.shape[-1] == size:
        return latent_BCHW
    return F.interpolate(latent_BCHW, size=(size, size), mode="bicubic", align_corners=False)


class PhiRefiner(nn.Module):
    """A few 3x3 convs shared across scales; scale k uses the one whose tick is nearest k/(K-1).

    phi(x) = (1 - ratio) x + ratio conv(x): a light correction of the blurry upsampled code
    embedding, which is what lets coarse codes describe sharp latents (VAR).
    """

    def __init__(self, channels: int, num_convs: int, residual_ratio: float, padding_mode: str = "zeros"):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode)
                                   for _ in range(num_convs))
        self.residual_ratio = residual_ratio
        # Ticks spread over (0, 1) so the first and last convs are not pinned to the ends.
        self.register_buffer(
            "ticks", torch.linspace(1 / (3 * num_convs), 1 - 1 / (3 * num_convs), num_convs), persistent=False
        )

    def forward(self, latent_BCHW: torch.Tensor, scale_fraction: float) -> torch.Tensor:
        index = int(torch.argmin((self.ticks - scale_fraction).abs()).item())
        refined = self.convs[index](latent_BCHW)
        return latent_BCHW.mul(1 - self.residual_ratio) + refined.mul(self.residual_ratio)


LOOKUPS = ("l2", "cosine")


class MultiScaleQuantizer(nn.Module):
    """One shared codebook looked up at every scale of a coarse-to-fine schedule."""

    def __init__(
        self,
        codebook_size: int,
        latent_channels: int,
        scales: tuple[int, ...],
        num_phi_convs: int,
        phi_residual_ratio: float,
        commitment_weight: float,
        lookup: str = "l2",
        padding_mode: str = "zeros",
    ):
        super().__init__()
        if lookup not in LOOKUPS:
            raise ValueError(f"lookup must be one of {LOOKUPS}, got {lookup!r}")
        self.scales = tuple(scales)
        self.commitment_weight = commitment_weight
        self.lookup_rule = lookup
        self.codebook = nn.Embedding(codebook_size, latent_channels)
        nn.init.normal_(self.codebook.weight, std=1.0)
        self.phi = PhiRefiner(latent_channels, num_phi_convs, phi_residual_ratio, padding_mode)

    @property
    def latent_size(self) -> int:
        return self.scales[-1]

    def lookup(self, vectors_NC: torch.Tensor) -> torch.Tensor:
        """Nearest code: squared L2 (ties go to the lower index), or cosine for the legacy tokenizer."""
        codebook = self.codebook.weight.float()
        vectors_NC = vectors_NC.float()
        if self.lookup_rule == "cosine":
            similarity = F.normalize(vectors_NC, dim=-1) @ F.normalize(codebook, dim=-1).T
            return similarity.argmax(dim=-1)
        # ||v - c||^2 = ||v||^2 - 2 v.c + ||c||^2; the first term is the same for every code.
        distances = codebook.square().sum(dim=-1)[None] - 2 * vectors_NC @ codebook.T
        return distances.argmin(dim=-1)

    def embed(self, codes_Bss: torch.Tensor) -> torch.Tensor:
        """(B, s, s) codes -> (B, C, s, s) code embeddings."""
        return self.codebook(codes_Bss).permute(0, 3, 1, 2)

    def scale_contribution(self, scale_index: int, codes_Bss: torch.Tensor) -> torch.Tensor:
        """What scale `scale_index`'s codes add to the running discrete sum, on the latent grid."""
        embedding = self.embed(codes_Bss).float()
        if scale_index == len(self.scales) - 1:
            return embedding
        upsampled = bicubic_upsample(embedding, self.latent_size)
        return self.phi(upsampled, scale_index / (len(self.scales) - 1))

    def next_scale_input(self, latent_discrete_BCHW: torch.Tensor, scale_index: int) -> torch.Tensor:
        """The running discrete sum at the size of scale `scale_index + 1`: the decoder model's input."""
        return area_downsample(latent_discrete_BCHW, self.scales[scale_index + 1])

    def still_missing(self, target_BCHW: torch.Tensor, scale_index: int,
                      running_input_BCHW: torch.Tensor | None) -> torch.Tensor:
        """(B, C, s, s): what scale `scale_index` looks its codes up from when `target` is the
        latent being quantized and the sum so far is `running_input` (that scale's decoder
        input, None for the first scale). Area pooling is linear, so this is exactly the vector
        `_quantize` looks up wherever the running sum is `target`'s own."""
        wanted = area_downsample(target_BCHW.float(), self.scales[scale_index])
        return wanted if running_input_BCHW is None else wanted - running_input_BCHW.float()

    def codes_to_latent(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Sum of every scale's contribution: the discrete-only latent."""
        self._check_codes(codes)
        latent = torch.zeros(
            codes[0].shape[0], self.codebook.embedding_dim, self.latent_size, self.latent_size,
            device=self.codebook.weight.device,
        )
        for scale_index, codes_Bss in enumerate(codes):
            latent = latent + self.scale_contribution(scale_index, codes_Bss)
        return latent

    def scale_inputs(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Teacher-forcing inputs: entry k is the running sum after scales 0..k at scale k+1's size.

        There are K - 1 entries; the first scale's input is the decoder model's own start token.
        Built with `RunningSum`, the same bookkeeping sampling uses one scale at a time.
        """
        self._check_codes(codes)
        running = RunningSum(self)
        inputs = []
        for codes_Bss in codes[:-1]:
            running.add(codes_Bss)
            inputs.append(running.next_input())
        return inputs

    def _check_codes(self, codes: list[torch.Tensor]) -> None:
        if len(codes) != len(self.scales):
            raise ValueError(f"expected codes for {len(self.scales)} scales {self.scales}, got {len(codes)}")
        for scale_index, (codes_Bss, size) in enumerate(zip(codes, self.scales)):
            if codes_Bss.shape[-2:] != (size, size):
                raise ValueError(
                    f"codes of scale {scale_index} have shape {tuple(codes_Bss.shape)}, expected (B, {size}, {size})"
                )
            if codes_Bss.numel() and (codes_Bss.min() < 0 or codes_Bss.max() >= self.codebook.num_embeddings):
                raise ValueError(
                    f"codes of scale {scale_index} must lie in [0, {self.codebook.num_embeddings}), "
                    f"got [{int(codes_Bss.min())}, {int(codes_Bss.max())}]"
                )

    def forward(self, latent_BCHW: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(device_type=latent_BCHW.device.type, enabled=False):
            return self._quantize(latent_BCHW.float())

    def _quantize(self, latent_BCHW: torch.Tensor) -> QuantizerOutput:
        if latent_BCHW.shape[-1] != self.latent_size or latent_BCHW.shape[-2] != self.latent_size:
            raise ValueError(
                f"latent of shape {tuple(latent_BCHW.shape)} does not match the last scale {self.latent_size}"
            )
        batch, channels = latent_BCHW.shape[:2]
        target = latent_BCHW.detach()
        rest = target
        discrete = torch.zeros_like(target)
        codes: list[torch.Tensor] = []
        looked_up: list[torch.Tensor] = []
        vq_loss = latent_BCHW.new_zeros(())
        for scale_index, size in enumerate(self.scales):
            vectors_NC = area_downsample(rest, size).permute(0, 2, 3, 1).reshape(-1, channels)
            codes_Bss = self.lookup(vectors_NC).view(batch, size, size)
            discrete = discrete + self.scale_contribution(scale_index, codes_Bss)
            rest = target - discrete.detach()
            codes.append(codes_Bss)
            looked_up.append(vectors_NC)
            # Codebook and phi move towards the encoder; the encoder commits to the codes.
            vq_loss = vq_loss + F.mse_loss(discrete, target) + self.commitment_weight * F.mse_loss(
                latent_BCHW, discrete.detach()
            )
        vq_loss = vq_loss / len(self.scales)
        residual = (latent_BCHW - discrete).detach()
        # Straight-through: the value of the discrete sum, the gradient of the encoder's latent.
        latent_discrete = latent_BCHW + (discrete - latent_BCHW).detach()
        return QuantizerOutput(codes, latent_discrete, residual, vq_loss, looked_up)


class RunningSum:
    """The discrete latent built one scale at a time: next-scale prediction's whole state.

    The one definition of the rule for both uses: teacher forcing (`scale_inputs`, all scales
    at once from known codes) and sampling (`vlm.next_scale.ImageDrawing`, one scale per step
    from sampled codes). `next_input` is what the decoder model reads to predict the next scale.
    """

    def __init__(self, quantizer: MultiScaleQuantizer):
        self.quantizer = quantizer
        self.latent: torch.Tensor | None = None  # (B, C, h, w) on the last scale's grid
        self.scales_done = 0

    def add(self, codes_Bss: torch.Tensor) -> None:
        """Add the next scale's codes."""
        if self.scales_done >= len(self.quantizer.scales):
            raise ValueError(f"all {len(self.quantizer.scales)} scales are already in the sum")
        contribution = self.quantizer.scale_contribution(self.scales_done, codes_Bss)
        self.latent = contribution if self.latent is None else self.latent + contribution
        self.scales_done += 1

    def next_input(self) -> torch.Tensor:
        """The sum so far at the next scale's size (the input of the next scale block)."""
        if self.latent is None or self.scales_done >= len(self.quantizer.scales):
            raise ValueError(f"no next scale: {self.scales_done} of {len(self.quantizer.scales)} scales are done")
        return self.quantizer.next_scale_input(self.latent, self.scales_done - 1)
