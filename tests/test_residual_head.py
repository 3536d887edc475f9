"""The residual diffusion head: zero-initialised, learns a conditional residual, samples deterministically."""

from __future__ import annotations

import pytest
import torch

from vlm.residual_head import ResidualDiffusionHead, ResidualHeadConfig


def tiny_head(**overrides) -> ResidualDiffusionHead:
    torch.manual_seed(0)
    values = dict(latent_channels=4, condition_channels=6, width=64, depth=2, batch_multiplier=4)
    values.update(overrides)
    return ResidualDiffusionHead(ResidualHeadConfig(**values))


def test_a_fresh_head_predicts_zero():
    head = tiny_head()
    prediction = head.denoiser(torch.randn(5, 4), torch.tensor([0, 10, 100, 500, 999]), torch.randn(5, 6))
    assert torch.equal(prediction, torch.zeros(5, 4))


def test_respaced_schedule_runs_from_pure_noise_to_clean():
    head = tiny_head()
    steps = head.sampling_timesteps(8)
    assert len(steps) == 8 and steps[0] == 999 and steps[-1] == 0 and steps == sorted(steps, reverse=True)
    assert head.sampling_timesteps(1) == [999]
    with pytest.raises(ValueError, match="at least 1 sampling step"):
        head.sampling_timesteps(0)


def test_the_head_learns_a_residual_per_condition_and_samples_it_in_8_steps():
    head = tiny_head()
    conditions = torch.eye(6)[:2]
    targets = torch.tensor([[1.0, -0.5, 0.25, 0.0], [-1.0, 0.5, 0.0, 0.75]])
    optimizer = torch.optim.Adam(head.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(400):
        loss = head.loss(targets.repeat(8, 1), conditions.repeat(8, 1), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.2 * sum(losses[:20]) / 20
    samples = head.sample(conditions.repeat(16, 1), num_steps=8, generator=torch.Generator().manual_seed(1))
    error = (samples - targets.repeat(16, 1)).abs().mean()
    assert error < 0.15


def test_sampling_is_deterministic_given_the_generator():
    head = tiny_head()
    for parameter in head.parameters():  # non-zero outputs, so the samples depend on the network
        torch.nn.init.normal_(parameter, std=0.1)
    condition = torch.randn(3, 6)
    first = head.sample(condition, generator=torch.Generator().manual_seed(7))
    again = head.sample(condition, generator=torch.Generator().manual_seed(7))
    other = head.sample(condition, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_guidance_scale_zero_is_the_conditional_sample():
    head = tiny_head()
    for parameter in head.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    condition, unconditional = torch.randn(3, 6), torch.zeros(3, 6)
    plain = head.sample(condition, generator=torch.Generator().manual_seed(3))
    guided_zero = head.sample(condition, generator=torch.Generator().manual_seed(3), unconditional_NC=unconditional,
                              guidance_scale=0.0)
    guided = head.sample(condition, generator=torch.Generator().manual_seed(3), unconditional_NC=unconditional,
                         guidance_scale=2.0)
    assert torch.equal(plain, guided_zero)
    assert not torch.allclose(plain, guided)


def test_guided_branches_run_in_one_call_and_keep_their_roles():
    """Guidance runs both branches in one denoiser call per step. With guidance -1 the
    prediction is the unconditional branch's alone ((1 - 1) cond + 1 uncond, exact in floating
    point), so the sample must be the plain sample of the unconditional input: the split
    keeps each branch's rows. Equal up to float rounding, not bit for bit: a matmul over 6 rows
    may take another kernel than over 3 (it did in CI: the same numbers to 4 decimals, not
    torch.equal); swapped or mixed rows would differ by the whole conditioning."""
    head = tiny_head()
    for parameter in head.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    condition, unconditional = torch.randn(3, 6), torch.randn(3, 6)
    calls = []
    original = head.denoiser.forward
    head.denoiser.forward = lambda *args: calls.append(args[0].shape[0]) or original(*args)
    guided = head.sample(condition, 4, torch.Generator().manual_seed(3), unconditional, guidance_scale=-1.0)
    assert calls == [6] * 4  # one call per step, both branches' rows
    alone = head.sample(unconditional, 4, torch.Generator().manual_seed(3))
    torch.testing.assert_close(guided, alone, rtol=1e-5, atol=1e-6)
    plain = head.sample(condition, 4, torch.Generator().manual_seed(3))
    assert not torch.allclose(guided, plain, rtol=1e-3, atol=1e-3)  # the conditional rows did not leak in


def test_the_energy_score_rewards_the_true_distribution_not_only_its_mean():
    from benchmarks.residual_head import energy_score

    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(4000, 8, generator=generator)
    exact = energy_score(truth, truth, truth)
    assert float(exact.abs().max()) == 0  # two samples equal to the truth score 0
    calibrated = energy_score(torch.randn(4000, 8, generator=generator), torch.randn(4000, 8, generator=generator),
                              truth).mean()
    mean_only = energy_score(torch.zeros(4000, 8), torch.zeros(4000, 8), truth).mean()
    too_wide = energy_score(3 * torch.randn(4000, 8, generator=generator),
                            3 * torch.randn(4000, 8, generator=generator), truth).mean()
    assert calibrated < mean_only and calibrated < too_wide
