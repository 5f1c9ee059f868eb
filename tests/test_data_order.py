"""The records' data order: our sequential sampler against what the record's own loader and
training loop read (tests/fixtures/records/data-order.npz, recorded from the 11/03/24 record's
DistributedDataLoader, textually identical in 10/10/24; documented in /work/shared/fixtures/records/
README.md §10 and in our README "Data order").

The fixture holds three tiny shards as bytes (every token names its shard and position) and, per
case (world size 1 and 2, accumulation 1 and 2, B = 2, T = 8) and rank, the batch the record's
training loop used at each step and micro-step, the first batch used twice included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nanogpt import tracks
from nanogpt.data import SequentialSampler, TokenStream, micro_batches, train_sampler, write_shard
from nanogpt.errors import UserError

FIXTURE = Path(__file__).parent / "fixtures" / "records" / "data-order.npz"
DATA = np.load(FIXTURE, allow_pickle=False)
META = json.loads(str(DATA["meta_json"]))
CASES = META["cases"]


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> TokenStream:
    """The fixture's shard files, byte for byte, under their own names."""
    folder = tmp_path_factory.mktemp("record_shards")
    for i, shard in enumerate(META["shards"]):
        (folder / shard["name"]).write_bytes(DATA[f"shard{i}_bytes"].tobytes())
    return TokenStream(str(folder / "fineweb_train_*.bin"))


def sampler_for(stream: TokenStream, case: dict) -> SequentialSampler:
    world, accum, rows = case["world_size"], case["accumulation_steps"], case["B"]
    return SequentialSampler(stream, case["T"], world * accum * rows, ranks=world, accum=accum)


def test_the_fixture_shards_are_what_the_readme_says(stream):
    assert [len(s) for s in stream.shards] == [70, 49, 40]
    for i, shard in enumerate(stream.shards):
        assert np.array_equal(shard, 1000 * (i + 1) + np.arange(len(shard)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_calls_read_where_the_record_loader_reads(stream, name):
    case, sampler = CASES[name], sampler_for(stream, CASES[name])
    for rank in range(case["world_size"]):
        shards, positions = DATA[f"{name}__rank{rank}__calls_shard"], DATA[f"{name}__rank{rank}__calls_pos"]
        assert [sampler.position(rank, c) for c in range(case["loader_calls"])] == list(zip(shards.tolist(), positions.tolist()))


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_step_trains_on_the_records_tokens(stream, name):
    """Step by step, the global batch is every record rank's micro-batches in order, and with as many
    processes as the record had, process r's micro-batches are exactly record rank r's."""
    case, sampler = CASES[name], sampler_for(stream, CASES[name])
    world, accum, rows, T = case["world_size"], case["accumulation_steps"], case["B"], case["T"]
    xs = np.stack([DATA[f"{name}__rank{r}__train_x"] for r in range(world)], axis=1)  # [steps, rank, accum, B, T]
    ys = np.stack([DATA[f"{name}__rank{r}__train_y"] for r in range(world)], axis=1)
    assert len(xs) == case["train_steps"]
    for step in range(case["train_steps"]):
        batch = sampler.next_global_batch()
        assert batch.shape == (world * accum * rows, T + 1)
        assert np.array_equal(batch[:, :-1], xs[step].reshape(-1, T)) and np.array_equal(batch[:, 1:], ys[step].reshape(-1, T))
        for rank in range(world):
            mine = list(micro_batches(batch, rank, world, rows, "cpu"))
            assert len(mine) == accum
            for micro, (x, y) in enumerate(mine):
                assert np.array_equal(x.numpy(), xs[step, rank, micro]) and np.array_equal(y.numpy(), ys[step, rank, micro])


@pytest.mark.parametrize("name", sorted(CASES))
def test_any_process_count_takes_the_same_global_batch(stream, name):
    """1, 2 or 4 processes (accumulating or not) partition one global batch: the record's, by position."""
    case = CASES[name]
    batch = sampler_for(stream, case).global_batch(3)
    for processes in (p for p in (1, 2, 4) if len(batch) % p == 0):
        for micro in (1, len(batch) // processes):
            pieces = [np.concatenate([x.numpy(), y[:, -1:].numpy()], axis=1)
                      for rank in range(processes) for x, y in micro_batches(batch, rank, processes, micro, "cpu")]
            assert np.array_equal(np.concatenate(pieces), batch)


def test_resumes_at_any_step(stream):
    case = CASES["w2_b2_t8_a1"]
    run = sampler_for(stream, case)
    steps = [run.next_global_batch() for _ in range(40)]  # past several wrap-arounds
    resumed = sampler_for(stream, case)
    for step in (0, 1, 7, 25, 39):
        resumed.seek(step)
        assert np.array_equal(resumed.next_global_batch(), steps[step])
    run.reset()
    assert np.array_equal(run.next_global_batch(), steps[0])


def test_a_shard_shorter_than_one_step_is_refused_as_the_record_does(tmp_path):
    write_shard(tmp_path / "t_000001.bin", np.arange(100))
    write_shard(tmp_path / "t_000002.bin", np.arange(64))  # 4 x 2 x 8 + 1 = 65 needed
    with pytest.raises(UserError, match=r"t_000002\.bin holds 64 tokens.*at least 65"):
        SequentialSampler(TokenStream(str(tmp_path / "t_*.bin")), 8, 8, ranks=4)
    with pytest.raises(UserError, match="cannot split"):
        SequentialSampler(TokenStream(str(tmp_path / "t_000001.bin")), 8, 6, ranks=4)


def test_tracks_declare_their_sampler(stream):
    assert tracks.get_track("tiny-cpu").sampler == "random"
    for name in ("gpt2-small", "gpt2-medium", "gpt2-muon-2024", "gpt2-1gpu"):
        t = tracks.get_track(name)
        assert t.sampler == "sequential" and t.batch_size % t.sampler_ranks == 0
    small = tracks.get_track("gpt2-small")
    assert small.sampler_ranks == 8 and small.batch_size // small.sampler_ranks == 64  # the records: 8 GPUs x 64 x 1024
    assert isinstance(train_sampler("sequential", stream, 8, 4, seed=0, ranks=2), SequentialSampler)
    with pytest.raises(UserError, match="unknown sampler 'shuffled'"):
        train_sampler("shuffled", stream, 8, 4, seed=0)
