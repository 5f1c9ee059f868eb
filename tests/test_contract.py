"""The optimizer contract: loading by name or path, typed --set, the exactly-once check, schedules."""

import re
import textwrap

import pytest
import torch

import optimizers
from nanogpt.errors import UserError
from nanogpt.model import GPT
from nanogpt.optim import apply_overrides, build_optimizers, default_hparams, load_optimizer
from nanogpt.runspec import resolve
from nanogpt.schedule import lr_multiplier
from nanogpt.tracks import ModelConfig, get_track
from optimizers._library import INSTALL_HINT, missing

CFG = ModelConfig(vocab_size=61, n_layer=1, n_head=2, n_embd=32)


def test_registry_lists_shipped_optimizers():
    names = optimizers.available()
    assert {"adamw", "sgd", "muon"} <= set(names)
    assert not any(n.startswith("_") for n in names)


def test_unknown_optimizer_lists_valid_ones():
    with pytest.raises(UserError, match="unknown optimizer 'nope'; valid: .*muon"):
        load_optimizer("nope")


def test_set_is_typed_against_defaults():
    hp = default_hparams(load_optimizer("muon"), get_track("tiny-cpu"))
    out = apply_overrides(hp, ["lr=0.05", "nesterov=false", "ns_steps=3", "orthogonalizer=polar_express"])
    assert out["lr"] == 0.05 and out["nesterov"] is False and out["ns_steps"] == 3
    assert hp["nesterov"] is True  # the defaults are not mutated


@pytest.mark.parametrize(
    "item, message",
    [
        ("lrr=0.1", "unknown hyperparameter; valid keys: .*lr:float"),
        ("lr=fast", "expected float"),
        ("ns_steps=2.5", "expected int"),
        ("nesterov=maybe", "expected a bool"),
        ("lr", "expected KEY=VALUE"),
        ("cooldown_frac=1.5", "must lie in"),
    ],
)
def test_bad_set_names_the_problem(item, message):
    hp = default_hparams(load_optimizer("muon"), get_track("tiny-cpu"))
    with pytest.raises(UserError, match=message):
        apply_overrides(hp, [item])


def write_module(tmp_path, body):
    path = tmp_path / "my_opt.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_load_by_path_and_build(tmp_path):
    path = write_module(tmp_path, """
        import torch
        DEFAULTS = {"lr": 0.1}
        def build(params, hp, model):
            return [torch.optim.SGD([p for ps in params.values() for p in ps], lr=hp["lr"])]
    """)
    spec = load_optimizer(path)
    assert spec.name == "my_opt" and "DEFAULTS" in spec.source and not spec.shipped
    opts = build_optimizers(spec, GPT(CFG), {"lr": 0.1})
    assert opts[0].param_groups[0]["initial_lr"] == 0.1


@pytest.mark.parametrize(
    "body, message",
    [
        ("raise RuntimeError('boom')", "failed to import: RuntimeError: boom"),
        ("def build(params, hp, model): pass", "must define DEFAULTS"),
        ("DEFAULTS = {'lr': 0.1}", "must define build"),
        ("DEFAULTS = {'betas': (0.9, 0.95)}\ndef build(params, hp, model): pass", "not a bool, int, float or str"),
    ],
)
def test_broken_modules_are_reported(tmp_path, body, message):
    with pytest.raises(UserError, match=message):
        load_optimizer(write_module(tmp_path, body))


@pytest.mark.parametrize(
    "expr, message",
    [
        ("params['matrix'] + params['scalar']", "not handled: wte.weight"),
        ("[p for ps in params.values() for p in ps] + params['matrix'][:1]", "handled more than once"),
        ("[p for ps in params.values() for p in ps] + [torch.nn.Parameter(torch.zeros(1))]", "not model parameters"),
    ],
)
def test_every_parameter_exactly_once(tmp_path, expr, message):
    path = write_module(tmp_path, f"""
        import torch
        DEFAULTS = {{}}
        def build(params, hp, model):
            return [torch.optim.SGD({expr}, lr=0.1)]
    """)
    with pytest.raises(UserError, match=message):
        build_optimizers(load_optimizer(path), GPT(CFG), {})


def test_build_must_return_optimizers(tmp_path):
    path = write_module(tmp_path, "DEFAULTS = {}\ndef build(params, hp, model):\n    return [42]\n")
    with pytest.raises(UserError, match="must return a list of torch.optim.Optimizer"):
        build_optimizers(load_optimizer(path), GPT(CFG), {})


def test_shipped_optimizers_cover_the_model():
    model = GPT(get_track("tiny-cpu").model)
    for name in optimizers.available():
        spec = load_optimizer(name)
        if missing(spec.module):  # a library baseline without the `baselines` extra (tests/test_library_optimizers.py)
            continue
        opts = build_optimizers(spec, model, default_hparams(spec, get_track("tiny-cpu")))
        assert all(isinstance(o, torch.optim.Optimizer) for o in opts)


def test_schedule_shape():
    mult = [lr_multiplier(s, 100, 0.1, 0.4, 0.0) for s in range(100)]
    assert mult[0] == pytest.approx(0.1) and mult[9] == 1.0
    assert all(m == 1.0 for m in mult[10:60])
    assert all(a > b for a, b in zip(mult[60:], mult[61:]))
    assert mult[-1] == pytest.approx(1 / 40)
    assert lr_multiplier(99, 100, 0.0, 0.4, 0.1) == pytest.approx(0.1 + 0.9 / 40)


def test_roles_a_module_leaves_go_to_the_auxiliary_adamw(tmp_path):
    """ROLES = ("matrix",): build() sees only the matrices; the embedding and head go to the Muon
    family's auxiliary AdamW, whose hyperparameters join the module's (its own win on a clash)."""
    path = write_module(tmp_path, """
        import torch
        ROLES = ("matrix",)
        DEFAULTS = {"lr": 0.1, "head_lr": 0.5}
        SEEN = []
        def build(params, hp, model):
            SEEN.append({role: len(ps) for role, ps in params.items()})
            return [torch.optim.SGD(params["matrix"], lr=hp["lr"])]
    """)
    spec = load_optimizer(path)
    hp = default_hparams(spec, get_track("tiny-cpu"))
    assert hp["head_lr"] == 0.5 and hp["embed_lr"] == 0.3 and hp["adam_beta1"] == 0.8
    opts = build_optimizers(spec, GPT(CFG), hp)
    assert spec.module.SEEN == [{"matrix": 6, "embed": 0, "head": 0, "scalar": 0}]
    assert [type(o).__name__ for o in opts] == ["SGD", "AdamW"]
    assert sorted(g["lr"] for g in opts[1].param_groups) == [0.3, 0.5]


@pytest.mark.parametrize("roles", ['("embed", "head")', '("matrix", "bias")', '["matrix"]'])
def test_bad_roles_are_refused(tmp_path, roles):
    path = write_module(tmp_path, f"DEFAULTS = {{}}\nROLES = {roles}\ndef build(params, hp, model): pass\n")
    with pytest.raises(UserError, match="ROLES must be a tuple of roles among matrix, embed, head, scalar that includes 'matrix'"):
        load_optimizer(path)


def test_a_module_whose_library_is_missing_still_loads_and_says_how_to_install(tmp_path):
    """--list must work without the `baselines` extra: the module imports; running it names the package."""
    path = write_module(tmp_path, """
        from optimizers._library import load
        LIBRARIES = ("not_installed_xyz",)
        DEFAULTS = {"lr": 0.1}
        def build(params, hp, model):
            return [load("not_installed_xyz", "Opt")(params["matrix"], lr=hp["lr"])]
    """)
    spec = load_optimizer(path)
    assert missing(spec.module) == ["not_installed_xyz"]
    with pytest.raises(UserError, match=re.escape(f"needs the not_installed_xyz package: {INSTALL_HINT}")):
        build_optimizers(spec, GPT(CFG), {"lr": 0.1})
    with pytest.raises(UserError, match="'not_installed_xyz', which is not installed"):
        resolve("tiny-cpu", path, [])
