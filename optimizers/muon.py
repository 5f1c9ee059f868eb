"""Muon: MomentUm Orthogonalized by Newton-schulz (Keller Jordan, 2024, kellerjordan.github.io/posts/muon).

Hidden matrices take the orthogonalized Nesterov momentum (NS5, or Polar Express with
`--set orthogonalizer=polar_express`); embeddings, head and 1-D parameters take AdamW.
"""

from optimizers._matrix import MUON_DEFAULTS, MatrixOptimizer, build_matrix_with_aux, muon_kwargs

DEFAULTS = dict(MUON_DEFAULTS)
TRACK_DEFAULTS: dict = {"tiny-cpu": {}}


def build(params, hp, model):
    matrix = MatrixOptimizer(params["matrix"], **muon_kwargs(hp)) if params["matrix"] else None
    return build_matrix_with_aux(matrix, params, hp)
