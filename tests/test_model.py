"""The GPT: causality, roles, initialisation, seeding."""

import dataclasses
import math

import pytest
import torch

from nanogpt.model import GPT, mlp_hidden
from nanogpt.tracks import ARCH_LLAMA, ModelConfig, get_track

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


def _perturbed(cfg: ModelConfig) -> GPT:
    torch.manual_seed(2)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_eval_dtype_float32_evaluates_outside_autocast_and_trains_inside_it():
    x = torch.randint(0, 61, (2, 17))
    model = _perturbed(dataclasses.replace(CFG, eval_dtype="float32"))
    with torch.no_grad():
        fp32 = model(x[:, :-1], x[:, 1:])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            evaluated = model(x[:, :-1], x[:, 1:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = model(x[:, :-1], x[:, 1:])
    assert torch.equal(evaluated, fp32) and not torch.equal(trained.detach(), fp32)
    model = _perturbed(CFG)  # "autocast": evaluation in the training dtype
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not torch.equal(model(x[:, :-1], x[:, 1:]), fp32)


def test_logit_cap_dtype_only_matters_in_low_precision():
    x = torch.randint(0, 61, (2, 17))
    losses = {}
    for where in ("float32", "logits"):
        model = _perturbed(dataclasses.replace(CFG, logit_cap=2.0, logit_cap_dtype=where))
        with torch.no_grad():
            plain = model(x[:, :-1], x[:, 1:])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                losses[where] = (plain, model(x[:, :-1], x[:, 1:]))
    assert torch.equal(losses["float32"][0], losses["logits"][0])
    assert not torch.equal(losses["float32"][1], losses["logits"][1])


def test_architecture_switches_change_the_function_and_bad_values_are_refused():
    x = torch.randint(0, 61, (2, 17))
    base = _perturbed(CFG)(x[:, :-1], x[:, 1:])
    for change in ({"embed_norm": False}, {"qk_norm": False}, {"attn_out_depth_scale": True}, {"norm_eps": 1e-2},
                   {"mlp": "gelu"}, {"mlp": "gelu_tanh"}, {"rope_table_dtype": "bfloat16"}, {"mlp": "swiglu"},
                   {"norm_gains": True}):
        assert not torch.equal(_perturbed(dataclasses.replace(CFG, **change))(x[:, :-1], x[:, 1:]), base), change
    for bad in ({"mlp": "geglu"}, {"init_qkv": "xavier"}, {"eval_dtype": "fp16"}, {"logit_cap_dtype": "bf16"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GPT(dataclasses.replace(CFG, **bad))


def test_init_schemes_draw_their_distribution():
    cfg = dataclasses.replace(CFG, n_embd=256, n_head=4, init_embed="uniform(std=1/sqrt(3*fan_in))",
                              init_qkv="uniform(std=1/sqrt(3*fan_in))", init_attn_proj="normal(std=0.02)",
                              init_fc="uniform(std=1/sqrt(fan_in))", init_mlp_proj="uniform(std=1/sqrt(3*fan_in))",
                              init_head="normal(std=1)")
    torch.manual_seed(0)
    model = GPT(cfg)
    b = model.blocks[0]
    assert float(model.wte.weight.detach().abs().max()) <= 1 / math.sqrt(256)  # nn.Linear's U(±1/sqrt(fan_in))
    for w, std in ((b.attn.c_q.weight, 1 / math.sqrt(3 * 256)), (b.attn.c_proj.weight, 0.02),
                   (b.mlp.c_fc.weight, 1 / math.sqrt(256)), (b.mlp.c_proj.weight, 1 / math.sqrt(3 * 1024)),
                   (model.lm_head.weight, 1.0)):
        assert float(w.detach().std()) == pytest.approx(std, rel=0.05)


# ---- the LLaMA-style block ---------------------------------------------------------------------------


@pytest.mark.parametrize("d,multiple,hidden", [(128, 32, 352), (4096, 256, 11008), (768, 256, 2048)])
def test_swiglu_width_is_llamas_rule(d, multiple, hidden):
    """2/3 of 4d rounded up to a multiple of multiple_of: LLaMA-7B's 11008 at d = 4096."""
    cfg = ModelConfig(vocab_size=61, n_layer=1, n_head=2, n_embd=d, mlp_multiple_of=multiple, **ARCH_LLAMA)
    assert mlp_hidden(cfg) == hidden


def test_llama_block_has_gated_mlp_scalar_gains_and_an_untied_head():
    model = GPT(get_track("tiny-llama-cpu").model)
    roles = model.param_roles()
    mlp = model.blocks[0].mlp
    assert mlp.c_fc.weight.shape == mlp.c_up.weight.shape == (352, 128) and mlp.c_proj.weight.shape == (128, 352)
    gains = {n for n in roles if n.endswith("_gain")}
    assert gains == {"final_gain"} | {f"blocks.{i}.{k}_gain" for i in range(4) for k in ("attn", "mlp")}
    assert {roles[n] for n in gains} == {"scalar"} and all(torch.equal(model.get_parameter(n), torch.ones(128)) for n in gains)
    assert model.lm_head is not None and roles["lm_head.weight"] == "head"
    assert set(model.matrix_inputs()) == {n for n, r in roles.items() if r == "matrix"}
    assert model.matrix_inputs()["blocks.0.mlp.c_up.weight"][0] is mlp.c_fc  # the gate and up read one input
    assert model.matrix_inputs()["blocks.0.mlp.c_proj.weight"][1] == 4  # 352 = 4 blocks of 88 <= d


def test_norm_gains_scale_the_normalised_input():
    cfg = dataclasses.replace(CFG, **ARCH_LLAMA)
    x = torch.randint(0, 61, (2, 17))
    model = _perturbed(cfg)
    with torch.no_grad():
        base = model(x[:, :-1], x[:, 1:])
        model.final_gain.mul_(2.0)
        assert not torch.equal(model(x[:, :-1], x[:, 1:]), base)
    model(x[:, :-1], x[:, 1:]).backward()
    assert model.blocks[0].attn_gain.grad.abs().sum() > 0
