"""GPU benchmark of a GPT-2 track on one device: per optimizer, tokens/s, step time, model FLOPs
utilisation against the device's bf16 peak, the optimizer step's share, optimizer state and peak
memory; then a short real training run on local shards; then pass/fail for the speed goals.

    python scripts/bench_gpu.py                             # gpt2-small on this GPU, every optimizer, 300-step run
    python scripts/bench_gpu.py --optimizers muon,newton_muon --train-steps 0
    python scripts/bench_gpu.py --device cpu --tiny         # the same code path on CPU, tiny model (CI)

What a "step" is: one GPU's share of one step of the track on --gpus GPUs (default: the track's
hardware class, 8 for 8xH100), i.e. batch_size / gpus sequences in micro-batches, forward +
backward, then the whole optimizer step: the harness's own step (nanogpt.train.train_step).
"fwd+bwd" is the step's time minus the optimizer step's (CUDA events). Gradient all-reduce is not measured (one process), and
Muon-family orthogonalization is not sharded, so the optimizer share here is an upper bound of
the share on 8 GPUs. Tokens are random (speed does not depend on them); weights and optimizer
state are reset after the warmup steps, which cover one Newton-Muon refresh, exactly as run.py does.

MFU = model FLOPs (GPT.flops_per_token: 6 x matmul parameters + causal attention) per second over
the device's dense bf16 peak (PEAK_BF16_TFLOPS, or --peak-tflops). Results go to
benchmarks/<device>-<track>-<time>.{json,md}; record them in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import optimizers
from analysis.launch import subprocess_runner
from analysis.records import read_table
from analysis.stats import fmt
from nanogpt.distributed import device_name, sync
from nanogpt.errors import UserError, entry_point
from nanogpt.model import GPT, compiled
from nanogpt.optim import build_optimizers, default_hparams, load_optimizer
from nanogpt.runlog import parse_log
from nanogpt.runspec import resolve
from nanogpt.timing import RegionTimer
from nanogpt.tracks import ROOT, Track, debug_variant, get_track
from nanogpt.train import Workload, train_step

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, matched against
# torch.cuda.get_device_name() in this order (the first key contained in the name wins).
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM5 ("NVIDIA H100 80GB HBM3"): 1979 with sparsity
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}
BASE_OPTIMIZERS = ("adamw", "sgd", "muon")
VARIANTS = ("normuon", "muon2", "muon2f", "newton_muon", "mona")
MFU_GOAL = 0.40
MUON_SHARE_GOAL = 0.03
NEWTON_OVERHEAD_GOAL = 0.02


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def default_optimizers() -> list[str]:
    shipped = optimizers.available()
    return [*BASE_OPTIMIZERS, *(name for name in VARIANTS if name in shipped)]


def gpus_of(track: Track) -> int:
    m = re.match(r"(\d+)x", track.hardware)
    return int(m[1]) if m else 1


def state_mb(opts: list[torch.optim.Optimizer]) -> float:
    """Bytes held in the optimizers' state tensors (momentum, second moments, statistics)."""
    total = 0
    for o in opts:
        for state in o.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total / 2**20


class SpeedBench:
    """One model (compiled once) and random batches, reused for every optimizer."""

    def __init__(self, track: Track, device: str, gpus: int, compile_model: bool, seed: int = 0):
        if track.batch_size % gpus or (track.batch_size // gpus) % track.micro_batch_size:
            raise UserError(f"--gpus {gpus}: {track.batch_size} sequences do not split into {gpus} GPUs x micro-batches "
                            f"of {track.micro_batch_size}")
        self.track, self.device = track, device
        self.accum = track.batch_size // gpus // track.micro_batch_size
        torch.manual_seed(seed)
        self.model = GPT(track.model).to(device)
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.fast = compiled(self.model) if compile_model else self.model
        gen = torch.Generator(device="cpu").manual_seed(seed)
        seqs = torch.randint(0, 50257 if track.tokenizer == "gpt2" else 256, (self.accum, track.micro_batch_size, track.seq_len + 1),
                             generator=gen)
        self.batches = [(s[:, :-1].to(device), s[:, 1:].to(device)) for s in seqs]
        self.tokens_per_step = self.accum * track.micro_batch_size * track.seq_len
        self.flops_per_token = self.model.flops_per_token(track.seq_len)
        self.workload = Workload.local(self.model, self.fast, device, track.micro_batch_size, self.accum,
                                       track.dtype if device == "cuda" else "float32")

    def step(self, step: int, opts, opt_timer: RegionTimer) -> float:
        """One training step (the harness's own, nanogpt.train.train_step) at a constant learning rate; its wall time."""
        sync(self.device)
        t0 = time.perf_counter()
        train_step(self.workload, opts, step, self.batches, lr_mult=1.0, opt_timer=opt_timer)
        sync(self.device)
        return time.perf_counter() - t0

    def measure(self, name: str, steps: int, warmup: int) -> dict:
        spec = load_optimizer(name)
        hp = default_hparams(spec, self.track)
        self.model.load_state_dict(self.initial)
        opts = build_optimizers(spec, self.model, hp)
        for step in range(warmup):  # compilation, allocator, a Newton-Muon refresh
            self.step(step, opts, RegionTimer(self.device))
        self.model.load_state_dict(self.initial)
        del opts
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        opts = build_optimizers(spec, self.model, hp)
        opt = RegionTimer(self.device)
        times = [self.step(step, opts, opt) for step in range(steps)]
        total = sum(times)
        row = {
            "optimizer": name, "ns_steps": hp.get("ns_steps"), "steps": steps,
            "step_ms": 1000 * total / steps, "step_ms_median": 1000 * statistics.median(times),
            "fwd_bwd_ms": 1000 * (total - opt.total_s()) / steps, "opt_ms": 1000 * opt.total_s() / steps,
            "tokens_per_s": self.tokens_per_step * steps / total,
            "state_mb": state_mb(opts),
            "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None,
        }
        row["opt_share"] = row["opt_ms"] / row["step_ms"]
        del opts
        return row


def add_mfu(rows: list[dict], flops_per_token: int, tokens_per_step: int, peak: float | None) -> None:
    for r in rows:
        step_flops = flops_per_token * tokens_per_step
        r["fwd_bwd_tflops"] = step_flops / (r["fwd_bwd_ms"] / 1000) / 1e12
        r["mfu_fwd_bwd"] = r["fwd_bwd_tflops"] / peak if peak else None
        r["mfu_step"] = step_flops / (r["step_ms"] / 1000) / 1e12 / peak if peak else None


def training_run(track_name: str, tiny: bool, data_dir: Path, steps: int, compile_model: bool) -> dict:
    """A real run.py run of Muon on local shards (recorded as '<track>~local' or '~debug' in a throw-away folder)."""
    if not (data_dir / "fineweb_val_000000.bin").is_file():
        raise UserError(f"no local GPT-2 shards in {data_dir}; run `python data/make_local_gpt2_shards.py` (or pass --data-dir)")
    spec = resolve(track_name, "muon", [], steps, not compile_model, debug_model=tiny, data_dir=str(data_dir))
    with tempfile.TemporaryDirectory() as records:
        code = subprocess_runner()(spec.argv(seed=0, records_dir=records))
        if code != 0:
            raise UserError(f"the training run failed (exit {code}); its output is above")
        row = read_table(records).iloc[0].to_dict()
        evals = parse_log(Path(records) / row["log"]).training.evals
    return {"track": row["track"], "steps": int(row["steps"]), "first_val_loss": evals[0].loss,
            "final_val_loss": row["final_val_loss"], "step_ms": row["step_time_ms"], "opt_share": row["opt_step_share"],
            "tokens_per_s": row["tokens"] / row["train_time_s"], "peak_mem_mb": row["peak_mem_mb"],
            "learned": evals[-1].loss < evals[0].loss}


def _goal(text: str, value: str, passed: bool | None) -> dict:
    return {"goal": text, "value": value, "result": "skipped" if passed is None else ("PASS" if passed else "FAIL")}


def goals(rows: list[dict]) -> list[dict]:
    """The speed goals; one whose optimizers were not measured (or whose peak is unknown) is skipped."""
    by = {r["optimizer"]: r for r in rows}
    missing = _goal("", "not measured", None)
    muon, newton, muon2 = by.get("muon"), by.get("newton_muon"), by.get("muon2")
    out = []
    text = f"fwd+bwd MFU >= {MFU_GOAL:.0%} (Muon run)"
    if muon is None:
        out.append({**missing, "goal": text})
    elif muon["mfu_fwd_bwd"] is None:
        out.append(_goal(text, "bf16 peak unknown (--peak-tflops)", None))
    else:
        out.append(_goal(text, f"{muon['mfu_fwd_bwd']:.1%}", muon["mfu_fwd_bwd"] >= MFU_GOAL))
    text = f"Muon optimizer step <= {MUON_SHARE_GOAL:.0%} of step time"
    out.append({**missing, "goal": text} if muon is None else
               _goal(text, f"{muon['opt_share']:.2%}", muon["opt_share"] <= MUON_SHARE_GOAL))
    text = f"Newton-Muon step <= Muon step + {NEWTON_OVERHEAD_GOAL:.0%}"
    if muon is None or newton is None:
        out.append({**missing, "goal": text})
    else:
        extra = newton["step_ms"] / muon["step_ms"] - 1
        out.append(_goal(text, f"{extra:+.2%}", extra <= NEWTON_OVERHEAD_GOAL))
    text = "Muon² step (its default NS steps) < Muon step"
    if muon is None or muon2 is None:
        out.append({**missing, "goal": text})
    else:
        value = (f"{muon2['step_ms']:.2f} ms ({muon2['ns_steps']} NS steps) vs "
                 f"{muon['step_ms']:.2f} ms ({muon['ns_steps']} NS steps)")
        out.append(_goal(text, value, muon2["step_ms"] < muon["step_ms"]))
    return out



def report(meta: dict, rows: list[dict], train: dict | None, checks: list[dict]) -> str:
    lines = [f"# GPU benchmark: {meta['track']} on {meta['device_name']}", "",
             f"{meta['date']}, torch {meta['torch']}, CUDA {meta['cuda']}, compile {meta['compile']}, "
             f"bf16 peak {fmt(meta['peak_tflops'], '.0f')} TFLOP/s; a step = 1/{meta['gpus']} of the track's batch "
             f"({meta['tokens_per_step']:,} tokens), {meta['steps']} timed steps after {meta['warmup']} warmup steps", "",
             "| optimizer | tokens/s | step (ms) | fwd+bwd (ms) | optimizer (ms) | optimizer share | fwd+bwd MFU | step MFU "
             "| state (MB) | peak memory (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['optimizer']} | {r['tokens_per_s']:,.0f} | {r['step_ms']:.2f} | {r['fwd_bwd_ms']:.2f} | "
                     f"{r['opt_ms']:.2f} | {r['opt_share']:.2%} | {fmt(r['mfu_fwd_bwd'], '.1%')} | {fmt(r['mfu_step'], '.1%')} | "
                     f"{r['state_mb']:.0f} | {fmt(r['peak_mem_mb'], '.0f')} |")
    if train:
        lines += ["", f"Training run ({train['track']}, Muon, {train['steps']} steps on local shards): val loss "
                      f"{train['first_val_loss']:.3f} -> {train['final_val_loss']:.3f}, {train['step_ms']:.1f} ms/step, "
                      f"{train['tokens_per_s']:,.0f} tokens/s, optimizer {train['opt_share']:.1%}, "
                      f"peak memory {train['peak_mem_mb']:.0f} MB"]
    lines += ["", "| goal | measured | result |", "|---|---|---|"]
    lines += [f"| {c['goal']} | {c['value']} | {c['result']} |" for c in checks]
    if meta["device"] != "cuda":
        lines += ["", "Not a GPU: the goals are for GPUs; this run only shows that the benchmark works."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--track", default="gpt2-small")
    p.add_argument("--optimizers", default=",".join(default_optimizers()), help="comma-separated (default: all shipped)")
    p.add_argument("--steps", type=int, default=64, help="timed steps per optimizer (default 64: two Newton-Muon refreshes)")
    p.add_argument("--warmup", type=int, default=32, help="untimed steps before the timed ones (default 32)")
    p.add_argument("--gpus", type=int, default=None, help="a step is 1/GPUS of the track's batch (default: the track's hardware)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="the track's tiny debug model (for CPU and CI)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--train-steps", type=int, default=300, help="steps of the Muon training run on local shards (0: skip)")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "local_gpt2", help="local shards for the training run")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 peak, if not in the table")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="folder for the results files")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device; use --device cpu --tiny to check the benchmark itself on CPU")
    if args.device == "cpu" and not args.tiny:
        raise UserError(f"{args.track} on CPU would take hours per optimizer; add --tiny")
    if args.steps < 1 or args.warmup < 0 or args.train_steps < 0:
        raise UserError("--steps must be positive, --warmup and --train-steps not negative")
    base = get_track(args.track)
    track = debug_variant(base, args.device) if args.tiny else base
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    gpus = args.gpus or gpus_of(track)
    name = device_name(args.device)
    peak = args.peak_tflops or (peak_tflops(name) if args.device == "cuda" else None)
    bench = SpeedBench(track.with_overrides(name=base.name), args.device, gpus, track.compile and not args.no_compile)
    rows = []
    for opt in names:
        rows.append(bench.measure(opt, args.steps, args.warmup))
        r = rows[-1]
        print(f"{opt}: {r['step_ms']:.2f} ms/step, optimizer {r['opt_share']:.2%}, {r['tokens_per_s']:,.0f} tokens/s", flush=True)
    add_mfu(rows, bench.flops_per_token, bench.tokens_per_step, peak)
    train = training_run(base.name, args.tiny, args.data_dir, args.train_steps, not args.no_compile) if args.train_steps else None
    checks = goals(rows)
    now = datetime.datetime.now(datetime.UTC)
    meta = {"track": track.name, "device": args.device, "device_name": name, "peak_tflops": peak, "gpus": gpus,
            "tokens_per_step": bench.tokens_per_step, "flops_per_token": bench.flops_per_token, "steps": args.steps,
            "warmup": args.warmup, "compile": track.compile and not args.no_compile, "date": now.isoformat(timespec="seconds"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    text = report(meta, rows, train, checks)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "device"
    stem = args.out / f"{slug}-{track.name}-{now:%Y%m%d-%H%M%S}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "optimizers": rows, "training_run": train, "goals": checks},
                                                    indent=1) + "\n")
    stem.with_suffix(".md").write_text(text)
    print(f"results: {stem}.json, {stem}.md")
    return stem.with_suffix(".json")


@entry_point()
def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
