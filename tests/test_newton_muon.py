"""Newton-Muon in the model: hooks exist only on refresh steps, q/k/v share one statistic, the MLP
down-projection uses four blocks, a failed Cholesky falls back to I, statistics are averaged over
micro-batches and ranks, and with the preconditioner forced to I it is exactly Muon.
(Agreement with the reference code paths is in test_optimizer_fixtures.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import optimizers.newton_muon as newton_muon
from nanogpt.model import GPT
from nanogpt.optim import build_optimizers, default_hparams, load_optimizer
from nanogpt.tracks import ModelConfig, get_track
from nanogpt.train import Workload, train_step
from optimizers.newton_muon import NewtonMuon

CFG = ModelConfig(vocab_size=61, n_layer=1, n_head=2, n_embd=32)
TRACK = get_track("tiny-cpu")
HP = {"refresh_every": 2, "ortho_dtype": "float32"}
MUON_HP = {"ortho_dtype": "float32"}


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    tokens = torch.randint(0, CFG.vocab_size, (4, 17), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def build(module, model: GPT, hp: dict = HP) -> list[torch.optim.Optimizer]:
    """The module's optimizers for the model: the matrix optimizer first, then the auxiliary AdamW."""
    return build_optimizers(load_optimizer(module), model, {**default_hparams(load_optimizer(module), TRACK), **hp})


def train(model: GPT, opts: list[torch.optim.Optimizer], steps: int) -> list[dict[str, torch.Tensor]]:
    """Hidden matrices after each step."""
    history, w = [], Workload.local(model)
    for step in range(steps):
        train_step(w, opts, step, [batch(step)], lr_mult=1.0)
        history.append({n: p.detach().clone() for n, p in model.named_parameters() if "blocks." in n})
    return history


def twins() -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    model, twin = GPT(CFG), GPT(CFG)
    twin.load_state_dict(model.state_dict())
    return model, twin


def test_identity_preconditioner_is_exactly_muon(monkeypatch):
    model, twin = twins()
    opts = build("newton_muon", model)
    monkeypatch.setattr(opts[0], "inverse", lambda k: torch.eye(k.size(-1)).expand_as(k).clone())
    ours, reference = train(model, opts, 5), train(twin, build("muon", twin, MUON_HP), 5)
    assert opts[0].state[model.blocks[0].attn.c_q.weight]["refreshes"] == 2  # the preconditioner really ran
    assert not torch.equal(ours[-1]["blocks.0.attn.c_q.weight"], ours[0]["blocks.0.attn.c_q.weight"])  # and had gradients
    for a, b in zip(ours, reference):
        for name in a:
            assert torch.equal(a[name], b[name]), name


def test_preconditioner_changes_the_update_only_after_the_first_refresh():
    model, twin = twins()
    ours, reference = train(model, build("newton_muon", model), 3), train(twin, build("muon", twin, MUON_HP), 3)
    assert all(torch.equal(ours[0][n], reference[0][n]) for n in ours[0])  # step 0: K⁻¹ = I
    # Zero-initialised head and projections: the projections get gradients from step 1, the rest from step 2.
    for step, name in ((1, "attn.c_proj"), (1, "mlp.c_proj"), (2, "mlp.c_fc"), (2, "attn.c_q")):
        weight = f"blocks.0.{name}.weight"
        assert (ours[step][weight] - reference[step][weight]).abs().max() > 1e-4, name


def test_hooks_exist_only_on_refresh_steps():
    model = GPT(CFG)
    opt = build("newton_muon", model, {**HP, "refresh_every": 3})[0]
    modules = [model.blocks[0].attn.c_q, model.blocks[0].attn.c_proj, model.blocks[0].mlp.c_fc, model.blocks[0].mlp.c_proj]
    asked = []
    for step in range(6):
        asked.append(opt.before_forward(step))
        assert all(len(m._forward_pre_hooks) == (1 if asked[-1] else 0) for m in modules)
        model(*batch(step)).backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        assert not any(m._forward_pre_hooks for m in modules)
    assert asked == [False, False, True, False, False, True]
    assert not model.blocks[0].attn.c_k._forward_pre_hooks  # k and v read c_q's input


def test_qkv_share_one_statistic_and_mlp_projection_has_four_blocks():
    model = GPT(CFG)
    opts = build("newton_muon", model)
    train(model, opts, 2)
    opt = opts[0]
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    d = CFG.n_embd
    assert opt.state[attn.c_q.weight]["K"].shape == (1, d, d)
    assert "K" not in opt.state[attn.c_k.weight] and "K" not in opt.state[attn.c_v.weight]
    assert opt.owner[attn.c_k.weight] is attn.c_q.weight and opt.owner[attn.c_v.weight] is attn.c_q.weight
    assert opt.state[mlp.c_proj.weight]["K"].shape == (4, d, d)
    assert opt.state[mlp.c_fc.weight]["K"].shape == (1, d, d)
    # The attention statistic is the input of c_q: the normalized residual stream, RMS 1, so tr(S)/d ≈ 1.
    k = opt.state[attn.c_q.weight]["K"][0]
    expected_trace = 0.95 * 1e-3 * d + 0.05 * d
    assert k.trace().item() == pytest.approx(expected_trace, rel=1e-3)


def test_statistics_average_micro_batches_with_equal_weight():
    layer = torch.nn.Identity()
    p = torch.nn.Parameter(torch.randn(3, 8))
    opt = NewtonMuon([p], inputs={p: (layer, 2)}, refresh_every=1, newton_beta=0.9)
    z1, z2 = torch.randn(5, 8), torch.randn(2, 3, 8)  # micro-batches of different sizes and layouts
    assert opt.before_forward(0)
    layer(z1)
    layer(z2)
    p.grad = torch.randn(3, 8)
    opt.step()

    def second_moment(z):
        blocks = z.reshape(-1, 2, 4).transpose(0, 1)
        return blocks.mT @ blocks / blocks.size(1)

    mean = (second_moment(z1) + second_moment(z2)) / 2
    torch.testing.assert_close(opt.state[p]["K"], 0.9 * 1e-3 * torch.eye(4).expand(2, 4, 4) + 0.1 * mean)


def test_failed_cholesky_falls_back_to_identity_per_block():
    p = torch.nn.Parameter(torch.zeros(2, 6))
    opt = NewtonMuon([p], inputs={p: (torch.nn.Identity(), 2)}, newton_gamma=0.2, ridge_eps=1e-8)
    good = torch.diag(torch.tensor([1.0, 2.0, 3.0]))
    bad = -torch.eye(3)  # ridge 0.2 tr/d < 0 cannot rescue it
    inv = opt.inverse(torch.stack([good, bad]))
    ridge = 0.2 * 6.0 / 3 + 1e-8
    torch.testing.assert_close(inv[0], torch.linalg.inv(good + ridge * torch.eye(3)))
    assert torch.equal(inv[1], torch.eye(3))


def test_bad_inputs_are_rejected():
    p = torch.nn.Parameter(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="cannot read an input of 4 equal blocks"):
        NewtonMuon([p], inputs={p: (torch.nn.Identity(), 4)})
    with pytest.raises(ValueError, match="refresh_every=0"):
        NewtonMuon([p], refresh_every=0)


def test_build_without_model_structure_is_muon():
    p = torch.nn.Parameter(torch.randn(4, 6))
    (opt,) = newton_muon.build({"matrix": [p], "embed": [], "head": [], "scalar": []}, {**newton_muon.DEFAULTS, **HP}, None)
    assert not opt.sources and opt.before_forward(1) is False


def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    layer = torch.nn.Identity()
    p = torch.nn.Parameter(torch.zeros(3, 4))
    opt = NewtonMuon([p], inputs={p: (layer, 1)}, refresh_every=1, newton_beta=0.5)
    opt.before_forward(0)
    for z in zs_of(rank):
        layer(z)
    p.grad = torch.ones(3, 4)
    opt.step()
    torch.save(opt.state[p]["K"], f"{out_dir}/K{rank}.pt")
    dist.destroy_process_group()


def zs_of(rank: int) -> list[torch.Tensor]:
    """Rank 0 sees one micro-batch, rank 1 two."""
    g = torch.Generator().manual_seed(rank)
    return [torch.randn(6, 4, generator=g) for _ in range(rank + 1)]


def test_statistics_are_all_reduced_across_ranks(tmp_path):
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    zs = zs_of(0) + zs_of(1)
    mean = sum(z.T @ z / z.size(0) for z in zs) / len(zs)
    expected = 0.5 * 1e-3 * torch.eye(4) + 0.5 * mean
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"K{rank}.pt")[0], expected)
