"""The GPT-2 tracks are the records they name, proven against golden data produced by running the
modded-nanogpt record scripts themselves (tests/fixtures/records, see its README: 10/10/24 Muon,
11/03/24 UntieEmbed, and 11/03/24 plus the 11/06/24 soft-cap line).

Our model is built from each track's own ModelConfig, shrunk to the fixture's size, with the
fixture's weights (names and layouts mapped as the README §9 says); the optimizer is the track's
default Muon + auxiliary AdamW exactly as `default_hparams` and `build_optimizers` build them,
stepped by the harness's `train_step` with the harness's schedule. scripts/compare_records.py does
the comparison and prints the numbers these tests bound.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import load_script

from nanogpt.model import GPT
from nanogpt.tracks import get_track

cr = load_script("compare_records")


@pytest.mark.parametrize("name", list(cr.CASES))
def test_track_matches_the_record_loss_gradients_and_steps(name):
    c = cr.compare(name)
    assert c.loss < 1e-5  # every step's forward (the record's losses are 5-16)
    assert c.grad < 1e-4
    assert max(c.params.values()) < 1e-4 and sorted(c.params) == [1, 3]
    assert max(c.updates.values()) < 1e-4  # the accumulated update p_k - p_0, a far finer check
    fixture = cr.Fixture.load(name)
    for opt, used in zip(fixture.meta["optimizers"], fixture.arrays["lr_used"]):
        assert list(used / opt["param_groups"][0]["initial_lr"]) == pytest.approx(c.lr_mults, rel=1e-12)


@pytest.mark.parametrize("name", list(cr.CASES))
def test_the_harness_schedule_is_the_records_get_lr(name):
    ours, record = cr.record_lr_multipliers(name)
    assert ours == pytest.approx(record, abs=1e-12)


@pytest.mark.parametrize("name", list(cr.CASES))
def test_the_optimizer_is_built_with_the_records_hyperparameters(name):
    """Learning rates, betas, eps, decay and momentum of the track's defaults equal what the record built."""
    fixture, track, model, _, _ = cr.start_model(name)
    spec = cr.load_optimizer(cr.OPTIMIZER)
    opts = cr.build_optimizers(spec, model, cr.default_hparams(spec, track))
    ours = {id(p): (o, g) for o in opts for g in o.param_groups for p in g["params"]}
    names = {n: p for n, p in model.named_parameters()}
    for record in fixture.meta["optimizers"]:
        (group,) = record["param_groups"]
        for rec_name in group["params"]:
            our_name = next(iter(cr.to_ours({rec_name: fixture.arrays[f"init__{rec_name}"]}, model.cfg, False)))
            opt, g = ours[id(names[our_name])]
            assert g["lr"] == pytest.approx(group["lr"], rel=1e-12)
            if "betas" in group:  # Adam / AdamW
                assert isinstance(opt, torch.optim.AdamW) and list(g["betas"]) == group["betas"]
                assert g["eps"] == group["eps"] and g["weight_decay"] == group["weight_decay"] == 0
            else:  # the record's Muon
                assert (g["momentum"], g["nesterov"], g["ns_steps"], g["weight_decay"]) == (
                    group["momentum"], group["nesterov"], group["backend_steps"], 0.0)
                assert g["orthogonalizer"] == "ns5" and g["momentum_form"] == "sum"


def test_the_comparison_detects_each_architectural_difference():
    """The harness's former forms fail (fixture README §13): each alone moves the loss past 1e-5."""
    arch = cr.CASES["rec-2024-10-10-muon"][1]
    for change in ({"embed_norm": True}, {"attn_out_depth_scale": False}, {"qk_norm": True},
                   {"mlp": "gelu_tanh"}):
        assert cr.compare("rec-2024-10-10-muon", {**arch, **change}).loss > 1e-5, change
    # the 11/06 soft-cap: with it the plain 11/03 fixture fails, without it the capped one does
    assert cr.compare("rec-2024-11-03-untie", {"rope_table_dtype": "float32"}).loss > 1.0
    assert cr.compare("rec-2024-11-03-untie+softcap30", {"logit_cap": 0.0, "rope_table_dtype": "float32"}).loss > 1.0


@pytest.mark.parametrize("name", ["rec-2024-11-03-untie", "rec-2024-11-03-untie+softcap30"])
def test_bfloat16_rope_tables_give_the_unmodified_records_loss(name):
    """The track keeps the record's bf16-rounded RoPE tables; the fixture replaced them by float32
    tables and records the loss of the unmodified code separately (README §4)."""
    changes = {k: v for k, v in cr.CASES[name][1].items() if k != "rope_table_dtype"}
    fixture, _, model, _, _ = cr.start_model(name, changes)
    assert model.cfg.rope_table_dtype == "bfloat16"
    with torch.no_grad():
        loss = model(*fixture.batch(0)).item()
    assert abs(loss - fixture.meta["loss_with_bf16_rope_cache"]) < 1e-5
    assert abs(loss - fixture.arrays["losses"][0]) > 1e-5  # the tables matter at this resolution


@pytest.mark.parametrize("name", list(cr.CASES))
def test_rope_differs_from_the_record_only_by_the_q_k_sign_map(name):
    fixture, _, model, _, _ = cr.start_model(name)
    assert cr.rope_needs_sign_map(fixture, model.cfg)


def _moments(tensors: list[torch.Tensor]) -> dict[str, float]:
    """Pooled population std, mean, excess kurtosis and absmax, in float64, a slice at a time."""
    n = sum(t.numel() for t in tensors)
    total = sum(t.double().sum().item() for t in tensors)
    mean = total / n
    m2 = m4 = 0.0
    absmax = 0.0
    for t in tensors:
        for chunk in t.reshape(-1).split(1 << 22):
            d = chunk.double() - mean
            d2 = d * d
            m2 += d2.sum().item()
            m4 += (d2 * d2).sum().item()
            absmax = max(absmax, chunk.abs().max().item())
    var = m2 / n
    return {"numel": n, "mean": mean, "std": math.sqrt(var), "excess_kurtosis": m4 / n / var**2 - 3 if var else None,
            "absmax": absmax}


def _our_tensors(model: GPT, kind: str) -> list[torch.Tensor]:
    """Our tensors of one of the record's weight kinds (README §11): its c_attn is our c_q, c_k, c_v."""
    params = dict(model.named_parameters())
    if kind in ("transformer.wte.weight", "lm_head.weight"):
        return [params[kind.removeprefix("transformer.")].detach()]
    module, name = kind.split(".")[:2]
    names = ("c_q", "c_k", "c_v") if name == "c_attn" else (name,)
    return [params[f"blocks.{i}.{module}.{n}.weight"].detach() for i in range(model.cfg.n_layer) for n in names]


@pytest.mark.parametrize("name", ["rec-2024-10-10-muon", "rec-2024-11-03-untie"])
def test_initialisation_at_the_real_width_matches_the_record(name):
    """Each weight kind of the track's full-size model has the record's distribution: std and mean
    within 5 standard errors of the record's sample (two independent samples), the record's
    kurtosis (uniform -1.2, normal 0), its uniform bound, and exact zeros where it zero-initialises."""
    fixture = cr.Fixture.load(name)
    stats = fixture.meta["init_stats_real_width"]
    track = get_track(cr.CASES[name][0])
    size = {k: getattr(track.model, k) for k in ("vocab_size", "n_layer", "n_head", "n_embd")}
    assert size == stats["config"]  # the track is the record's size
    torch.manual_seed(0)
    model = GPT(track.model)
    covered = 0
    for kind, rec in stats["per_kind"].items():
        tensors = _our_tensors(model, kind)
        covered += sum(t.numel() for t in tensors)
        ours = _moments(tensors)
        assert ours["numel"] == rec["numel"], kind
        if rec["expected"]["distribution"] == "zero":
            assert ours["absmax"] == 0.0, kind
            continue
        k = rec["excess_kurtosis"]
        se_std = rec["std"] * math.sqrt((k + 2) / (4 * rec["numel"]))  # standard error of a sample std
        assert abs(ours["std"] - rec["std"]) < 5 * math.sqrt(2) * se_std, (kind, ours["std"], rec["std"])
        assert abs(ours["std"] - rec["expected"]["std"]) < 5 * se_std, kind
        assert abs(ours["mean"] - rec["mean"]) < 5 * math.sqrt(2) * rec["std"] / math.sqrt(rec["numel"]), kind
        assert abs(ours["excess_kurtosis"] - k) < 0.05, (kind, ours["excess_kurtosis"], k)
        if rec["expected"]["distribution"] == "uniform":
            bound = rec["expected"]["bound"]
            assert bound * (1 - 1e-4) < ours["absmax"] <= bound * (1 + 1e-6), kind
    assert covered == sum(p.numel() for p in model.parameters())  # every weight was compared
    del model
