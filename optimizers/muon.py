"""Muon: MomentUm Orthogonalized by Newton-schulz (Keller Jordan, 2024, kellerjordan.github.io/posts/muon).

Hidden matrices take the orthogonalized Nesterov momentum (NS5, or Polar Express with
`--set orthogonalizer=polar_express`); embeddings, head and 1-D parameters take AdamW.
"""

from optimizers._matrix import MatrixOptimizer, build_family, family_defaults

DEFAULTS = family_defaults(MatrixOptimizer)


def build(params, hp, model):
    return build_family(MatrixOptimizer, params, hp)
