"""The GPT-2 speedrun tracks on a machine without a GPU: their numbers are the speedrun's, a real
run refuses cleanly, and the same code path (GPT-2 tokens, the track's architecture, run.py,
the GPU benchmark) runs end to end on CPU with a tiny model and local shards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import run
from analysis.records import read_table
from data.tokenize_corpus import tokenize_documents
from nanogpt import tracks
from nanogpt.data import TokenStream
from nanogpt.errors import UserError


def test_gpt2_tracks_carry_the_speedrun_numbers():
    small, medium = tracks.get_track("gpt2-small"), tracks.get_track("gpt2-medium")
    oct24, one = tracks.get_track("gpt2-muon-2024"), tracks.get_track("gpt2-1gpu")
    assert small.tokens_per_step == 524_288 and small.seq_len == 1024 and small.val_tokens == 10_485_760
    assert (small.target, medium.target, oct24.target) == (3.28, 2.92, 3.28)
    assert (small.model.n_layer, small.model.n_embd, small.model.vocab_size) == (12, 768, 50304)
    assert (medium.model.n_layer, medium.model.n_embd) == (24, 1024)
    assert oct24.steps == oct24.max_steps == 6200 and oct24.model.tie_embeddings and oct24.model.mlp == "gelu"
    assert oct24.model.logit_cap == 0 and oct24.model.vocab_size == 50257
    assert one.hardware == "1xH100" and small.hardware == medium.hardware == "8xH100"
    for t in (small, medium, oct24, one):
        assert t.device == "cuda" and t.dtype == "bfloat16" and t.tokenizer == "gpt2" and t.steps <= t.max_steps
        assert t.batch_size % 8 == 0  # 1, 2, 4 or 8 GPUs split the batch evenly


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_a_gpu_track_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    assert run.main(["--track", "gpt2-small", "--records-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err and "--debug-model" in err
    assert not (tmp_path / "records.csv").exists()


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory) -> Path:
    """A few GPT-2-token shards, named like FineWeb's, from the first Brown documents."""
    out = tmp_path_factory.mktemp("local_gpt2")
    with open(tracks.ROOT / "data" / "brown" / "brown.jsonl", encoding="utf-8") as f:
        docs = [json.loads(next(f))["text"] for _ in range(12)]
    paths = tokenize_documents(docs, out, prefix="fineweb", shard_size=8192)
    assert len(paths) >= 3
    return out


@pytest.mark.parametrize("track", ["gpt2-small", "gpt2-muon-2024"])
def test_tiny_gpt2_run_on_local_shards(track, tmp_path, local_shards):
    argv = ["--track", track, "--debug-model", "--data-dir", str(local_shards), "--no-compile", "--steps", "6",
            "--quiet", "--records-dir", str(tmp_path)]
    assert run.main(argv) == 0
    row = read_table(tmp_path).iloc[0]
    assert row.track == f"{track}~debug" and row.hardware == "debug" and row.status == "ok"
    log = (tmp_path / row.log).read_text()
    first = float(log.split("step:0/6 val_loss:")[1].split()[0])
    assert abs(first - __import__("math").log(tracks.get_track(track).model.vocab_size)) < 0.5  # GPT-2 vocabulary, uniform start
    assert row.final_val_loss < first


def test_local_data_keeps_the_sequential_order_only_for_a_debug_model(tmp_path):
    small = tracks.get_track("gpt2-small")
    assert tracks.local_data_variant(small, tmp_path).sampler == "random"  # local shards are shorter than one real step
    debug = tracks.local_data_variant(tracks.debug_variant(small, "cpu"), tmp_path)
    assert debug.sampler == "sequential" and debug.sampler_ranks == 8 and debug.name == "gpt2-small~debug"


def test_missing_shards_name_the_command_that_makes_them(tmp_path):
    small = tracks.get_track("gpt2-small")
    hint = tracks.prepare_hint(small)
    assert "`python data/fineweb.py --train-shards 39`" in hint and "--debug-model" in hint and "make_local_gpt2_shards" in hint
    local = small.with_overrides(train_files=str(tracks.LOCAL_GPT2_DIR / "fineweb_train_*.bin"))
    assert tracks.prepare_hint(local).startswith("build them with `python data/make_local_gpt2_shards.py`")
    assert "prepare_brown.py" in tracks.prepare_hint(tracks.get_track("tiny-cpu"))
    with pytest.raises(UserError, match=r"no shards match .*; download them with `python data/fineweb\.py"):
        TokenStream(str(tmp_path / "fineweb_train_*.bin"), hint)


@pytest.mark.skipif(bool(__import__("glob").glob(tracks.get_track("gpt2-small").resolve(tracks.FINEWEB_TRAIN))),
                    reason="FineWeb is present: a debug run reads it")
def test_debug_run_without_fineweb_builds_and_reads_local_shards(tmp_path, monkeypatch, capsys):
    """`run.py --track gpt2-small --debug-model` out of the box on a machine without FineWeb."""
    folder = tmp_path / "local_gpt2"
    monkeypatch.setattr(tracks, "LOCAL_GPT2_DIR", folder)
    argv = ["--track", "gpt2-small", "--debug-model", "--no-compile", "--steps", "3", "--quiet", "--records-dir", str(tmp_path / "rec")]
    assert run.main(argv) == 0
    assert "building them once" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir())[:2] == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert not list(tmp_path.glob("*.tmp"))
    row = read_table(tmp_path / "rec").iloc[0]
    assert row.track == "gpt2-small~debug" and row.status == "ok"
    config = (tmp_path / "rec" / row.log).read_text()
    assert f'"train_files": "{folder}/fineweb_train_0000[0-3][0-9].bin"' in config and '"sampler": "sequential"' in config


def test_gpu_benchmark_runs_on_cpu(tmp_path, root, local_shards):
    cmd = [sys.executable, "scripts/bench_gpu.py", "--device", "cpu", "--tiny", "--no-compile", "--optimizers", "muon,muon2,newton_muon",
           "--steps", "2", "--warmup", "1", "--train-steps", "4", "--data-dir", str(local_shards), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    assert [r["optimizer"] for r in data["optimizers"]] == ["muon", "muon2", "newton_muon"]
    for r in data["optimizers"]:
        assert r["step_ms"] > 0 and 0 < r["opt_share"] < 1 and r["tokens_per_s"] > 0 and r["mfu_fwd_bwd"] is None  # no CPU peak
    assert data["training_run"]["track"] == "gpt2-small~debug" and data["training_run"]["steps"] == 4
    assert {g["goal"].split()[0] for g in data["goals"]} >= {"fwd+bwd", "Muon", "Newton-Muon", "Muon²"}
    assert "Not a GPU" in result.with_suffix(".md").read_text()


def test_gpu_benchmark_without_a_gpu_says_how_to_check_it(tmp_path, root):
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, "scripts/bench_gpu.py", "--out", str(tmp_path)], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 2 and "--device cpu --tiny" in proc.stderr and "Traceback" not in proc.stderr
