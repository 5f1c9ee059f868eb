"""Newton-Schulz orthogonalization shared by the Muon family (one place, reused everywhere).

Each iteration maps X to aX + (bA + cA²)X with A = XXᵀ, on the wide orientation (tall inputs are
transposed). Leading dimensions are batch dimensions, so matrices of one shape are
orthogonalized in one call.
"""

from __future__ import annotations

import torch

# Keller Jordan's quintic: maximal slope at zero, singular values land in about [0.7, 1.1].
NS5 = ((3.4445, -4.7750, 2.0315),)
# Convergent quintic (p(1)=1, p'(1)=0) used by the track-3 baselines with 12 steps.
NS_CONVERGENT = ((2.0, -1.5, 0.5),)
# Polar Express (Amsel et al. 2025), tuned for a 2 % safety factor; normalization by 1.02·‖X‖_F.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
METHODS = {"ns5": (NS5, 1.0), "ns_convergent": (NS_CONVERGENT, 1.0), "polar_express": (POLAR_EXPRESS, 1.02)}


def orthogonalize(
    G: torch.Tensor, steps: int = 5, method: str = "ns5", dtype: torch.dtype = torch.bfloat16, eps: float = 1e-7
) -> torch.Tensor:
    """Approximate the polar factor UVᵀ of G (..., m, n); returns a tensor of `dtype`.

    The norm is that of the cast matrix (Keller's convention). Polar Express uses its per-step
    coefficients and repeats the last tuple past five steps.
    """
    if method not in METHODS:
        raise ValueError(f"unknown orthogonalizer {method!r}; valid: {', '.join(METHODS)}")
    coeffs, safety = METHODS[method]
    X = G.to(dtype)
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * safety + eps)
    for i in range(steps):
        a, b, c = coeffs[min(i, len(coeffs) - 1)]
        A = X @ X.mT
        B = b * A + (c * A) @ A
        X = a * X + B @ X
    return X.mT if tall else X


def polar_factor(G: torch.Tensor) -> torch.Tensor:
    """The exact polar factor UVᵀ by SVD in float64 (for diagnostics and tests)."""
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return U @ Vh
