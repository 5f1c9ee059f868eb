"""Compare the GPT-2 tracks with the golden fixtures of the records they name.

The fixtures (tests/fixtures/records/, see its README) were produced by running the modded-nanogpt
record scripts themselves at a tiny size on CPU in float32. For each one this builds our model
from the track's own ModelConfig, shrunk to the fixture's size with dataclasses.replace (plus the
overrides in CASES, each saying why), loads the fixture's start weights, and compares:

- the loss and the gradients at the start state;
- the parameters after 1 and 3 steps of the track's default optimizer (Muon + auxiliary AdamW,
  built by nanogpt.optim exactly as a run builds them) stepped by the harness's own train_step,
  with the harness's own learning-rate schedule (checked against the record's get_lr).

Names and layouts are mapped as the fixture README §9 says: the 10/10 record's fused c_attn is
split into our c_q, c_k, c_v, and the record rotates RoPE in the opposite sense to ours, which is
exactly our model with the second half of every head's q and k weight rows negated (checked on
the fixture's RoPE probe). Relative errors are ||ours - record|| / ||record|| per tensor.

    python scripts/compare_records.py            # every fixture, the max differences
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanogpt.errors import entry_point
from nanogpt.model import GPT, Rotary
from nanogpt.optim import build_optimizers, default_hparams, load_optimizer
from nanogpt.schedule import lr_multiplier
from nanogpt.tracks import ROOT, ModelConfig, Track, get_track
from nanogpt.train import Workload, train_step

FIXTURES = ROOT / "tests" / "fixtures" / "records"
# fixture -> (track, ModelConfig fields changed beyond the size, why)
CASES = {
    "rec-2024-10-10-muon": ("gpt2-muon-2024", {}, "the track is the record"),
    "rec-2024-11-03-untie": ("gpt2-small", {"logit_cap": 0.0, "rope_table_dtype": "float32"},
                             "the 11/03 record without the 11/06 soft-cap line; the fixture keeps RoPE tables in float32"),
    "rec-2024-11-03-untie+softcap30": ("gpt2-small", {"rope_table_dtype": "float32"},
                                       "the fixture keeps RoPE tables in float32 (its bf16-table loss is checked separately)"),
}
OPTIMIZER = "muon"  # the GPT-2 tracks' default optimizer
STEPS_COMPARED = (1, 3)


@dataclass
class Fixture:
    name: str
    arrays: dict[str, np.ndarray]
    meta: dict

    @classmethod
    def load(cls, name: str, folder: Path = FIXTURES) -> Fixture:
        with np.load(folder / f"{name}.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(name, arrays, json.loads(str(arrays.pop("meta_json"))))

    @property
    def names(self) -> list[str]:
        return [p["name"] for p in self.meta["parameters"]]

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        """The record's parameters under `prefix` (init, grad, step1, step3); `start` is init with the
        replaced zero-initialised parameters (README §3)."""
        if prefix == "start":
            return {n: self.arrays.get(f"start__{n}", self.arrays[f"init__{n}"]) for n in self.names}
        return {n: self.arrays[f"{prefix}__{n}"] for n in self.names}

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.from_numpy(self.arrays["tokens"][step])
        return tokens[:, :-1], tokens[:, 1:]


def model_config(track: Track, fixture: Fixture, changes: dict) -> ModelConfig:
    size = fixture.meta["config"]
    return dataclasses.replace(track.model, vocab_size=size["vocab_size"], n_layer=size["n_layer"],
                               n_head=size["n_head"], n_embd=size["n_embd"], **changes)


def rope_sign(n_embd: int, n_head: int) -> torch.Tensor:
    """±1 per q/k weight row: -1 on the second half of every head (README §9)."""
    hd = n_embd // n_head
    sign = torch.ones(n_head, hd)
    sign[:, hd // 2 :] = -1
    return sign.reshape(-1, 1)


def rope_needs_sign_map(fixture: Fixture, cfg: ModelConfig) -> bool:
    """Which map makes our RoPE the record's, from the fixture's probe: record(x) = S·ours(S·x) when
    the senses are opposite (S negates the second half of each head), record(x) = ours(x) otherwise."""
    x = torch.from_numpy(fixture.arrays["rope_probe_in"]).transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)
    want = torch.from_numpy(fixture.arrays["rope_probe_out"]).transpose(1, 2)
    rotary = Rotary(x.size(-1), cfg.rope_base, "float32")
    s = torch.ones(x.size(-1))
    s[x.size(-1) // 2 :] = -1
    if torch.allclose(rotary(x), want, atol=1e-6):
        return False
    assert torch.allclose(s * rotary(s * x), want, atol=1e-6), "neither RoPE sense matches the record's probe"
    return True


def to_ours(tensors: dict[str, np.ndarray], cfg: ModelConfig, sign_map: bool) -> dict[str, torch.Tensor]:
    """The record's parameter (or gradient) tensors under our names and layout (README §9)."""
    sign = rope_sign(cfg.n_embd, cfg.n_head) if sign_map else torch.ones(cfg.n_embd, 1)
    out = {}
    for name, array in tensors.items():
        t = torch.from_numpy(np.array(array, dtype=np.float32))
        if name in ("transformer.wte.weight", "lm_head.weight"):
            out[name.removeprefix("transformer.")] = t
            continue
        m = re.fullmatch(r"transformer\.h\.(\d+)\.(attn|mlp)\.(c_attn|c_q|c_k|c_v|c_proj|c_fc)\.weight", name)
        if m is None:
            raise KeyError(f"unknown record parameter {name}")
        i, module, kind = m.groups()
        parts = dict(zip(("c_q", "c_k", "c_v"), t.chunk(3))) if kind == "c_attn" else {kind: t}
        for kind, w in parts.items():
            out[f"blocks.{i}.{module}.{kind}.weight"] = sign * w if kind in ("c_q", "c_k") else w
    return out


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref.double()).norm() / ref.double().norm()).item()


def max_rel(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    assert set(ours) == set(ref), sorted(set(ours) ^ set(ref))
    return max(rel(ours[n], ref[n]) for n in ref)


@dataclass
class Comparison:
    fixture: str
    track: str
    loss: float  # max |our loss - the record's| over the 3 steps' forwards
    grad: float  # max relative gradient error at the start state
    params: dict[int, float]  # steps -> max relative parameter error
    updates: dict[int, float]  # steps -> max relative error of p_k - p_0
    lr_mults: list[float]  # the harness's lr multiplier at steps 0..2


def start_model(name: str, changes: dict | None = None, folder: Path = FIXTURES):
    """(fixture, track, our model at the fixture's start state, its weights by name, whether the RoPE
    sign map is applied). `changes` replaces CASES' ModelConfig overrides."""
    track_name, case_changes, _ = CASES[name]
    track, fixture = get_track(track_name), Fixture.load(name, folder)
    cfg = model_config(track, fixture, case_changes if changes is None else changes)
    sign_map = rope_needs_sign_map(fixture, cfg)
    torch.manual_seed(0)
    model = GPT(cfg)
    start = to_ours(fixture.tensors("start"), cfg, sign_map)
    model.load_state_dict(start, strict=True)
    assert {n for n, _ in model.named_parameters()} == set(start), "every parameter comes from the fixture"
    return fixture, track, model, start, sign_map


def compare(name: str, changes: dict | None = None, folder: Path = FIXTURES) -> Comparison:
    """Our track's model and default optimizer against one record fixture. `changes` replaces
    CASES' ModelConfig overrides (the tests use it to check that the comparison can fail)."""
    fixture, track, model, start, sign_map = start_model(name, changes, folder)
    cfg = model.cfg
    x, y = fixture.batch(0)
    model(x, y).backward()
    grad = max_rel({n: p.grad for n, p in model.named_parameters()}, to_ours(fixture.tensors("grad"), cfg, sign_map))
    model.zero_grad(set_to_none=True)

    spec = load_optimizer(OPTIMIZER)
    hp = default_hparams(spec, track)
    opts = build_optimizers(spec, model, hp)
    mults = [lr_multiplier(s, hp["steps"], hp["warmup_frac"], hp["cooldown_frac"], hp["final_lr_mult"]) for s in range(3)]
    w = Workload.local(model)
    losses, params, updates = [], {}, {}
    for s in range(max(STEPS_COMPARED)):
        losses.append(train_step(w, opts, s, [fixture.batch(s)], mults[s]))
        if s + 1 in STEPS_COMPARED:
            ours = {n: p.detach() for n, p in model.named_parameters()}
            ref = to_ours(fixture.tensors(f"step{s + 1}"), cfg, sign_map)
            params[s + 1] = max_rel(ours, ref)
            updates[s + 1] = max_rel({n: ours[n] - start[n] for n in ours}, {n: ref[n] - start[n] for n in ref})
    loss = max(abs(a - b) for a, b in zip(losses, fixture.arrays["losses"]))
    return Comparison(name, track.name, loss, grad, params, updates, mults)


def record_lr_multipliers(name: str, folder: Path = FIXTURES) -> tuple[list[float], list[float]]:
    """(the harness's multipliers, the record's get_lr) at the fixture's schedule probe steps, and the
    fixture's lr_used divided by each optimizer's initial lr must be the harness's at steps 0..2."""
    track = get_track(CASES[name][0])
    fixture = Fixture.load(name, folder)
    hp = default_hparams(load_optimizer(OPTIMIZER), track)
    ours = [lr_multiplier(int(s), hp["steps"], hp["warmup_frac"], hp["cooldown_frac"], hp["final_lr_mult"])
            for s in fixture.arrays["lr_schedule_steps"]]
    return ours, [float(m) for m in fixture.arrays["lr_schedule_mult"]]


@entry_point()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print, for each record fixture, the max |loss difference| and the max "
                                     "relative gradient, parameter and update errors of its GPT-2 track (a few seconds).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--fixtures", default=str(FIXTURES), help="folder holding the rec-*.npz fixtures")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'fixture':34} {'track':15} {'max |dloss|':>11} {'grad rel':>9} {'params@1':>9} {'params@3':>9} "
          f"{'update@1':>9} {'update@3':>9}")
    for name in CASES:
        c = compare(name, folder=Path(args.fixtures))
        print(f"{c.fixture:34} {c.track:15} {c.loss:11.2e} {c.grad:9.2e} {c.params[1]:9.2e} {c.params[3]:9.2e} "
              f"{c.updates[1]:9.2e} {c.updates[3]:9.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
