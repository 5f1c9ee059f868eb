"""MONA (reconstructed; no reference fixture exists): alpha = 0 is exactly Muon, the stored
one-buffer form equals the two-buffer definition, and both signs of alpha do what the
reconstruction says (the default averages G_t with the gradient EMA, the mirror extrapolates)."""

import pytest
import torch

import optimizers.mona as mona
from nanogpt.errors import UserError
from nanogpt.optim import build_optimizers, load_optimizer, tuned_table
from optimizers._matrix import MATRIX_DEFAULTS, MatrixOptimizer
from optimizers.mona import Mona, reconstructed_alpha

SHAPES = [(16, 16), (8, 32), (48, 12), (8, 32)]
HP = {**mona.DEFAULTS, "ortho_dtype": "float32", "weight_decay": 0.01}
MUON_HP = {k: HP[k] for k in MATRIX_DEFAULTS}


def grads(steps: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(s, generator=g) * (1 + t) ** -0.5 for s in SHAPES] for t in range(steps)]


def run(make, steps: int = 8) -> list[list[torch.Tensor]]:
    """Parameters after every step of the optimizer made by make(params)."""
    g = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(s, generator=g) / s[1] ** 0.5) for s in SHAPES]
    opt = make(params)
    history = []
    for step_grads in grads(steps):
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


class TwoBufferMona(MatrixOptimizer):
    """The definition as written: D_t = G_t - G_{t-1}; A_t = beta_a A_{t-1} + (1 - beta_a) D_t."""

    OPTIONS = {"alpha": 0.0, "beta_a": 0.99}

    def transform_grad(self, p, grad, state, group):
        previous = state.get("previous_grad", torch.zeros_like(grad))
        accel = state.get("accel", torch.zeros_like(grad))
        state["accel"] = group["beta_a"] * accel + (1 - group["beta_a"]) * (grad - previous)
        state["previous_grad"] = grad.clone()
        return grad + group["alpha"] * state["accel"]


def test_alpha_zero_is_exactly_muon():
    ours = run(lambda ps: Mona(ps, alpha=0.0, beta_a=0.99, **MUON_HP))
    muon = run(lambda ps: MatrixOptimizer(ps, **MUON_HP))
    for a, b in zip(ours, muon):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("beta_a", [0.99, 0.975])
@pytest.mark.parametrize("sign", [-1, 1])
def test_one_buffer_form_equals_two_buffer_definition(beta_a, sign):
    alpha = -sign * reconstructed_alpha(beta_a)  # sign -1: the reconstructed default, +1: its mirror
    ours = run(lambda ps: Mona(ps, alpha=alpha, beta_a=beta_a, **MUON_HP), steps=12)
    two = run(lambda ps: TwoBufferMona(ps, alpha=alpha, beta_a=beta_a, **MUON_HP), steps=12)
    muon = run(lambda ps: MatrixOptimizer(ps, **MUON_HP), steps=12)
    for a, b in zip(ours, two):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=2e-6, rtol=0)
    assert (ours[-1][0] - muon[-1][0]).abs().max() > 1e-3  # and it is not Muon


@pytest.mark.parametrize("alpha, expected", [("auto", lambda g, m: 0.5 * (g + m)), ("mirror", lambda g, m: 1.5 * g - 0.5 * m)])
def test_default_smooths_and_mirror_extrapolates(alpha, expected):
    """alpha = -1/(2(1-beta_a)) gives (G_t + m_{t-1})/2; the positive mirror 1.5 G_t - 0.5 m_{t-1}."""
    beta_a = 0.975
    hp = {**HP, "beta_a": beta_a, "alpha": "auto" if alpha == "auto" else str(-reconstructed_alpha(beta_a))}
    p = torch.nn.Parameter(torch.zeros(4, 6))
    (opt,) = mona.build({"matrix": [p], "embed": [], "head": [], "scalar": []}, hp, None)
    seen = []
    original = opt.transform_grad
    opt.transform_grad = lambda *a: seen.append(original(*a)) or seen[-1]
    ema = torch.zeros(4, 6)
    for g in grads(5):
        p.grad = g[0][:4, :6].clone()
        opt.step()
        torch.testing.assert_close(seen[-1], expected(p.grad, ema))
        ema = beta_a * ema + (1 - beta_a) * p.grad


def test_defaults_follow_the_reconstruction():
    assert mona.DEFAULTS["alpha"] == "auto" and mona.DEFAULTS["beta_a"] == 0.99
    assert tuned_table()["mona"]["tiny-cpu"]["beta_a"] == 0.975
    assert reconstructed_alpha(0.99) == pytest.approx(-50.0)
    assert "unverified" in mona.__doc__.lower() and "2605.26842" in mona.__doc__


@pytest.mark.parametrize("change, message", [({"alpha": "fast"}, "expected a number or 'auto'"), ({"beta_a": 1.0}, "must lie in")])
def test_bad_hyperparameters_are_user_errors(change, message):
    model = torch.nn.Linear(6, 4, bias=False)
    model.param_roles = lambda: {"weight": "matrix"}
    with pytest.raises(UserError, match=message):
        build_optimizers(load_optimizer("mona"), model, {**HP, **change})
