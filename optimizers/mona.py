"""MONA, "Muon Optimizer with Nesterov Acceleration" (Li et al., Meituan, arXiv 2605.26842).

Muon with an acceleration term injected into the gradient before Muon's momentum:

    D_t = G_t - G_{t-1};  A_t = beta_a A_{t-1} + (1 - beta_a) D_t;  G̃_t = G_t + alpha A_t
    then Muon on G̃_t (momentum, Nesterov, orthogonalization, shape factor, decoupled decay).

UNVERIFIED RECONSTRUCTION. The paper's official algorithm box was not available to us and no
official code exists. This update is the reconstruction from third-party sources; in particular
the SIGN of alpha is unverified. Confirm it against the paper before reporting any MONA result.

- One buffer suffices: A_t = (1 - beta_a)(G_t - m_{t-1}), with m a plain EMA of gradients
  (m_0 = 0, coefficient beta_a); that is what is stored (tests check it equals the two-buffer form).
- alpha is signed. "auto" is the reconstructed default alpha = -1/(2(1 - beta_a)), which makes
  G̃_t = (G_t + m_{t-1}) / 2, a smoothing step. The positive mirror value +1/(2(1 - beta_a))
  gives the Adan-style extrapolation G̃_t = 1.5 G_t - 0.5 m_{t-1}; alpha = 0 is exactly Muon.
  Sweep both signs with --set alpha=NUMBER.
- beta_a: sources give 0.975 or 0.99 without agreeing on which goes with which model size. It
  sets the window of the (not bias-corrected) gradient EMA: 0.99 averages about 100 steps,
  sensible for runs of thousands of steps (the default); tiny-cpu runs 400 steps, where a
  100-step window would be a quarter of the run and stale, so it uses 0.975 (about 40 steps).
State: Muon's momentum plus the gradient EMA, 2x the parameters.
"""

import torch

from optimizers._matrix import MatrixOptimizer, build_family, family_defaults


def reconstructed_alpha(beta_a: float) -> float:
    """The reconstructed default alpha = -1/(2(1 - beta_a)) (sign unverified)."""
    return -1.0 / (2.0 * (1.0 - beta_a))


class Mona(MatrixOptimizer):
    """Muon on G_t + alpha (1 - beta_a)(G_t - m_{t-1}), m the EMA of gradients. alpha is a number
    or "auto" (the reconstructed -1/(2(1 - beta_a)))."""

    OPTIONS = {"beta_a": 0.99, "alpha": "auto"}

    def __init__(self, params, **hp):
        beta_a = hp.get("beta_a", self.OPTIONS["beta_a"])
        if not 0.0 <= beta_a < 1.0:
            raise ValueError(f"beta_a={beta_a} must lie in [0, 1)")
        alpha = hp.get("alpha", self.OPTIONS["alpha"])
        try:
            hp["alpha"] = reconstructed_alpha(beta_a) if alpha == "auto" else float(alpha)
        except ValueError:
            raise ValueError(f"alpha={alpha!r}: expected a number or 'auto' (= -1/(2(1-beta_a)))") from None
        super().__init__(params, **hp)

    def transform_grad(self, p, grad, state, group):
        if "grad_ema" not in state:
            state["grad_ema"] = torch.zeros_like(grad)
        ema, beta_a = state["grad_ema"], group["beta_a"]
        accelerated = grad + (group["alpha"] * (1 - beta_a)) * (grad - ema)
        ema.lerp_(grad, 1 - beta_a)
        return accelerated


DEFAULTS = family_defaults(Mona)


def build(params, hp, model):
    return build_family(Mona, params, hp)
