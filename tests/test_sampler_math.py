"""The shared sampler's update rules checked against values computed by hand.

A stand-in UNet ε_θ(z, t, c) = λ·z makes every DDIM step linear, so the whole trajectory —
the plain step, a guidance score entering the direction term, DMT's restart re-noising — is
recomputed here from the paper formulas and Zeroscope's schedule re-derived from its config
(scaled-linear betas), not from the scheduler the sampler uses.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from motionmatcher.customization.guidance import Guidance
from motionmatcher.backbones.models import ZEROSCOPE_SCHEDULER
from motionmatcher.customization.sampler import SamplingConfig, sample_latents

SHAPE = (2, 4, 3, 4, 4)
T = ZEROSCOPE_SCHEDULER["num_train_timesteps"]


def betas() -> torch.Tensor:
    """Zeroscope's scaled-linear betas: linspace(√β_start, √β_end, T)², float64."""
    s = ZEROSCOPE_SCHEDULER
    return torch.linspace(s["beta_start"] ** 0.5, s["beta_end"] ** 0.5, T, dtype=torch.float64) ** 2


def alpha_bar(t: int) -> float:
    """ᾱ_t = Π_{j≤t}(1 − β_j); t < 0: ᾱ_0 (``set_alpha_to_one: false``, steps past the end)."""
    return float(torch.prod(1 - betas()[: max(t, 0) + 1]))


def timesteps(n: int) -> list[int]:
    """DDIM's "leading" spacing with ``steps_offset`` 1: t_k = k·T/N + 1, noisiest first."""
    d = T // n
    return [k * d + ZEROSCOPE_SCHEDULER["steps_offset"] for k in reversed(range(n))]


class LinearEps(torch.nn.Module):
    """ε_θ(z, t, c) = λ·z, with the call signature of a diffusers UNet."""

    def __init__(self, lam: float):
        super().__init__()
        self.lam = torch.nn.Parameter(torch.tensor(float(lam)))

    def forward(self, z, t, encoder_hidden_states=None):
        return SimpleNamespace(sample=self.lam * z)


class FixedScore(Guidance):
    """A guidance whose score is a fixed tensor at the given steps (None elsewhere)."""

    name = "fixed"

    def __init__(self, score: torch.Tensor, steps, restart: bool = False):
        super().__init__()
        self.s, self.steps, self.restart_sampling = score, set(steps), restart

    def score(self, unet, z, step, t, ctx):
        return self.s if step in self.steps else None


def ddim(z: torch.Tensor, eps: torch.Tensor, t: int, prev: int) -> torch.Tensor:
    """z_{k−1} = √ᾱ_{k−1}·x̂0 + √(1 − ᾱ_{k−1})·ε̂, x̂0 = (z_k − √(1 − ᾱ_k)·ε̂)/√ᾱ_k (η = 0)."""
    a, ap = alpha_bar(t), alpha_bar(prev)
    x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
    return math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps


def run(lam, z0, n, guidance=None, generator=None):
    emb = torch.zeros(z0.shape[0], 77, 8)
    cfg = SamplingConfig(num_steps=n, guidance_scale=1.0, noise_prior=0.0)
    return sample_latents(LinearEps(lam), ZEROSCOPE_SCHEDULER, emb, None, z0, cfg,
                          has_adapter=False, generator=generator, guidance=guidance)


@pytest.fixture()
def z0():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


def test_plain_ddim_matches_the_hand_computed_trajectory(z0):
    lam, n = 0.3, 4
    z = z0.double()
    for t in timesteps(n):
        z = ddim(z, lam * z, t, t - T // n)
    torch.testing.assert_close(run(lam, z0, n), z.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("guided_step", [0, 2])
def test_guidance_score_enters_the_direction_term_with_a_minus_sign(z0, guided_step):
    """x̂0 from ε̂, the direction term from ε̃ = ε̂ − √(1 − ᾱ_k)·s (MotionClone's
    ``customized_step``): z_{k−1} = √ᾱ_{k−1}·x̂0(ε̂) + √(1 − ᾱ_{k−1})·ε̃. The sign mutant pushes
    away from the reference."""
    lam, n = 0.3, 4
    s = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)) * 5.0
    z = z0.double()
    for k, t in enumerate(timesteps(n)):
        prev = t - T // n
        a, ap = alpha_bar(t), alpha_bar(prev)
        eps = lam * z
        x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        if k == guided_step:
            eps = eps - math.sqrt(1 - a) * s.double()
        z = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps
    got = run(lam, z0, n, FixedScore(s, [guided_step]))
    torch.testing.assert_close(got, z.float(), rtol=1e-5, atol=1e-5)
    # the correction is not negligible next to the plain result (the test can see a sign flip)
    assert (got - run(lam, z0, n)).abs().max() > 0.05


def test_restart_renoises_with_the_betas_from_the_next_timestep_up(z0):
    """DMT's ``undo_step``: after step k (to t_{k+1}), z ← Π_i[√(1−β_i)·z + √β_i·ε_i] over
    i = t_{k+1}, …, t_{k+1} + Δ − 1, which is √a·z + √(1−a)·ε, a = Π_i(1 − β_i); then the step at
    t_k is taken again. The noise comes from each row's own generator."""
    lam, n = 0.2, 3
    ts = timesteps(n)
    seeds = [11, 12]
    got = run(lam, z0, n, FixedScore(torch.zeros(SHAPE), [], restart=True),
              generator=[torch.Generator().manual_seed(s) for s in seeds])

    gens = [torch.Generator().manual_seed(s) for s in seeds]
    b = betas()
    z = z0.double()
    d = T // n
    for k, t in enumerate(ts):
        z = ddim(z, lam * z, t, t - d)
        if k < n - 1:
            nxt = ts[k + 1]
            a = float(torch.prod(1 - b[nxt: nxt + d]))
            noise = torch.cat([torch.randn((1, *SHAPE[1:]), generator=g) for g in gens]).double()
            z = math.sqrt(a) * z + math.sqrt(1 - a) * noise
            z = ddim(z, lam * z, t, t - d)
    torch.testing.assert_close(got, z.float(), rtol=1e-5, atol=1e-5)
