"""A GPT in the modded-nanogpt style: RoPE, QK-norm, RMSNorm without weights, ReLU² MLP,
untied embedding and head, zero-initialised output projections, logit soft-cap.

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


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    def __init__(self, head_dim: int, base: float):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, T, D)."""
        t = torch.arange(x.size(-2), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)
        cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, d = cfg.n_head, cfg.n_embd
        # Separate q, k, v so matrix optimizers see square matrices; they read one input.
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, d, bias=False)
        self.c_v = nn.Linear(d, d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.rotary = Rotary(d // cfg.n_head, cfg.rope_base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (lin(x).view(B, T, self.n_head, -1).transpose(1, 2) for lin in (self.c_q, self.c_k, self.c_v))
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))
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
        h = F.relu(h).square() if self.act == "relu2" else F.gelu(h, approximate="tanh")
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(rms_norm(x))
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise from the current torch RNG state (seeded by the harness)."""
        nn.init.normal_(self.wte.weight, std=1.0 if self.lm_head is not None else 0.02)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                bound = math.sqrt(3.0) / math.sqrt(lin.in_features)  # uniform with std 1/sqrt(fan_in)
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
        if self.lm_head is not None:
            nn.init.zeros_(self.lm_head.weight)

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
        x = rms_norm(self.wte(idx))
        for block in self.blocks:
            x = block(x)
        x = rms_norm(x)
        logits = self.lm_head(x) if self.lm_head is not None else F.linear(x, self.wte.weight)
        logits = logits.float()
        if self.cfg.logit_cap > 0:
            logits = self.cfg.logit_cap * torch.tanh(logits / self.cfg.logit_cap)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward): 6N for the weights plus attention."""
        n_matmul = sum(p.numel() for n, p in self.named_parameters() if not n.startswith("wte.") or self.lm_head is None)
        attn = 12 * self.cfg.n_layer * self.cfg.n_embd * seq_len // 2  # causal: half the score matrix
        return 6 * n_matmul + attn
