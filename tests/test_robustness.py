"""The robustness measurements on known inputs: effective rank, logit margins, the seeded corruption
suite, which checkpoints the matched-budget and matched-loss comparisons pick, and the report's
tables and figures on synthetic metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import load_script

from analysis import plots
from analysis import robustness as rb
from nanogpt.errors import UserError
from nanogpt.tokenizer import BYTES_EOT

TEXT = "The Fulton County Grand Jury said Friday an investigation of recent primary elections produced no evidence."


def test_effective_rank_of_known_matrices():
    assert rb.effective_rank(torch.eye(6), center=False) == pytest.approx(6.0)
    assert rb.effective_rank(torch.diag(torch.tensor([3.0, 3.0, 0.0, 0.0])), center=False) == pytest.approx(2.0)
    rank_one = torch.outer(torch.randn(50), torch.randn(8))
    assert rb.effective_rank(rank_one, center=False) == pytest.approx(1.0, abs=1e-6)
    q = np.array([4.0, 1.0]) / 5  # singular values 2 and 1: q = s² / sum s²
    assert rb.effective_rank(torch.diag(torch.tensor([2.0, 1.0])), center=False) == pytest.approx(math.exp(-(q * np.log(q)).sum()))
    assert rb.effective_rank(torch.zeros(5, 3)) == 0.0


def test_centring_removes_a_common_offset():
    h = torch.randn(400, 16) + 100 * torch.ones(16)  # every token shares one large offset
    assert rb.effective_rank(h, center=False) < 1.1
    assert rb.effective_rank(h, center=True) > 14


def test_logit_margins_of_known_logits():
    logits = torch.tensor([[3.0, 1.0, 0.5], [0.0, 2.0, 2.5], [1.0, 1.0, 0.0]])
    margins = rb.logit_margins(logits, torch.tensor([0, 1, 0]))
    assert margins.tolist() == [2.0, -0.5, 0.0]


@pytest.mark.parametrize("kind", rb.TEXT_CORRUPTIONS)
def test_text_corruptions_are_seeded_and_zero_severity_is_clean(kind):
    assert rb.corrupt_text(TEXT, kind, 0, seed=3) == TEXT
    assert rb.corrupt_text(TEXT, kind, 5, seed=3) == rb.corrupt_text(TEXT, kind, 5, seed=3) != TEXT
    assert rb.corrupt_text(TEXT, kind, 5, seed=3) != rb.corrupt_text(TEXT, kind, 5, seed=4)


def test_corruption_strength_grows_with_severity():
    changed = [sum(a != b for a, b in zip(TEXT * 20, rb.corrupt_text(TEXT * 20, "char_substitute", s, seed=0))) for s in range(6)]
    assert changed[0] == 0 and changed == sorted(changed) and changed[5] > 3 * changed[1]
    words = (TEXT * 3).split()
    kept = rb.corrupt_text(TEXT * 3, "word_delete", 5, seed=1).split()
    assert set(kept) <= set(words) and len(kept) < len(words)
    swapped = rb.corrupt_text(TEXT, "char_swap", 5, seed=2)
    assert sorted(swapped) == sorted(TEXT) and len(swapped) == len(TEXT)


def test_token_replacement_keeps_separators_and_rate():
    tokens = np.random.default_rng(0).integers(0, 256, size=20000)
    tokens[::100] = BYTES_EOT
    assert np.array_equal(rb.replace_tokens(tokens, 0, 7, 257, BYTES_EOT), tokens)
    out = rb.replace_tokens(tokens, 3, 7, 257, BYTES_EOT)
    assert np.array_equal(out, rb.replace_tokens(tokens, 3, 7, 257, BYTES_EOT))
    assert (out[::100] == BYTES_EOT).all() and ((out == BYTES_EOT) == (tokens == BYTES_EOT)).all()
    changed = (out != tokens).mean()
    assert abs(changed - rb.RATES[3] * 255 / 256) < 0.01  # a replacement can redraw the same token


def test_bad_corruption_arguments_are_user_errors():
    with pytest.raises(UserError, match="unknown corruption"):
        rb.corrupt_text(TEXT, "shout", 1, 0)
    with pytest.raises(UserError, match="out of range"):
        rb.corrupt_text(TEXT, "char_swap", 6, 0)


def table(rows: list[tuple[str, int, int, float]]) -> pd.DataFrame:
    """A records table with checkpoints: (optimizer, steps, seed, final val loss) per run."""
    return pd.DataFrame([{
        "run_id": f"{o}-{t}-{s}", "track": "tiny-cpu", "status": "ok", "checkpoint": f"logs/{o}-{t}-{s}.pt", "optimizer": o,
        "seed": s, "steps": t, "final_val_loss": loss, "hparams": json.dumps({"lr": 0.1, "steps": t}),
    } for o, t, s, loss in rows])


RUNS = table([("muon", 400, 0, 1.55), ("muon", 400, 1, 1.56), ("muon", 250, 0, 1.66), ("muon", 250, 1, 1.67),
              ("adamw", 400, 0, 1.70), ("adamw", 400, 1, 1.72), ("adamw", 1000, 0, 1.65), ("adamw", 1000, 1, 1.66)])


def test_matched_budget_takes_the_shared_schedule_length():
    runs = rb.select_runs(RUNS, "tiny-cpu")
    chosen, steps = rb.matched_budget(runs)
    assert steps == 400 and set(chosen["run_id"]) == {"muon-400-0", "muon-400-1", "adamw-400-0", "adamw-400-1"}
    with pytest.raises(UserError, match="available: 250, 400, 1000"):
        rb.matched_budget(runs, 600)


def test_matched_loss_takes_the_closest_complete_schedule():
    chosen, level = rb.matched_loss(rb.select_runs(RUNS, "tiny-cpu"))
    assert level == pytest.approx(1.655)  # AdamW's best mean loss: the lowest level every optimizer reaches
    assert set(chosen["run_id"]) == {"muon-250-0", "muon-250-1", "adamw-1000-0", "adamw-1000-1"}


def test_select_runs_needs_checkpoints():
    no_ckpt = RUNS.assign(checkpoint="")
    with pytest.raises(UserError, match="--save-checkpoint"):
        rb.select_runs(no_ckpt, "tiny-cpu")
    with pytest.raises(UserError, match="no checkpoints of sgd"):
        rb.select_runs(RUNS, "tiny-cpu", optimizers=["sgd"])


def synthetic_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows as evaluate_checkpoint writes them (layers 0-2, every corruption and severity, transfer), with
    values that depend on the run, so that means and stds are not degenerate."""
    rows = []
    for i, run_id in enumerate(runs["run_id"]):
        base = 1 + 0.1 * i
        for layer in range(3):
            rows += [{"metric": m, "layer": float(layer), "value": base * (layer + 1) + k} for k, m in
                     enumerate(("erank", "erank_uncentred", "probe_margin_clean", "probe_margin_corrupted"))]
        rows += [{"metric": "loss_increase", "corruption": c, "severity": sev, "value": 0.01 * sev * base}
                 for c in rb.CORRUPTIONS for sev in rb.SEVERITIES]
        rows += [{"metric": m, "value": base + k} for k, m in
                 enumerate(("transfer_zero_shot_loss", "transfer_finetune_loss", "transfer_probe_loss"))]
        for r in rows:
            r.setdefault("run_id", run_id)
    return pd.DataFrame(rows, columns=["run_id", "metric", "layer", "corruption", "severity", "value"])


def test_robustness_figures_draw_every_label_and_panel(tmp_path):
    runs, _ = rb.matched_budget(rb.select_runs(RUNS, "tiny-cpu"))
    metrics = synthetic_metrics(runs)
    values = rb.headline(metrics)
    colors = plots.colors(sorted(runs["label"].unique()))
    # each optimizer's colour in every figure (the leaderboard's too), not an order within this one
    assert colors == {"adamw": plots.optimizer_color("adamw"), "muon": plots.optimizer_color("muon")}
    drawn = plots.robustness_comparison(tmp_path / "r.png", "matched budget: 400 steps", runs, metrics, values, "erank", colors)
    assert drawn["path"].exists() and drawn["panels"][0] == "effective rank of hidden states (centred)"
    assert drawn["labels"][0] == ["adamw", "muon"] and drawn["labels"][3] == ["adamw", "muon"]
    assert drawn["labels"][1] == ["adamw clean", "muon clean", "adamw corrupted", "muon corrupted"]
    drawn = plots.robustness_corruptions(tmp_path / "c.png", "matched budget", runs, metrics, colors)
    assert drawn["path"].exists() and drawn["panels"] == [*rb.CORRUPTIONS, "mean over kinds"]
    assert drawn["labels"][0] == ["adamw", "muon"]


def test_robustness_report_writes_the_tables_and_plots(tmp_path):
    script = load_script("robustness")
    assert script.mean_std_cell(math.nan, math.nan, 0) == "—"
    assert script.mean_std_cell(1.5, math.nan, 1) == "1.500" and script.mean_std_cell(1.5, 0.1, 3) == "1.500 ± 0.100"
    runs = rb.select_runs(RUNS, "tiny-cpu")
    budget, _ = rb.matched_budget(runs)
    matched, _ = rb.matched_loss(runs)
    comparisons = {"matched_budget": (budget, "400 steps"), "matched_loss": (matched, "closest")}
    script.report(tmp_path, comparisons, runs, synthetic_metrics(runs), "erank", "# header\n")
    names = {p.name for p in tmp_path.iterdir()}
    assert {"summary.md", "summary.csv", "aggregate.csv", "robustness_matched_budget.png", "corruption_matched_loss.png"} <= names
    md = (tmp_path / "summary.md").read_text()
    assert "## matched budget: 400 steps" in md and "| muon | 2 | 400 |" in md and "| adamw | 2 | 1000 |" in md

