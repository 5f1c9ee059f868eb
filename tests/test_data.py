"""Shard format, validation errors, seeded batches and the fixed validation set."""

import numpy as np
import pytest

from nanogpt.data import (
    HEADER_BYTES,
    BatchSampler,
    TokenStream,
    micro_batches,
    open_shard,
    shard_token_count,
    validation_sequences,
    write_shard,
)
from nanogpt.errors import UserError


def test_round_trip_and_header(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16) * 7
    write_shard(tmp_path / "a.bin", tokens)
    header = np.fromfile(tmp_path / "a.bin", dtype=np.int32, count=3)
    assert list(header) == [20240520, 1, 1000]
    assert (tmp_path / "a.bin").stat().st_size == HEADER_BYTES + 2000
    assert np.array_equal(open_shard(tmp_path / "a.bin"), tokens)


def test_rejects_tokens_outside_uint16(tmp_path):
    with pytest.raises(ValueError):
        write_shard(tmp_path / "a.bin", np.array([70000]))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "cut short"),
        (lambda p: p.write_bytes(b"\x00" * 4 + p.read_bytes()[4:]), "magic"),
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "shorter than"),
        (lambda p: p.write_bytes(p.read_bytes()[:4] + np.int32(2).tobytes() + p.read_bytes()[8:]), "version"),
        (lambda p: p.unlink(), "missing"),
    ],
)
def test_corrupt_or_missing_shard_names_the_file(tmp_path, damage, message):
    path = tmp_path / "bad.bin"
    write_shard(path, np.arange(100))
    damage(path)
    with pytest.raises(UserError, match=message) as info:
        shard_token_count(path)
    assert str(path) in str(info.value)


def test_no_shards_matching(tmp_path):
    with pytest.raises(UserError, match="no shards match"):
        TokenStream(str(tmp_path / "*.bin"))


def make_stream(tmp_path, n=5000):
    write_shard(tmp_path / "s_000.bin", np.arange(n) % 251)
    write_shard(tmp_path / "s_001.bin", (np.arange(n // 2) * 3) % 251)
    return TokenStream(str(tmp_path / "s_*.bin"))


def test_seed_fixes_data_order(tmp_path):
    stream = make_stream(tmp_path)
    a, b, c = (BatchSampler(stream, 32, 8, seed) for seed in (0, 0, 1))
    first = [a.next_global_batch() for _ in range(3)]
    assert all(np.array_equal(x, b.next_global_batch()) for x in first)
    assert not np.array_equal(first[0], c.next_global_batch())
    a.reset()
    assert np.array_equal(a.next_global_batch(), first[0])


def test_windows_are_contiguous_tokens(tmp_path):
    stream = make_stream(tmp_path)
    batch = BatchSampler(stream, 16, 64, 3).next_global_batch()
    assert batch.shape == (64, 17)
    diffs = np.diff(batch, axis=1) % 251
    assert np.all((diffs == 1) | (diffs == 3))  # each row lies inside one shard


def test_ranks_and_micro_batches_partition_the_global_batch(tmp_path):
    batch = BatchSampler(make_stream(tmp_path), 8, 8, 0).next_global_batch()
    pieces = []
    for rank in range(2):
        for x, y in micro_batches(batch, rank, 2, 2, "cpu"):
            assert x.shape == (2, 8) and y.shape == (2, 8)
            assert np.array_equal(x[:, 1:].numpy(), y[:, :-1].numpy())
            pieces.append(np.concatenate([x.numpy(), y[:, -1:].numpy()], axis=1))
    assert np.array_equal(np.concatenate(pieces), batch)


def test_validation_predicts_each_token_once(tmp_path):
    stream = make_stream(tmp_path)
    val = validation_sequences(stream, 100, 16)
    assert val.shape == (6, 17)
    targets = val[:, 1:].reshape(-1).numpy()
    assert np.array_equal(targets, np.arange(1, 97) % 251)


def test_validation_needs_enough_tokens(tmp_path):
    with pytest.raises(UserError, match="validation needs"):
        validation_sequences(make_stream(tmp_path, 100), 10_000, 16)
