"""The GPT: causality, roles, initialisation, seeding."""

import math

import torch

from nanogpt.model import GPT
from nanogpt.tracks import ModelConfig, get_track

CFG = ModelConfig(vocab_size=61, n_layer=2, n_head=2, n_embd=32)


def test_initial_loss_is_uniform_and_seeded():
    torch.manual_seed(0)
    model = GPT(CFG)
    x = torch.randint(0, 61, (2, 17))
    # Zero-initialised head: every token equally likely at step 0.
    assert abs(model(x[:, :-1], x[:, 1:]).item() - math.log(61)) < 1e-5
    torch.manual_seed(0)
    again = GPT(CFG)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_output_projections_start_at_zero():
    model = GPT(CFG)
    for block in model.blocks:
        assert block.attn.c_proj.weight.abs().sum() == 0
        assert block.mlp.c_proj.weight.abs().sum() == 0


def test_causal_future_tokens_do_not_change_past_losses():
    torch.manual_seed(1)
    model = GPT(CFG)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randint(0, 61, (1, 12))
    y = torch.randint(0, 61, (1, 12))
    base = model(x, y, reduction="none")
    x2 = x.clone()
    x2[0, 8:] = (x2[0, 8:] + 1) % 61
    changed = model(x2, y, reduction="none")
    assert torch.allclose(base[:8], changed[:8], atol=1e-6)
    assert not torch.allclose(base[8:], changed[8:])


def test_roles_cover_every_parameter():
    model = GPT(get_track("tiny-cpu").model)
    roles = model.param_roles()
    assert set(roles) == {n for n, _ in model.named_parameters()}
    assert roles["wte.weight"] == "embed" and roles["lm_head.weight"] == "head"
    assert sum(r == "matrix" for r in roles.values()) == 6 * model.cfg.n_layer
    assert set(model.matrix_inputs()) == {n for n, r in roles.items() if r == "matrix"}


def test_tied_gelu_variant():
    cfg = ModelConfig(vocab_size=61, n_layer=1, n_head=2, n_embd=32, mlp="gelu", tie_embeddings=True)
    model = GPT(cfg)
    assert model.lm_head is None and "head" not in model.param_roles().values()
    x = torch.randint(0, 61, (2, 9))
    model(x[:, :-1], x[:, 1:]).backward()
    assert model.wte.weight.grad is not None


def test_soft_cap_bounds_logits():
    cfg = ModelConfig(vocab_size=61, n_layer=1, n_head=2, n_embd=32, logit_cap=2.0)
    model = GPT(cfg)
    with torch.no_grad():
        model.lm_head.weight.fill_(100.0)
    x = torch.randint(0, 61, (1, 8))
    # With logits capped at ±2, the loss cannot exceed log(V) + 4.
    assert model(x[:, :-1], x[:, 1:]).item() <= math.log(61) + 4 + 1e-4
