"""Mixture-of-Experts: routing against a per-token reference, the auxiliary losses against their
formulas, expert banks in every Muon variant against separate matrices, the expert-load log, and
3-step runs of the new tracks."""

import dataclasses
import math

import pytest
import torch
from conftest import torchrun_two_gloo

import run
from analysis.records import read_table
from nanogpt.model import GPT, MoE, RoutedInput, activate, compiled
from nanogpt.runlog import expert_load_line, parse_expert_loads, parse_log
from nanogpt.tracks import ModelConfig, MoEConfig, cpu_target, get_track
from optimizers import mona, muon, muon2, muon2f, newton_muon, normuon

MOE = MoEConfig(n_experts=4, top_k=2, expert_hidden=12, aux_loss_coef=0.1, z_loss_coef=0.01)
CFG = ModelConfig(vocab_size=61, n_layer=2, n_head=2, n_embd=16, mlp="swiglu", norm_gains=True, moe=MOE)


def _layer(cfg: ModelConfig, seed: int = 0) -> MoE:
    torch.manual_seed(seed)
    layer = GPT(cfg).blocks[0].mlp
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) / math.sqrt(p.size(-1)))  # nonzero projections
    return layer


@pytest.mark.parametrize("router,mlp,shared", [("softmax", "swiglu", False), ("sigmoid", "relu2", True)])
def test_routing_matches_a_per_token_reference(router, mlp, shared):
    """Each token's output is the renormalised top-k weighted sum of its experts (plus the shared one)."""
    cfg = dataclasses.replace(CFG, mlp=mlp, moe=dataclasses.replace(MOE, router=router, shared_expert=shared))
    layer = _layer(cfg)
    x = torch.randn(2, 5, 16)
    out = layer(x)
    for t, token in enumerate(x.reshape(-1, 16)):
        logits = layer.router.weight @ token
        scores = logits.softmax(-1) if router == "softmax" else logits.sigmoid()
        top = scores.topk(2)
        expected = layer.shared(token) if shared else torch.zeros(16)
        for w, e in zip(top.values / top.values.sum(), top.indices):
            up = None if layer.up is None else layer.up[e] @ token
            expected = expected + w * (layer.proj[e] @ activate(mlp, layer.fc[e] @ token, up))
        torch.testing.assert_close(out.reshape(-1, 16)[t], expected, rtol=1e-5, atol=1e-6)


def test_aux_losses_follow_switch_and_st_moe():
    """Load balancing E·Σ f_i P_i (f over the N·k assignments) and z-loss mean(logsumexp²), weighted."""
    layer = _layer(CFG)
    x = torch.randn(40, 16)
    _, experts, aux = layer.route(x)
    logits = x @ layer.router.weight.T
    probs = logits.softmax(-1)
    f = torch.stack([(experts == i).sum() for i in range(4)]).float() / (40 * 2)
    balance = 4 * sum(f[i] * probs[:, i].mean() for i in range(4))
    z = sum(torch.logsumexp(row, 0) ** 2 for row in logits) / 40
    torch.testing.assert_close(aux, 0.1 * balance + 0.01 * z)
    uniform = dataclasses.replace(CFG, moe=dataclasses.replace(MOE, aux_loss_coef=1.0, z_loss_coef=0.0))
    layer = _layer(uniform)
    with torch.no_grad():
        layer.router.weight.zero_()  # equal probabilities: the balance loss is exactly 1 at any assignment
    assert layer.route(x)[2].item() == pytest.approx(1.0)


def test_training_loss_adds_the_aux_losses_and_validation_is_the_lm_loss():
    torch.manual_seed(0)
    model = GPT(CFG)
    x = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        lm = model(x[:, :-1], x[:, 1:])
    trained = model(x[:, :-1], x[:, 1:])
    # the routers' losses of this forward, recomputed from each layer's input
    inputs = []
    hooks = [block.mlp.register_forward_pre_hook(lambda m, args: inputs.append(args[0])) for block in model.blocks]
    model(x[:, :-1], x[:, 1:])
    for h in hooks:
        h.remove()
    aux = sum(block.mlp.route(z.reshape(-1, 16))[2] for block, z in zip(model.blocks, inputs))
    torch.testing.assert_close(trained, lm + aux)
    assert aux.item() > 0


def test_banks_are_matrices_with_per_expert_init_and_counted_parameters():
    model = GPT(get_track("tiny-moe-cpu").model)
    roles = model.param_roles()
    m = model.blocks[0].mlp
    assert m.fc.shape == (8, 176, 128) and m.proj.shape == (8, 128, 176)
    assert roles["blocks.0.mlp.fc"] == roles["blocks.0.mlp.proj"] == roles["blocks.0.mlp.router.weight"] == "matrix"
    assert set(model.matrix_inputs()) == {n for n, r in roles.items() if r == "matrix"}
    # U(±sqrt(3/fan_in)) with the fan-in of one expert (128), not the bank's second dimension (176)
    assert (m.proj == 0).all() and math.sqrt(3 / 176) < m.fc[3].abs().max() <= math.sqrt(3 / 128)
    counts = model.param_counts()
    assert counts["params_total"] == sum(p.numel() for p in model.parameters())
    assert counts["params_total"] - counts["params_active"] == 4 * 6 * 3 * 128 * 176  # 6 of 8 experts idle per token
    dense = GPT(get_track("tiny-llama-cpu").model)
    # Two experts of width 176 cost what the dense SwiGLU of width 352 costs: same active FLOPs but the router.
    assert model.flops_per_token(256) - dense.flops_per_token(256) == 6 * 4 * 8 * 128


# ---- expert banks in the Muon family ---------------------------------------------------------------

VARIANTS = {
    "muon": (muon, {}),
    "normuon": (normuon, {}),
    "normuon_row": (normuon, {"neuron_axis": "row", "eps_mode": "add"}),
    "muon2": (muon2, {}),
    "muon2f": (muon2f, {}),
    "mona": (mona, {"beta_a": 0.9}),
    "newton_muon": (newton_muon, {"refresh_every": 1}),
}
E = 3
SHAPES = ((8, 12), (12, 8))  # a wide and a tall bank: NorMuon normalises columns of one, rows of the other


def _run(module, hp: dict, banked: bool, steps: int = 3) -> list[torch.Tensor]:
    """Steps of the optimizer on two expert banks (or their 2E separate matrices) and one plain
    matrix, with the same gradients; Newton-Muon reads each expert's own routed inputs (expert 2 of
    the tall bank gets no tokens at step 1). Returns the parameters after every step, as banks."""
    torch.manual_seed(0)
    init = [torch.randn(E, *shape) for shape in SHAPES] + [torch.randn(8, 12)]
    if banked:
        params = [torch.nn.Parameter(w.clone()) for w in init]
    else:
        params = [torch.nn.Parameter(w[e].clone()) for w in init[:2] for e in range(E)] + [torch.nn.Parameter(init[2].clone())]
    taps = [RoutedInput(E) for _ in SHAPES] if banked else [torch.nn.Identity() for _ in range(2 * E)]
    plain_in = torch.nn.Identity()
    if banked:
        inputs = {params[0]: (taps[0], 1), params[1]: (taps[1], 2), params[2]: (plain_in, 1)}
    else:
        inputs = {p: (taps[i], 1 if i < E else 2) for i, p in enumerate(params[:-1])} | {params[-1]: (plain_in, 1)}
    hp = {**module.DEFAULTS, **hp}
    if module is newton_muon:  # its build() reads the inputs from a model; here they are given directly
        opt = newton_muon.NewtonMuon(params, inputs=inputs, **{k: hp[k] for k in newton_muon.NewtonMuon.hyperparameters()})
    else:
        opt = module.build({"matrix": params, "embed": [], "head": [], "scalar": []}, hp, None)[0]
    history = []
    for step in range(steps):
        if hasattr(opt, "before_forward"):
            opt.before_forward(step)
        for b, (shape, expert_inputs) in enumerate(zip(SHAPES, ([5, 7, 3], [4, 6, 0 if step == 1 else 2]))):
            for e, n in enumerate(expert_inputs):
                if n:
                    z = torch.randn(n, shape[1])
                    taps[b](z, e) if banked else taps[b * E + e](z)
        plain_in(torch.randn(9, 12))
        g = [torch.randn(E, *shape) for shape in SHAPES] + [torch.randn(8, 12)]
        grads = g if banked else [w[e] for w in g[:2] for e in range(E)] + [g[2]]
        for p, grad in zip(params, grads):
            p.grad = grad.clone()
        opt.step()
        with torch.no_grad():
            if banked:
                history.append([p.clone() for p in params])
            else:
                history.append([torch.stack(params[:E]), torch.stack(params[E : 2 * E]), params[-1].clone()])
    return history


@pytest.mark.parametrize("name", VARIANTS)
def test_a_bank_of_experts_updates_exactly_as_separate_matrices(name):
    module, hp = VARIANTS[name]
    banked, separate = _run(module, hp, True), _run(module, hp, False)
    for step, (a, b) in enumerate(zip(banked, separate)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6, msg=f"{name}: step {step + 1}")
    moved = [float((p - q).abs().max()) for p, q in zip(banked[-1], _initial())]
    assert min(moved) > 1e-3  # every parameter really moved


def _initial() -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(E, *shape) for shape in SHAPES] + [torch.randn(8, 12)]


def test_newton_muon_keeps_each_experts_statistics_from_its_routed_tokens():
    """K of expert e after one refresh is lerp(K_INIT·I, Zₑᵀ Zₑ / Nₑ, 1 - beta); an expert without
    tokens (called with an empty slice, as the model calls it) keeps K⁻¹ = I."""
    bank = torch.nn.Parameter(torch.randn(E, 5, 4))
    tap = RoutedInput(E)
    opt = newton_muon.NewtonMuon([bank], inputs={bank: (tap, 1)}, refresh_every=1, newton_beta=0.9)
    opt.before_forward(0)
    zs = [torch.randn(6, 4), torch.randn(2, 4)]
    for e, z in enumerate(zs):
        tap(z, e)
    tap(torch.empty(0, 4), 2)  # the model's call for an expert no token was routed to
    bank.grad = torch.randn_like(bank)
    opt.step()
    state = opt.state[bank]
    for e, z in enumerate(zs):
        torch.testing.assert_close(state["K"][e, 0], 0.9 * 1e-3 * torch.eye(4) + 0.1 * z.T @ z / len(z))
    assert state["refreshes"].tolist() == [1, 1, 0]
    assert torch.equal(state["K_inv"][2, 0], torch.eye(4))


def test_compiled_moe_traces_one_graph_for_every_routing_pattern():
    """Compiled as the harness compiles (model.compiled, inductor), forward and backward are one
    graph (fullgraph: no break) traced once: routing patterns with idle and single-token experts
    reuse it (a recompilation would land in the timed steps) and give the eager outputs and gradients."""
    layer = _layer(CFG)
    fast = compiled(layer, fullgraph=True)
    x = torch.randn(1, 3, 16)  # 3 tokens x top-2 over 4 experts: counts of 0, 1, 2 and 3
    patterns = set()

    def check(seed: int) -> None:
        with torch.no_grad():
            layer.router.weight.copy_(torch.randn(4, 16, generator=torch.Generator().manual_seed(seed)))
        patterns.add(tuple(torch.bincount(layer.route(x.reshape(-1, 16))[1].flatten(), minlength=4).tolist()))
        results = []
        for module in (layer, fast):
            layer.zero_grad()
            out = module(x)
            (out.square().sum() + layer.aux_loss).backward()
            results.append((out.detach(), [p.grad.clone() for p in layer.parameters()]))
        torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)

    check(0)  # compiles
    with torch._dynamo.config.patch(error_on_recompile=True):  # from here, any new graph fails the test
        for seed in range(1, 8):
            check(seed)
    assert len(patterns) >= 4 and any(0 in p for p in patterns) and any(1 in p for p in patterns), patterns


def test_a_bank_that_does_not_match_its_routed_input_is_refused():
    bank = torch.nn.Parameter(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="routed to 3 experts"):
        newton_muon.NewtonMuon([bank], inputs={bank: (RoutedInput(3), 1)})


# ---- the log, and the tracks -----------------------------------------------------------------------


def test_expert_load_line_shows_a_collapsed_router_and_parses():
    balanced = expert_load_line(25, [[10, 10, 10, 10]])
    collapsed = expert_load_line(50, [[10, 10, 10, 10], [40, 40, 0, 0]])
    loads = parse_expert_loads([balanced, "step:25/400 val_loss:2.0 train_time:1ms step_avg:1.00ms", collapsed])
    assert loads[25] == [{"max": 0.25, "min": 0.25, "idle": 0, "dropped": 0}]
    assert loads[50][1] == {"max": 0.5, "min": 0.0, "idle": 2, "dropped": 0}


@pytest.mark.parametrize("track", ["tiny-moe-cpu", "tiny-llama-cpu"])
def test_new_tracks_run_three_steps_and_log_their_size(track, tmp_path):
    argv = ["--track", track, "--debug-model", "--no-compile", "--steps", "3", "--quiet", "--records-dir", str(tmp_path)]
    assert run.main(argv) == 0
    row = read_table(tmp_path).iloc[0]
    parsed = parse_log(tmp_path / row.log)
    assert parsed.config["params_total"] == row.params_total and parsed.config["params_active"] == row.params_active
    assert row.flops_per_token == parsed.config["flops_per_token"] > 0
    loads = parse_expert_loads(parsed.sections["training"].splitlines())
    if track == "tiny-moe-cpu":
        assert row.params_active < row.params_total
        assert sorted(loads) == [0, 3] and len(loads[3]) == 2 and all(layer["dropped"] == 0 for layer in loads[3])
    else:
        assert row.params_active == row.params_total and loads == {}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, sets", [("muon", []), ("newton_muon", ["--set", "refresh_every=2"])])
def test_two_gloo_processes_shard_expert_banks_like_one_process(optimizer, sets, tmp_path):
    """tiny-moe-cpu's debug model under torchrun: the banks' expert matrices are sharded across the
    2 ranks with the other matrices (Newton-Muon's per-expert statistics all-reduced), and the loss
    trajectory equals that of 1 process accumulating the same batch (up to summation order)."""
    args = ["--track", "tiny-moe-cpu", "--debug-model", "--no-compile", "--steps", "6", "--quiet", "--optimizer", optimizer, *sets]
    assert run.main([*args, "--records-dir", str(tmp_path / "one")]) == 0
    proc = torchrun_two_gloo([*args, "--records-dir", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = []
    for folder in ("one", "two"):
        row = read_table(tmp_path / folder).iloc[0]
        training = parse_log(tmp_path / folder / row.log).training
        losses.append([s.loss for s in training.steps] + [e.loss for e in training.evals])
    assert len(losses[0]) == len(losses[1]) == 6 + 3
    assert max(abs(a - b) for a, b in zip(*losses)) <= 2e-4, losses


def test_cpu_targets_follow_tiny_cpus_margin():
    """The rule gives tiny-cpu's own target from its default Muon's mean, and the new tracks' from theirs."""
    assert cpu_target(1.5568) == get_track("tiny-cpu").target == 1.60
    assert (get_track("tiny-llama-cpu").target, get_track("tiny-moe-cpu").target) == (1.58, 1.54)
