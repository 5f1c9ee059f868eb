"""Muon: MomentUm Orthogonalized by Newton-schulz (Keller Jordan, 2024, kellerjordan.github.io/posts/muon).

Hidden matrices take the orthogonalized Nesterov momentum (NS5, or Polar Express with
`--set orthogonalizer=polar_express`); embeddings, head and 1-D parameters take AdamW.
"""

from optimizers._matrix import MatrixOptimizer, build_family, family_defaults

DEFAULTS = family_defaults(MatrixOptimizer)
# The GPT-2 speedrun track: the 11/03/24 modded-nanogpt record (the script embedded in
# records/track_1_short/2024-11-03_UntieEmbed/d6b50d71-...txt, L402-405; tests/fixtures/records/README.md
# §7.3): Muon(lr=0.02, momentum=0.95), Nesterov in the "sum" form (buf = mu buf + g; g + mu buf, L103-105),
# 5 NS5 steps with eps 1e-7 (L38-45), update scaled by max(1, rows/cols)^0.5 ("keller", L107), no decay;
# Adam(betas=(0.9, 0.95)) with default eps 1e-8 and no decay on the embedding (lr 0.3) and the head
# (lr 0.002), which is AdamW with weight_decay 0.
_GPT2_SMALL = {"lr": 0.02, "momentum": 0.95, "nesterov": True, "momentum_form": "sum", "ns_steps": 5, "norm_eps": 1e-7,
               "shape_scale": "keller", "weight_decay": 0.0, "embed_lr": 0.3, "head_lr": 0.002,
               "adam_beta1": 0.9, "adam_beta2": 0.95, "adam_eps": 1e-8, "adam_weight_decay": 0.0}
TRACK_DEFAULTS: dict = {
    "tiny-cpu": {"lr": 0.02},  # tuned 2026-12-02: lr 0.02 of {0.02, 0.04} (and of {0.01, 0.02, 0.04} on 2026-12-01)
    "gpt2-small": _GPT2_SMALL,
    # The 01/18/25 GPT-2 medium record: Muon lr 0.025 with momentum warmup 0.85 -> 0.95 over 300 steps;
    # Adam betas (0.8, 0.95), eps 1e-10, head lr 0.003, embedding lr 0.3, scalars 0.015.
    "gpt2-medium": {"lr": 0.025, "momentum": 0.95, "momentum_warmup_steps": 300, "momentum_start": 0.85,
                    "embed_lr": 0.3, "head_lr": 0.003, "scalar_lr": 0.015, "adam_beta1": 0.8, "adam_beta2": 0.95,
                    "adam_eps": 1e-10},
    # The 10/10/24 record (records/track_1_short/2024-10-10_Muon/train_gpt2.py L388-391; fixtures README
    # §6.3): Muon(lr=0.1 * 0.0036, momentum=0.95), Nesterov in the "sum" form (buf = mu buf + g;
    # g + mu buf, L93-95), 5 NS5 steps with eps 1e-7 (L25-47), update scaled by max(m, n)^0.5 ("rms",
    # L99-101; the fused c_attn's three blocks get sqrt(cols), as our separate q, k, v do), no decay;
    # the tied embedding/head on AdamW(lr=0.0036, betas=(0.9, 0.95), weight_decay=0), default eps.
    "gpt2-muon-2024": {"lr": 0.00036, "momentum": 0.95, "nesterov": True, "momentum_form": "sum", "ns_steps": 5,
                       "shape_scale": "rms", "norm_eps": 1e-7, "weight_decay": 0.0, "embed_lr": 0.0036, "adam_beta1": 0.9,
                       "adam_beta2": 0.95, "adam_eps": 1e-8, "adam_weight_decay": 0.0},
    # Provisional, like the track: the speedrun values until tuned on one H100.
    "gpt2-1gpu": dict(_GPT2_SMALL),
}


def build(params, hp, model):
    return build_family(MatrixOptimizer, params, hp)
