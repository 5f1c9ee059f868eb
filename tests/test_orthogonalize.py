"""optimizers._orthogonalize against the golden orthogonalization fixtures (tests/fixtures/optimizers):
Keller's NS5, the track-3 convergent 12-step iteration, Polar Express (main track and dion, both
epsilons) and the Newton-Muon repository's NS5. float32 files must match tightly, bf16 files
in direction (bf16 rounding differs between implementations, see the fixture README §4)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from optimizers._orthogonalize import orthogonalize, polar_factor

FIXTURES = Path(__file__).parent / "fixtures" / "optimizers"
# fixture -> (method, steps, normalization epsilon, output array suffix)
ROUTINES = {
    "ortho_ns5_keller_muon": ("ns5", 5, 1e-7, "output"),
    "ortho_ns12_convergent_track3": ("ns_convergent", 12, 1e-7, "output"),
    "ortho_polar_express_mainline": ("polar_express", 5, 1e-6, "output"),
    "ortho_polar_express_dion": ("polar_express", 5, 1e-6, "output"),
    "ortho_polar_express_dion_eps1e-8": ("polar_express", 5, 1e-8, "output_eps1e-8"),
    "ortho_ns5_newton_muon_repo": ("ns5", 5, 1e-7, "output"),
}
DEGENERATE = ("rank3_16x16", "illcond_16x32")  # near-zero singular values: looser in fp32, noise in bf16
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cases(name: str, variant: str):
    """(case, input, reference output) for one routine and variant."""
    method, steps, eps, suffix = ROUTINES[name]
    z = np.load(FIXTURES / f"{name.removesuffix('_eps1e-8')}__{variant}.npz")
    names = sorted({k.split("__")[0] for k in z.files if k.endswith("__input")})
    return [(c, torch.from_numpy(z[f"{c}__input"]), torch.from_numpy(z[f"{c}__{suffix}"])) for c in names]


def run(name: str, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    method, steps, eps, _ = ROUTINES[name]
    return orthogonalize(x, steps, method, dtype, eps).float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.flatten() @ b.flatten() / (a.norm() * b.norm())).item()


@pytest.mark.parametrize("name", ROUTINES)
def test_float32_matches_reference(name):
    for case, x, ref in cases(name, "fp32"):
        atol = 1e-4 if case in DEGENERATE else 2e-5
        torch.testing.assert_close(run(name, x, torch.float32), ref, atol=atol, rtol=0, msg=f"{name} {case}")


@pytest.mark.parametrize("name", ROUTINES)
def test_bfloat16_matches_reference_in_direction(name):
    for case, x, ref in cases(name, "bf16"):
        if case in DEGENERATE:
            continue
        out = orthogonalize(x, ROUTINES[name][1], ROUTINES[name][0], torch.bfloat16, ROUTINES[name][2])
        assert out.dtype == torch.bfloat16
        for got, want in zip(out.float().reshape(-1, *x.shape[-2:]), ref.reshape(-1, *x.shape[-2:])):
            assert cosine(got, want) >= 0.99, f"{name} {case}"


# Keller Jordan's quintic, as published (KellerJordan/Muon, muon.py, zeropower_via_newtonschulz5):
# X <- a X + (b A + c A^2) X with A = X X^T, after X <- X / (||X||_F + eps).
KELLER_ABC = (3.4445, -4.7750, 2.0315)


def test_ns5_maps_each_singular_value_through_the_published_quintic():
    """X <- aX + bXX^TX + c(XX^T)^2X acts on each singular value as s <- as + bs^3 + cs^5 (same
    singular vectors), so the output's singular values are that scalar polynomial, iterated 5
    times in float64, of the input's divided by its Frobenius norm: an analytic reference, not
    a range measured from this implementation. It does not converge: they stay spread around 1."""
    a, b, c = KELLER_ABC
    for case, x, _ in cases("ortho_ns5_keller_muon", "fp32"):
        xs = x.double().reshape(-1, *x.shape[-2:])
        got = torch.linalg.svdvals(run("ortho_ns5_keller_muon", x, torch.float32).double().reshape(xs.shape))
        s = torch.linalg.svdvals(xs) / (xs.norm(dim=(-2, -1), keepdim=True)[..., 0] + 1e-7)
        for _ in range(5):
            s = a * s + b * s**3 + c * s**5
        torch.testing.assert_close(got.sort(dim=-1).values, s.sort(dim=-1).values, atol=2e-4, rtol=0, msg=case)
        if case not in DEGENERATE and case != "tiny_norm_16x16":
            assert (s.max() - s.min()) > 0.05, case  # the quintic trades convergence for slope at zero


def test_convergent_iteration_reaches_the_exact_polar_factor():
    exact = np.load(FIXTURES / "ortho_inputs.npz")
    for case, x, _ in cases("ortho_ns12_convergent_track3", "fp32"):
        if case == "illcond_16x32":  # singular values down to 1e-4 need more than 12 steps
            continue
        got = run("ortho_ns12_convergent_track3", x, torch.float32).double()
        torch.testing.assert_close(got, torch.from_numpy(exact[f"{case}__exact_polar_fp64"]), atol=1e-4, rtol=0, msg=case)


def test_polar_factor_is_the_exact_svd_polar_factor():
    exact = np.load(FIXTURES / "ortho_inputs.npz")
    for case in ("square_16x16", "wide_8x32", "tall_48x12", "batched_tall_4x24x16"):
        x = torch.from_numpy(exact[f"{case}__input"])
        torch.testing.assert_close(polar_factor(x), torch.from_numpy(exact[f"{case}__exact_polar_fp64"]), atol=1e-9, rtol=0)


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown orthogonalizer 'ns7'; valid: ns5, ns_convergent, polar_express"):
        orthogonalize(torch.eye(3), method="ns7")
