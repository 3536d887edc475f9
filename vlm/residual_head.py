"""The residual diffusion head: MAR's diffusion loss for HART's continuous residual tokens.

A small MLP with adaptive LayerNorm predicts the noise in a noised residual vector, given
a condition vector (in the unified model: the decoder's last hidden state plus the chosen
last-scale code). One decoder pass feeds many diffusion samples: each condition is
repeated `batch_multiplier` times with fresh noise and timesteps (MAR's trick). Sampling
is DDIM on a respaced subset of the training timesteps (8 by default), with optional
classifier-free guidance; or, where one has been distilled (DMD, `training.distill_residual`),
a one-step generator that maps noise to a residual in one call.

The network predicts v = sqrt(a) noise - sqrt(1 - a) x0 (Salimans & Ho) rather than the
noise itself: at the noisiest timesteps of the cosine schedule, recovering x0 from a noise
prediction divides its error by sqrt(a) ~ 1e-2, which wrecks few-step sampling. v is a
linear function of the noise prediction at a given noisy input, so guiding v is the same
as guiding the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ResidualHeadConfig:
    """Sizes and diffusion settings of the head; saved with the model."""

    latent_channels: int = 32
    condition_channels: int = 576
    width: int = 256
    depth: int = 3
    num_train_timesteps: int = 1000
    num_sampling_steps: int = 8
    batch_multiplier: int = 4
    # The loss and the sampler work on residual * target_scale. At 1.0 (what the default model
    # trained with) the residual's std is 0.155-0.177 on tokenizer512, not unit variance; fresh heads
    # trained at 1.0 and at 6.5 (unit variance) left the same share of its energy (0.97-1.03).
    target_scale: float = 1.0
    # A one-step generator distilled from the head (training.distill_residual) ships beside it;
    # sampling with 1 step uses it.
    one_step: bool = False


def cosine_alphas_cumprod(num_timesteps: int, offset: float = 0.008) -> torch.Tensor:
    """The cosine schedule (Nichol & Dhariwal): alpha-bar(t) for t = 0..T-1, clipped like iDDPM."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).float()


def timestep_embedding(timesteps: torch.Tensor, channels: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, (N,) -> (N, channels)."""
    half = channels // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class AdaLNResidualBlock(nn.Module):
    """LayerNorm, shift/scale from the condition, MLP, gated residual (gate starts at 0)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, hidden_NC: torch.Tensor, condition_NC: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(condition_NC).chunk(3, dim=-1)
        return hidden_NC + gate * self.mlp(self.norm(hidden_NC) * (1 + scale) + shift)


class ResidualDenoiser(nn.Module):
    """Predicts v for a noised residual from (residual_t, t, condition)."""

    def __init__(self, config: ResidualHeadConfig):
        super().__init__()
        width = config.width
        self.input_projection = nn.Linear(config.latent_channels, width)
        self.time_projection = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.condition_projection = nn.Linear(config.condition_channels, width)
        self.blocks = nn.ModuleList(AdaLNResidualBlock(width) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.output_projection = nn.Linear(width, config.latent_channels)
        for layer in (self.final_modulation[1], self.output_projection):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, noisy_NC: torch.Tensor, timesteps_N: torch.Tensor, condition_NC: torch.Tensor) -> torch.Tensor:
        width = self.input_projection.out_features
        condition = self.time_projection(timestep_embedding(timesteps_N, width)) + self.condition_projection(
            condition_NC
        )
        hidden = self.input_projection(noisy_NC)
        for block in self.blocks:
            hidden = block(hidden, condition)
        shift, scale = self.final_modulation(condition).chunk(2, dim=-1)
        return self.output_projection(self.final_norm(hidden) * (1 + scale) + shift)


class ResidualDiffusionHead(nn.Module):
    """The diffusion loss for training and an N-step DDIM sampler for inference."""

    def __init__(self, config: ResidualHeadConfig):
        super().__init__()
        self.config = config
        self.denoiser = ResidualDenoiser(config)
        # The distilled one-step generator: the denoiser's architecture, fed pure noise at the last
        # timestep; its x0 estimate is the sample.
        self.one_step = ResidualDenoiser(config) if config.one_step else None
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(config.num_train_timesteps), persistent=False)

    def add_one_step(self, generator: ResidualDenoiser) -> None:
        """Ship a distilled one-step generator beside the multi-step head."""
        self.one_step = generator
        self.config.one_step = True

    def drop_one_step(self) -> bool:
        """Remove the distilled generator before the head trains on: it was distilled from the head
        as it was, so it would sample from a stale distribution (re-distil after training).
        Returns whether there was one."""
        had_one = self.one_step is not None
        self.one_step = None
        self.config.one_step = False
        return had_one

    def x0_from_velocity(self, noisy_NC: torch.Tensor, velocity_NC: torch.Tensor, timesteps_N: torch.Tensor
                         ) -> torch.Tensor:
        alpha_bar = self.alphas_cumprod[timesteps_N][:, None]
        return alpha_bar.sqrt() * noisy_NC - (1 - alpha_bar).sqrt() * velocity_NC

    def one_step_sample(self, network: ResidualDenoiser, noise_NC: torch.Tensor, condition_NC: torch.Tensor
                        ) -> torch.Tensor:
        """One network call from pure noise (t = T - 1) to a residual, in target units."""
        last = torch.full((noise_NC.shape[0],), self.config.num_train_timesteps - 1, device=noise_NC.device,
                          dtype=torch.long)
        return self.x0_from_velocity(noise_NC, network(noise_NC, last, condition_NC).float(), last)

    def loss(self, residual_NC: torch.Tensor, condition_NC: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """v-prediction MSE, each (residual, condition) pair repeated `batch_multiplier` times."""
        repeats = self.config.batch_multiplier
        target = (residual_NC.float() * self.config.target_scale).repeat(repeats, 1)
        condition = condition_NC.repeat(repeats, 1)
        device = target.device
        timesteps = torch.randint(0, self.config.num_train_timesteps, (target.shape[0],), generator=generator,
                                  device="cpu").to(device)
        noise = torch.randn(target.shape, generator=generator, device="cpu").to(device)
        alpha_bar = self.alphas_cumprod[timesteps][:, None]
        noisy = alpha_bar.sqrt() * target + (1 - alpha_bar).sqrt() * noise
        velocity = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * target
        return F.mse_loss(self.denoiser(noisy, timesteps, condition).float(), velocity)

    def sampling_timesteps(self, num_steps: int) -> list[int]:
        """Evenly spaced training timesteps, high to low (the respaced schedule)."""
        if num_steps < 1:
            raise ValueError(f"the residual head needs at least 1 sampling step, got {num_steps}")
        last = self.config.num_train_timesteps - 1
        return sorted({round(value) for value in torch.linspace(last, 0, num_steps).tolist()}, reverse=True)

    @torch.no_grad()
    def sample(
        self,
        condition_NC: torch.Tensor,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        unconditional_NC: torch.Tensor | None = None,
        guidance_scale: float = 0.0,
        distilled: bool = True,
        noise_NC: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Deterministic DDIM from Gaussian noise to residuals (N, latent_channels), in the
        tokenizer's units. With `unconditional_NC`, predictions are guided as
        (1 + g) cond - g uncond (HART's form; g = 0 is conditional only).

        With 1 step and a distilled one-step generator (and `distilled`), that generator makes
        the sample instead; it was distilled from the conditional head, so it takes no guidance.
        `noise_NC` replaces the starting noise (distillation pairs noise with the teacher's output).
        """
        num_steps = num_steps or self.config.num_sampling_steps
        count = condition_NC.shape[0]
        device = condition_NC.device
        sample = noise_NC if noise_NC is not None else \
            torch.randn((count, self.config.latent_channels), generator=generator, device="cpu").to(device)
        if num_steps == 1 and distilled and self.one_step is not None:
            return self.one_step_sample(self.one_step, sample, condition_NC) / self.config.target_scale
        timesteps = self.sampling_timesteps(num_steps)
        guided = unconditional_NC is not None and guidance_scale != 0.0
        # Guided: both branches in one denoiser call per step (rows are independent, so each
        # row's prediction is what a call of its own gives), half the calls.
        both_conditions = torch.cat([condition_NC, unconditional_NC]) if guided else condition_NC
        for index, step in enumerate(timesteps):
            step_tensor = torch.full((count,), step, device=device, dtype=torch.long)
            if guided:
                velocity, unguided = self.denoiser(sample.repeat(2, 1), step_tensor.repeat(2),
                                                   both_conditions).float().split(count)
                velocity = (1 + guidance_scale) * velocity - guidance_scale * unguided
            else:
                velocity = self.denoiser(sample, step_tensor, condition_NC).float()
            alpha_bar = self.alphas_cumprod[step]
            previous = self.alphas_cumprod[timesteps[index + 1]] if index + 1 < len(timesteps) else None
            predicted = self.x0_from_velocity(sample, velocity, step_tensor)
            noise = (1 - alpha_bar).sqrt() * sample + alpha_bar.sqrt() * velocity
            if previous is None:
                sample = predicted
            else:
                sample = previous.sqrt() * predicted + (1 - previous).sqrt() * noise
        return sample / self.config.target_scale
