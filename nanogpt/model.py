"""A GPT in the modded-nanogpt style, every architectural choice a field of `ModelConfig`.

The defaults are the harness's modern architecture: RoPE, QK-norm, RMSNorm without weights (also
on the embedding), ReLU² MLP, untied embedding and head, zero-initialised output projections,
logit soft-cap. A track that names a record sets the record's choices (nanogpt/tracks.py); the
model never asks which track it is.

Every parameter carries a role (matrix / embed / head / scalar) so that optimizers can route
them; the architecture is fixed by the track, never by the optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt.tracks import ModelConfig

ROLES = ("matrix", "embed", "head", "scalar")


def _uniform(w: torch.Tensor, bound: float) -> None:
    nn.init.uniform_(w, -bound, bound)


# Initialisations by name (ModelConfig.init_*); fan_in is a weight's second dimension (the input
# width of a linear map, the width of an embedding/head table). "zero" draws no random numbers.
INITS = {
    "zero": nn.init.zeros_,
    "normal(std=1)": lambda w: nn.init.normal_(w, std=1.0),  # nn.Embedding's default
    "normal(std=0.02)": lambda w: nn.init.normal_(w, std=0.02),  # GPT-2's
    "uniform(std=1/sqrt(fan_in))": lambda w: _uniform(w, math.sqrt(3.0) / math.sqrt(w.size(1))),
    # nn.Linear's default, kaiming_uniform_(a=sqrt(5)): U(±1/sqrt(fan_in))
    "uniform(std=1/sqrt(3*fan_in))": lambda w: _uniform(w, 1.0 / math.sqrt(w.size(1))),
}
CHOICES = {"mlp": ("relu2", "gelu", "gelu_tanh"), "logit_cap_dtype": ("float32", "logits"),
           "rope_table_dtype": ("input", "float32", "bfloat16"), "eval_dtype": ("autocast", "float32"),
           **{f"init_{kind}": tuple(INITS) for kind in ("embed", "qkv", "attn_proj", "fc", "mlp_proj", "head")}}


def check_config(cfg: ModelConfig) -> None:
    for key, valid in CHOICES.items():
        if getattr(cfg, key) not in valid:
            raise ValueError(f"ModelConfig.{key}={getattr(cfg, key)!r}; valid: {', '.join(valid)}")
    if cfg.n_embd % cfg.n_head or (cfg.n_embd // cfg.n_head) % 2:
        raise ValueError(f"n_embd {cfg.n_embd} must split into {cfg.n_head} heads of even size")


def rms_norm(x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """x·rsqrt(mean(x²) + eps) over the last dimension, no weight; eps None: the dtype's machine epsilon."""
    return F.rms_norm(x, (x.size(-1),), eps=eps)


class Rotary(nn.Module):
    """RoPE on (B, H, T, D) in the rotate-half sense: (x1, x2) -> (x1·cos − x2·sin, x1·sin + x2·cos)."""

    TABLE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

    def __init__(self, head_dim: int, base: float, table_dtype: str = "input"):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)
        self.table_dtype = table_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.size(-2), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)
        dtype = x.dtype if self.table_dtype == "input" else self.TABLE_DTYPES[self.table_dtype]
        cos, sin = freqs.cos().to(dtype), freqs.sin().to(dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, d = cfg.n_head, cfg.n_embd
        self.qk_norm, self.norm_eps = cfg.qk_norm, cfg.norm_eps
        # Separate q, k, v so matrix optimizers see square matrices; they read one input.
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, d, bias=False)
        self.c_v = nn.Linear(d, d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.rotary = Rotary(d // cfg.n_head, cfg.rope_base, cfg.rope_table_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (lin(x).view(B, T, self.n_head, -1).transpose(1, 2) for lin in (self.c_q, self.c_k, self.c_v))
        if self.qk_norm:
            q, k = rms_norm(q, self.norm_eps), rms_norm(k, self.norm_eps)
        q, k = self.rotary(q), self.rotary(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=False)
        self.act = cfg.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.act == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh" if self.act == "gelu_tanh" else "none")
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.norm_eps = cfg.norm_eps
        self.attn_scale = 1 / math.sqrt(2 * cfg.n_layer) if cfg.attn_out_depth_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(rms_norm(x, self.norm_eps))
        x = x + (a if self.attn_scale is None else self.attn_scale * a)
        return x + self.mlp(rms_norm(x, self.norm_eps))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        check_config(cfg)
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise from the current torch RNG state (seeded by the harness), in the records' draw
        order: the embedding, then per block q, k, v, attention projection, c_fc, MLP projection,
        then the head. A tied embedding/head is one tensor, initialised by init_embed."""
        cfg = self.cfg
        INITS[cfg.init_embed](self.wte.weight)
        for block in self.blocks:
            a, m = block.attn, block.mlp
            for lin, init in ((a.c_q, cfg.init_qkv), (a.c_k, cfg.init_qkv), (a.c_v, cfg.init_qkv),
                              (a.c_proj, cfg.init_attn_proj), (m.c_fc, cfg.init_fc), (m.c_proj, cfg.init_mlp_proj)):
                INITS[init](lin.weight)
        if self.lm_head is not None:
            INITS[cfg.init_head](self.lm_head.weight)

    def param_roles(self) -> dict[str, str]:
        """Role of every trainable parameter, by name."""
        roles = {}
        for name, p in self.named_parameters():
            if name.startswith("wte."):
                roles[name] = "embed"
            elif name.startswith("lm_head."):
                roles[name] = "head"
            elif p.ndim >= 2:
                roles[name] = "matrix"
            else:
                roles[name] = "scalar"
        return roles

    def matrix_inputs(self) -> dict[str, tuple[nn.Module, int]]:
        """For each hidden matrix: the module whose input it reads, and how many equal blocks that
        input splits into (the 4x-wide MLP down-projection reads 4 blocks of width d). Matrices
        that read the same module share one input statistic (q, k, v). Used by Newton-Muon."""
        out = {}
        for i, block in enumerate(self.blocks):
            a, m = block.attn, block.mlp
            for name in ("c_q", "c_k", "c_v"):
                out[f"blocks.{i}.attn.{name}.weight"] = (a.c_q, 1)
            out[f"blocks.{i}.attn.c_proj.weight"] = (a.c_proj, 1)
            out[f"blocks.{i}.mlp.c_fc.weight"] = (m.c_fc, 1)
            out[f"blocks.{i}.mlp.c_proj.weight"] = (m.c_proj, self.cfg.mlp_ratio)
        return out

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.cfg.eval_dtype == "float32" and not torch.is_grad_enabled():
            # Evaluation (the harness evaluates under torch.no_grad) in float32 even inside autocast.
            with torch.autocast(idx.device.type, enabled=False):
                return self._loss(idx, targets, reduction)
        return self._loss(idx, targets, reduction)

    def _loss(self, idx: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        cfg = self.cfg
        x = self.wte(idx)
        if cfg.embed_norm:
            x = rms_norm(x, cfg.norm_eps)
        for block in self.blocks:
            x = block(x)
        x = rms_norm(x, cfg.norm_eps)
        logits = self.lm_head(x) if self.lm_head is not None else F.linear(x, self.wte.weight)
        if cfg.logit_cap > 0 and cfg.logit_cap_dtype == "logits":
            logits = cfg.logit_cap * torch.tanh(logits / cfg.logit_cap)
        logits = logits.float()
        if cfg.logit_cap > 0 and cfg.logit_cap_dtype == "float32":
            logits = cfg.logit_cap * torch.tanh(logits / cfg.logit_cap)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward): 6N for the weights plus attention."""
        n_matmul = sum(p.numel() for n, p in self.named_parameters() if not n.startswith("wte.") or self.lm_head is None)
        attn = 12 * self.cfg.n_layer * self.cfg.n_embd * seq_len // 2  # causal: half the score matrix
        return 6 * n_matmul + attn
