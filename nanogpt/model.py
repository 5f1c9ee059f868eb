"""A GPT in the modded-nanogpt style, every architectural choice a field of `ModelConfig`.

The defaults are the harness's modern architecture: RoPE, QK-norm, RMSNorm without weights (also
on the embedding), ReLU² MLP, untied embedding and head, zero-initialised output projections,
logit soft-cap. A track that names a record sets the record's choices (nanogpt/tracks.py); the
model never asks which track it is.

Model families are field values, not classes: a LLaMA-style block is mlp="swiglu" (LLaMA's hidden
width), norm_gains=True (RMSNorm with learnable gains), RoPE and an untied head (tracks.ARCH_LLAMA);
a Mixture-of-Experts model sets ModelConfig.moe (routed experts instead of the dense MLP, `MoE`).

Every parameter carries a role (matrix / embed / head / scalar) so that optimizers can route
them; the architecture is fixed by the track, never by the optimizer. Expert weights are 3-D banks
(experts x out x in) with role matrix: a matrix optimizer treats each expert's slice as one matrix.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt.config import ModelConfig, MoEConfig

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
CHOICES = {"mlp": ("relu2", "gelu", "gelu_tanh", "swiglu"), "logit_cap_dtype": ("float32", "logits"),
           "rope_table_dtype": ("input", "float32", "bfloat16"), "eval_dtype": ("autocast", "float32"),
           **{f"init_{kind}": tuple(INITS) for kind in ("embed", "qkv", "attn_proj", "fc", "mlp_proj", "head")}}


def check_config(cfg: ModelConfig) -> None:
    for key, valid in CHOICES.items():
        if getattr(cfg, key) not in valid:
            raise ValueError(f"ModelConfig.{key}={getattr(cfg, key)!r}; valid: {', '.join(valid)}")
    if cfg.n_embd % cfg.n_head or (cfg.n_embd // cfg.n_head) % 2:
        raise ValueError(f"n_embd {cfg.n_embd} must split into {cfg.n_head} heads of even size")
    moe = cfg.moe
    if moe is not None:
        if moe.router not in ROUTERS:
            raise ValueError(f"MoEConfig.router={moe.router!r}; valid: {', '.join(ROUTERS)}")
        if not 1 <= moe.top_k <= moe.n_experts:
            raise ValueError(f"MoEConfig.top_k={moe.top_k} must lie in [1, n_experts={moe.n_experts}]")


ROUTERS = ("softmax", "sigmoid")


def mlp_hidden(cfg: ModelConfig) -> int:
    """The dense MLP's hidden width: mlp_ratio·d; SwiGLU (three matrices instead of two) takes 2/3 of
    it rounded up to a multiple of mlp_multiple_of, LLaMA's rule (8/3·d for mlp_ratio 4)."""
    hidden = cfg.mlp_ratio * cfg.n_embd
    if cfg.mlp != "swiglu":
        return hidden
    hidden = int(2 * hidden / 3)
    return cfg.mlp_multiple_of * -(-hidden // cfg.mlp_multiple_of)


def input_blocks(width: int, d: int) -> int:
    """How many equal blocks of width <= d an input of `width` splits into (the fewest that divide
    it): Newton-Muon keeps one d x d-or-smaller statistic per block, as for the 4d-wide dense MLP."""
    return next(b for b in range(-(-width // d), width + 1) if width % b == 0)


def rms_norm(x: torch.Tensor, eps: float | None = None, gain: torch.Tensor | None = None) -> torch.Tensor:
    """x·rsqrt(mean(x²) + eps) over the last dimension, times `gain` if given (LLaMA's RMSNorm);
    eps None: the dtype's machine epsilon."""
    return F.rms_norm(x, (x.size(-1),), gain, eps=eps)


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


def activate(kind: str, h: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
    """The MLP's nonlinearity on the first projection h (SwiGLU: silu(h) ⊙ up, the gated unit)."""
    if kind == "relu2":
        return F.relu(h).square()
    if kind == "swiglu":
        return F.silu(h) * up
    return F.gelu(h, approximate="tanh" if kind == "gelu_tanh" else "none")


class MLP(nn.Module):
    """c_proj(act(c_fc x)); SwiGLU: c_proj(silu(c_fc x) ⊙ c_up x), c_fc being the gate."""

    def __init__(self, cfg: ModelConfig, hidden: int | None = None):
        super().__init__()
        hidden = hidden or mlp_hidden(cfg)
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=False)
        self.c_up = nn.Linear(cfg.n_embd, hidden, bias=False) if cfg.mlp == "swiglu" else None
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=False)
        self.act = cfg.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(activate(self.act, self.c_fc(x), None if self.c_up is None else self.c_up(x)))


def expert_counts(experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Assignments per expert; unlike bincount its shape never depends on the data (no graph break)."""
    flat = experts.flatten()
    return torch.zeros(n_experts, dtype=torch.long, device=flat.device).index_add_(0, flat, torch.ones_like(flat))


class RoutedInput(nn.Module):
    """The identity on the tokens routed to one expert, called as (z, expert): a hook point, so that
    forward pre-hooks (Newton-Muon's input statistics) see each expert's own inputs."""

    def __init__(self, n_experts: int):
        super().__init__()
        self.n_experts = n_experts

    def forward(self, z: torch.Tensor, expert: int) -> torch.Tensor:
        return z


class MoE(nn.Module):
    """Top-k routed experts, dropless: every token reaches all of its top_k experts.

    Expert weights are banks (experts x out x in) of the block's MLP kind: fc (the gate for SwiGLU),
    up (SwiGLU only) and proj. The router is an n_experts x d matrix with role `matrix`, as in the
    Muon practice for MoE models (Moonlight, arXiv 2502.16982, trains a DeepSeek-V3-style MoE with
    Muon on every >= 2-D weight but the embedding and head, its gate included; its released
    examples/toy_train.py selects Muon parameters exactly so): it is a hidden linear map of the
    residual stream like q or c_fc, not a lookup table or an output layer.

    Compute loops over experts, never over tokens: the (token, slot) pairs are sorted by expert once,
    each expert gathers its tokens, and index_add_ scatters the weighted outputs back.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        m: MoEConfig = cfg.moe
        d, h, e = cfg.n_embd, m.expert_hidden, m.n_experts
        self.cfg, self.act = m, cfg.mlp
        self.router = nn.Linear(d, e, bias=False)
        self.fc = nn.Parameter(torch.empty(e, h, d))
        self.up = nn.Parameter(torch.empty(e, h, d)) if cfg.mlp == "swiglu" else None
        self.proj = nn.Parameter(torch.empty(e, d, h))
        self.shared = MLP(cfg, hidden=h) if m.shared_expert else None
        self.fc_input, self.proj_input = RoutedInput(e), RoutedInput(e)
        # Tokens routed to each expert by the forward passes without autograd (evaluation) since
        # the last take_load(): the expert-load statistics of the log.
        self.register_buffer("load", torch.zeros(e, dtype=torch.long), persistent=False)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router on (N, d) tokens: (top-k weights renormalised to sum 1, top-k expert ids, the
        weighted auxiliary loss). Load balancing (Switch Transformer eq. 4-6, GShard): E · Σ_i f_i P_i
        with f_i the fraction of the N·k assignments that went to expert i and P_i the mean router
        probability of i (sigmoid scores normalised per token, as DeepSeek-V3's balance loss); 1 for
        uniform routing. z-loss (ST-MoE eq. 5): mean over tokens of logsumexp(router logits)²."""
        m = self.cfg
        logits = self.router(x).float()
        scores = logits.softmax(-1) if m.router == "softmax" else logits.sigmoid()
        weights, experts = scores.topk(m.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        probs = scores if m.router == "softmax" else scores / scores.sum(-1, keepdim=True)
        frac = expert_counts(experts, m.n_experts).float() / experts.numel()
        balance = m.n_experts * (frac * probs.mean(0)).sum()
        z = torch.logsumexp(logits, dim=-1).square().mean()
        return weights, experts, m.aux_loss_coef * balance + m.z_loss_coef * z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The experts' output; the router's weighted auxiliary loss is left in self.aux_loss for
        GPT's training loss (the block keeps returning only the residual stream)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, experts, self.aux_loss = self.route(x)
        flat = experts.flatten()
        order = flat.argsort(stable=True)
        counts = expert_counts(flat, self.cfg.n_experts)
        if not torch.is_grad_enabled():
            self.load += counts
        # Compiled (`compiled`), the counts are unbacked sizes and nothing branches on one, so one graph
        # serves every routing pattern; an idle expert computes on an empty split.
        sizes = counts.tolist()
        for n in sizes:
            torch._check(n >= 0)
        torch._check(sum(sizes) == flat.numel())
        out = torch.zeros_like(x)
        parts = zip((order // self.cfg.top_k).split(sizes), weights.flatten()[order, None].split(sizes))
        for e, (idx, gate) in enumerate(parts):
            z = self.fc_input(x[idx], e)
            h = activate(self.act, z @ self.fc[e].mT, None if self.up is None else z @ self.up[e].mT)
            y = self.proj_input(h, e) @ self.proj[e].mT
            out.index_add_(0, idx, y * gate.to(y.dtype))
        if self.shared is not None:
            out = out + self.shared(x)
        return out.view(shape)

    def take_load(self) -> torch.Tensor:
        """Tokens routed to each expert since the last call (then reset to zero)."""
        load = self.load.clone()
        self.load.zero_()
        return load


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg) if cfg.moe is None else MoE(cfg)
        self.norm_eps = cfg.norm_eps
        self.attn_scale = 1 / math.sqrt(2 * cfg.n_layer) if cfg.attn_out_depth_scale else None
        self.attn_gain = nn.Parameter(torch.ones(cfg.n_embd)) if cfg.norm_gains else None
        self.mlp_gain = nn.Parameter(torch.ones(cfg.n_embd)) if cfg.norm_gains else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(rms_norm(x, self.norm_eps, self.attn_gain))
        x = x + (a if self.attn_scale is None else self.attn_scale * a)
        return x + self.mlp(rms_norm(x, self.norm_eps, self.mlp_gain))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        check_config(cfg)
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.final_gain = nn.Parameter(torch.ones(cfg.n_embd)) if cfg.norm_gains else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise from the current torch RNG state (seeded by the harness), in the records' draw
        order: the embedding, then per block q, k, v, attention projection, then the MLP (c_fc,
        c_up for SwiGLU, its projection; an MoE layer: the router, as c_fc, then each expert's fc,
        up, projection bank one expert after another, then the shared expert), then the head. A tied
        embedding/head is one tensor, initialised by init_embed. Norm gains start at 1."""
        cfg = self.cfg
        INITS[cfg.init_embed](self.wte.weight)
        for block in self.blocks:
            a, m = block.attn, block.mlp
            weights = [(a.c_q.weight, cfg.init_qkv), (a.c_k.weight, cfg.init_qkv), (a.c_v.weight, cfg.init_qkv),
                       (a.c_proj.weight, cfg.init_attn_proj)]
            mlps = [m] if isinstance(m, MLP) else [m.shared] if m.shared is not None else []
            if isinstance(m, MoE):
                weights += [(m.router.weight, cfg.init_fc)]
                weights += [(bank, init) for bank, init in ((m.fc, cfg.init_fc), (m.up, cfg.init_fc),
                                                            (m.proj, cfg.init_mlp_proj)) if bank is not None]
            for mlp in mlps:
                weights += [(lin.weight, init) for lin, init in ((mlp.c_fc, cfg.init_fc), (mlp.c_up, cfg.init_fc),
                                                                  (mlp.c_proj, cfg.init_mlp_proj)) if lin is not None]
            for w, init in weights:
                for matrix in w.view(-1, *w.shape[-2:]):  # a bank: each expert's matrix by its own fan-in
                    INITS[init](matrix)
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
        input splits into (the 4x-wide MLP down-projection reads 4 blocks of width d; see
        input_blocks). Matrices that read the same module share one input statistic (q, k, v; a
        SwiGLU gate and up projection). An expert bank reads a RoutedInput, whose input is each
        expert's own tokens. Used by Newton-Muon."""
        out = {}
        d = self.cfg.n_embd
        for i, block in enumerate(self.blocks):
            a, m = block.attn, block.mlp
            pre = f"blocks.{i}."
            for name in ("c_q", "c_k", "c_v"):
                out[f"{pre}attn.{name}.weight"] = (a.c_q, 1)
            out[f"{pre}attn.c_proj.weight"] = (a.c_proj, 1)
            dense = {"mlp.": m} if isinstance(m, MLP) else {"mlp.shared.": m.shared} if m.shared is not None else {}
            if isinstance(m, MoE):
                out[f"{pre}mlp.router.weight"] = (m.router, 1)
                out[f"{pre}mlp.fc"] = (m.fc_input, 1)
                if m.up is not None:
                    out[f"{pre}mlp.up"] = (m.fc_input, 1)
                out[f"{pre}mlp.proj"] = (m.proj_input, input_blocks(m.proj.size(-1), d))
            for prefix, mlp in dense.items():
                out[f"{pre}{prefix}c_fc.weight"] = (mlp.c_fc, 1)
                if mlp.c_up is not None:
                    out[f"{pre}{prefix}c_up.weight"] = (mlp.c_fc, 1)
                out[f"{pre}{prefix}c_proj.weight"] = (mlp.c_proj, input_blocks(mlp.c_proj.in_features, d))
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
        x = rms_norm(x, cfg.norm_eps, self.final_gain)
        logits = self.lm_head(x) if self.lm_head is not None else F.linear(x, self.wte.weight)
        if cfg.logit_cap > 0 and cfg.logit_cap_dtype == "logits":
            logits = cfg.logit_cap * torch.tanh(logits / cfg.logit_cap)
        logits = logits.float()
        if cfg.logit_cap > 0 and cfg.logit_cap_dtype == "float32":
            logits = cfg.logit_cap * torch.tanh(logits / cfg.logit_cap)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        if cfg.moe is None or not torch.is_grad_enabled():
            return loss  # evaluation (no autograd) is the pure language-model loss
        return loss + sum(block.mlp.aux_loss for block in self.blocks)  # training adds the routers' losses

    def param_counts(self) -> dict[str, int]:
        """Total parameters, and the active ones a token uses (top_k of the n_experts experts)."""
        total = sum(p.numel() for p in self.parameters())
        inactive = 0
        for block in self.blocks:
            if isinstance(block.mlp, MoE):
                m = block.mlp
                per_expert = sum(bank[0].numel() for bank in (m.fc, m.up, m.proj) if bank is not None)
                inactive += (m.cfg.n_experts - m.cfg.top_k) * per_expert
        return {"params_total": total, "params_active": total - inactive}

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token of the active path (forward + backward): 6N for the weight
        matrices a token uses (its top_k experts, the router) plus attention."""
        n_matmul = sum(p.numel() for n, p in self.named_parameters()
                       if p.ndim >= 2 and (not n.startswith("wte.") or self.lm_head is None))
        counts = self.param_counts()
        n_matmul -= counts["params_total"] - counts["params_active"]
        attn = 12 * self.cfg.n_layer * self.cfg.n_embd * seq_len // 2  # causal: half the score matrix
        return 6 * n_matmul + attn

    def expert_load(self) -> list[torch.Tensor]:
        """Per MoE layer, the tokens routed to each expert by evaluation passes since the last call
        (the counters are reset); empty for a dense model."""
        return [block.mlp.take_load() for block in self.blocks if isinstance(block.mlp, MoE)]


def compiled(model: GPT, **options) -> nn.Module:
    """torch.compile of the model, with scalars read from tensors (the MoE's per-expert token counts)
    traced as unbacked sizes. Without that, the counts' .tolist() breaks the graph and the resumed
    frame is specialised to each routing pattern with an idle or single-token expert: recompilations
    inside the timed steps, up to dynamo's recompile limit, then eager frames. With it, one graph serves
    every pattern. A dense model reads no scalar, so its graph is unchanged. `options` go to
    torch.compile (the tests ask for fullgraph)."""
    torch._dynamo.config.capture_scalar_outputs = True
    return torch.compile(model, **options)
