"""Optimizers from libraries plugged into the contract (issue 10): eval()/train() around evaluations
(schedule-free methods are evaluated, and checkpointed, at their averaged weights), the closure,
library provenance in the configuration's identity, a class that mishandles a role, a class by name,
the shipped library baselines, and two of them against references."""

from __future__ import annotations

import importlib
import math
import sys
import textwrap

import pytest
import torch
from conftest import LIBRARY_BASELINES

import run
from analysis.records import read_table
from nanogpt import train
from nanogpt.checkpoint import load_checkpoint
from nanogpt.data import TokenStream, validation_sequences
from nanogpt.errors import UserError
from nanogpt.model import GPT
from nanogpt.optim import build_optimizers, default_hparams, load_optimizer
from nanogpt.runlog import parse_log
from nanogpt.runspec import resolve
from nanogpt.tracks import ModelConfig, get_track

CFG = ModelConfig(vocab_size=61, n_layer=1, n_head=2, n_embd=32)
DEBUG = ["--debug-model", "--no-compile", "--quiet"]
BASELINES = LIBRARY_BASELINES


def batches(step: int, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(step)
    tokens = torch.randint(0, CFG.vocab_size, (n, 17), generator=g)
    return [(tokens[:, :-1], tokens[:, 1:])]


def tiny(name: str, **hp) -> tuple[torch.nn.Module, list[torch.optim.Optimizer]]:
    torch.manual_seed(0)
    model = GPT(CFG)
    spec = load_optimizer(name)
    return model, build_optimizers(spec, model, {**default_hparams(spec, get_track("tiny-cpu")), **hp})


# ---- eval()/train(): schedule-free methods are evaluated at their averaged point ---------------------


@pytest.fixture
def split_into_tiny_batches(monkeypatch):
    """timed_loop asks w.split(next_batch()): hand it the deterministic tiny batches instead."""
    counter = iter(range(10_000))
    monkeypatch.setattr(train.Workload, "split", lambda self, batch: batches(next(counter)))


@pytest.mark.usefixtures("split_into_tiny_batches")
def test_schedule_free_is_evaluated_at_its_averaged_weights():
    """schedulefree keeps y (where gradients are taken), z (the base iterate) and x (the average),
    y = (1 - beta1) z + beta1 x. The harness must evaluate at x: the weights seen by the evaluation
    and those restored after it satisfy that relation, and they differ. Without eval() the
    evaluation would see y itself, and the relation fails (y != z after a few steps)."""
    pytest.importorskip("schedulefree")
    model, opts = tiny("sfadamw", warmup_frac=0.0)
    (opt,) = opts
    beta1 = opt.param_groups[0]["betas"][0]
    w = train.Workload.local(model)
    p = model.blocks[0].attn.c_q.weight
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (weights during the evaluation, z)
    after: list[torch.Tensor] = []

    def run_eval() -> float:
        seen.append((p.detach().clone(), opt.state[p]["z"].clone() if "z" in opt.state[p] else p.detach().clone()))
        return 1.0

    out = train.timed_loop(w, opts, lambda: None, 6, {"warmup_frac": 0.0, "cooldown_frac": 0.0, "final_lr_mult": 1.0},
                           eval_every=3, run_eval=run_eval, diverge_at=1e9,
                           on_eval=lambda *a: after.append(p.detach().clone()), on_step=lambda *a: None)
    assert out.status == "ok" and [e[0] for e in out.evals] == [0, 3, 6]
    x, z = seen[1]
    y = after[1]
    assert not torch.allclose(x, y)
    torch.testing.assert_close(y, (1 - beta1) * z + beta1 * x, rtol=1e-5, atol=1e-6)
    # after the final evaluation the model keeps the evaluated (averaged) weights: a checkpoint holds them
    torch.testing.assert_close(p.detach(), seen[2][0])
    opt.train()
    assert not torch.allclose(p.detach(), seen[2][0])


def test_a_schedule_free_checkpoint_holds_the_evaluated_weights(tmp_path, fast_track):
    """run.py --save-checkpoint with schedule-free AdamW: the checkpoint's weights give the logged
    final validation loss (they are the averaged point the final evaluation saw, not y)."""
    pytest.importorskip("schedulefree")
    assert run.main([*DEBUG, "--optimizer", "sfadamw", "--steps", "4", "--set", "lr=0.02", "--save-checkpoint",
                     "--records-dir", str(tmp_path)]) == 0
    row = read_table(tmp_path).iloc[0]
    ckpt = load_checkpoint(tmp_path / row.checkpoint)
    track = resolve("tiny-cpu", "sfadamw", [], debug_model=True).track
    val = validation_sequences(TokenStream(track.resolve(track.val_files)), track.val_tokens, track.seq_len)
    loss = train.evaluate(train.Workload.local(ckpt.model), val, track.micro_batch_size)
    assert loss == pytest.approx(row.final_val_loss, abs=6e-5)


# ---- the closure -----------------------------------------------------------------------------------

CLOSURE_OPTIMIZER = """
import torch

DEFAULTS = {"lr": 0.1}
CALLS = []


class ClosureSGD(torch.optim.SGD):
    needs_closure = True

    def step(self, closure):
        before = [p.grad.clone() for g in self.param_groups for p in g["params"]]
        loss = closure()  # the harness's closure: gradients zeroed and recomputed at the same weights
        after = [p.grad.clone() for g in self.param_groups for p in g["params"]]
        CALLS.append((float(loss), before, after))
        return super().step()


def build(params, hp, model):
    return [ClosureSGD([p for ps in params.values() for p in ps], lr=hp["lr"])]
"""


def test_the_closure_recomputes_the_loss_and_gradients(tmp_path):
    path = tmp_path / "closure_opt.py"
    path.write_text(textwrap.dedent(CLOSURE_OPTIMIZER))
    spec = load_optimizer(str(path))
    torch.manual_seed(0)
    model = GPT(CFG)
    opts = build_optimizers(spec, model, {"lr": 0.1})
    w = train.Workload.local(model)
    losses = [train.train_step(w, opts, step, batches(step), lr_mult=1.0) for step in range(2)]
    calls = spec.module.CALLS
    assert len(calls) == 2  # once per step
    for (loss, before, after), step_loss in zip(calls, losses):
        assert loss == pytest.approx(step_loss, rel=1e-6)  # the same micro-batches at the same weights
        for g0, g1 in zip(before, after):
            torch.testing.assert_close(g0, g1)  # zeroed and recomputed, not accumulated (that would double them)


# ---- provenance: the package's files and version are in the configuration key -------------------------

FAKE_PACKAGE = {
    "fakeopt/__init__.py": """
        import torch

        from fakeopt.helper import SCALE


        class Scaled(torch.optim.SGD):
            def __init__(self, params, lr: float = 0.1, betas=(0.9, 0.99), eps=None):
                super().__init__(params, lr=lr * SCALE)


        class MatrixOnly(torch.optim.SGD):
            def __init__(self, params, lr: float = 0.1):
                super().__init__(params, lr=lr)

            def step(self, closure=None):
                for g in self.param_groups:
                    for p in g["params"]:
                        if p.shape[0] > p.shape[1]:
                            raise ValueError("tall tensors are not supported")
                return super().step()


        class SkipsWide(torch.optim.SGD):
            def __init__(self, params, lr: float = 0.1):
                super().__init__([{"params": [p], "lr": 0.0 if p.shape[0] > 40 else lr} for p in params], lr=lr)


        class NeedsValue(torch.optim.SGD):
            def __init__(self, params, lr):
                super().__init__(params, lr=lr)
        """,
    "fakeopt/helper.py": "SCALE = 1.0\n",
    "fakeopt-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: fakeopt\nVersion: 1.0\n",
    "fakeopt-1.0.dist-info/top_level.txt": "fakeopt\n",
}


@pytest.fixture
def fakeopt(tmp_path, monkeypatch):
    """An installed package `fakeopt` 1.0 (a folder on sys.path with its dist-info)."""
    for rel, text in FAKE_PACKAGE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for name in [m for m in sys.modules if m == "fakeopt" or m.startswith("fakeopt.")]:
        del sys.modules[name]


def test_library_provenance_is_in_the_configuration_key(fakeopt):
    spec = resolve("tiny-cpu", "fakeopt:Scaled", [])
    assert spec.packages["fakeopt"]["version"] == "1.0"
    assert spec.optimizer.name == "fakeopt.Scaled" and "--optimizer" in spec.cli and "fakeopt:Scaled" in spec.cli
    key = spec.key()
    assert resolve("tiny-cpu", "fakeopt:Scaled", []).key() == key  # deterministic
    (fakeopt / "fakeopt/helper.py").write_text("SCALE = 2.0\n")  # a file of the package, not the class's own
    edited = resolve("tiny-cpu", "fakeopt:Scaled", []).key()
    assert edited != key
    metadata = fakeopt / "fakeopt-1.0.dist-info/METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 1.0", "Version: 1.1"))
    assert resolve("tiny-cpu", "fakeopt:Scaled", []).key() not in (key, edited)


def test_shipped_library_modules_record_their_package():
    pytest.importorskip("schedulefree")
    spec = resolve("tiny-cpu", "sfadamw", [])
    assert spec.packages["schedulefree"]["version"] == "1.4.1"
    assert "optimizers/_library.py" in spec.code


# ---- a class by name -----------------------------------------------------------------------------


def test_class_defaults_are_typed_hyperparameters(fakeopt):
    hp = default_hparams(load_optimizer("fakeopt:Scaled"), get_track("tiny-cpu"))
    assert (hp["lr"], hp["betas_0"], hp["betas_1"]) == (0.1, 0.9, 0.99)  # tuples expanded, re-assembled for the class
    assert "eps" not in hp  # a None default is not a hyperparameter: the class keeps it
    with pytest.raises(UserError, match="NeedsValue: constructor argument 'lr' has no default"):
        load_optimizer("fakeopt:NeedsValue")


@pytest.mark.parametrize("name, message", [
    ("fakeopt:MatrixOnly", r"MatrixOnly cannot handle the (embed|head) role \(a tensor of shape \(61, 32\)\): ValueError: tall tensors"),
    ("fakeopt:SkipsWide", r"SkipsWide cannot handle the (embed|head) role .*left the tensor unchanged"),
])
def test_a_class_that_mishandles_a_role_is_refused_in_one_line(fakeopt, name, message):
    spec = load_optimizer(name)
    with pytest.raises(UserError, match=message) as e:
        build_optimizers(spec, GPT(CFG), default_hparams(spec, get_track("tiny-cpu")))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, message", [
    ("torch.optim.Nope", "torch.optim has no torch.optim.Optimizer subclass 'Nope'"),
    ("nopackage_xyz:Opt", "cannot import 'nopackage_xyz'"),
    ("torch.nn.Linear", "no torch.optim.Optimizer subclass 'Linear'"),
])
def test_unknown_classes_are_one_line_errors(name, message):
    with pytest.raises(UserError, match=message) as e:
        load_optimizer(name)
    assert "\n" not in str(e.value)


def test_torch_nadam_by_name_runs(tmp_path, fast_track):
    args = [*DEBUG, "--optimizer", "torch.optim.NAdam", "--steps", "3", "--set", "betas_1=0.95", "--set", "weight_decay=0.01"]
    assert run.main([*args, "--records-dir", str(tmp_path)]) == 0
    row = read_table(tmp_path).iloc[0]
    assert (row.optimizer, row.status, row.steps) == ("torch.optim.NAdam", "ok", 3)
    assert math.isfinite(row.final_val_loss) and row.final_val_loss < math.log(257)
    config = parse_log(tmp_path / row.log).config
    assert config["hparams"]["betas_1"] == 0.95 and config["hparams"]["weight_decay"] == 0.01
    assert "optimizer torch.optim.NAdam (nadam.py)" in config["code_files"]


# ---- the shipped library baselines ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_builds_and_learns(name):
    """Every parameter moves within a few steps (SOAP's first step only sets up its preconditioner)
    and the loss on a repeated batch falls: each baseline's defaults train (the run-level test of
    tests/test_optimizers_train.py covers our own optimizers). The head is drawn at random: with the
    model's zero head the hidden matrices get no gradient at first, and PSGD-Kron's first updates of
    their tiny gradients are below float32 resolution."""
    pytest.importorskip(BASELINES[name])
    model, opts = tiny(name)
    torch.nn.init.normal_(model.lm_head.weight, std=0.02)
    w = train.Workload.local(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = [train.train_step(w, opts, step, batches(0), lr_mult=1.0) for step in range(8)]
    assert all(math.isfinite(x) for x in losses)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), start[n])]
    assert len(moved) == len(start), f"{name} left {set(start) - set(moved)} unchanged"
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 and losses[-1] < losses[0], losses


def test_matrix_baselines_leave_the_other_roles_to_the_auxiliary_adamw():
    model, opts = tiny("torch_muon")
    assert [type(o).__name__ for o in opts] == ["Muon", "AdamW"]
    assert {len(g["params"]) for g in opts[1].param_groups} == {1}  # embedding and head, one group each


# ---- references -----------------------------------------------------------------------------------


def test_torch_muon_matches_our_muon():
    """torch.optim.Muon and optimizers/muon.py set to the same conventions (bf16 orthogonalization,
    damped Nesterov momentum, Keller's shape factor, decoupled decay) take the same steps on a square
    and a tall matrix, up to bf16 rounding."""
    from optimizers._matrix import MATRIX_DEFAULTS, MatrixOptimizer

    torch.manual_seed(0)
    shapes = [(32, 32), (96, 32)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = MatrixOptimizer(ours, **{**MATRIX_DEFAULTS, "lr": 0.02, "weight_decay": 0.1, "ortho_dtype": "bfloat16"})
    b = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, ns_steps=5, eps=1e-7)
    for _ in range(3):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-3)


def test_schedulefree_matches_the_papers_update():
    """AdamWScheduleFree against the paper's Algorithm 1 (Defazio et al. 2024, AdamW form), written out:
    y = (1 - b1) z + b1 x; v = b2 v + (1 - b2) g^2; z -= lr (g / (sqrt(v / (1 - b2^t)) + eps) + wd y);
    c = lr^2 / sum of lr^2 so far; x = (1 - c) x + c z. Gradients of 0.5 |y - target|^2 at y."""
    schedulefree = pytest.importorskip("schedulefree")
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.99, 1e-8, 0.01
    target = torch.tensor([1.0, -2.0, 0.5])
    p = torch.nn.Parameter(torch.tensor([0.3, 0.2, -0.1]))
    opt = schedulefree.AdamWScheduleFree([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    opt.train()
    x, z, v = p.detach().clone(), p.detach().clone(), torch.zeros(3)
    for t in range(1, 6):
        y = (1 - b1) * z + b1 * x
        torch.testing.assert_close(p.detach(), y)
        g = y - target
        p.grad = g.clone()
        opt.step()
        v = b2 * v + (1 - b2) * g * g
        z = z - lr * (g / ((v / (1 - b2**t)).sqrt() + eps) + wd * y)
        c = 1 / t  # lr constant: every step weighs lr^2
        x = (1 - c) * x + c * z
    opt.eval()
    torch.testing.assert_close(p.detach(), x)


def test_adam_like_baselines_start_from_adamws_role_rates():
    from optimizers import adamw
    from optimizers._library import ADAMW_ROLE_RATES

    assert ADAMW_ROLE_RATES == {k: adamw.DEFAULTS[k] for k in ADAMW_ROLE_RATES}
