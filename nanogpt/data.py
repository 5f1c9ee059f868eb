"""Token shards (the modded-nanogpt / llm.c format) and the batches drawn from them.

A shard is a header of 256 int32 (magic 20240520, version 1, token count, zeros) followed by the
tokens as uint16. Byte-level and GPT-2 tokenized data share this format and this reader.

A track declares how its training batches are drawn (`Track.sampler`):

- "random" (`BatchSampler`): windows at random offsets, with replacement, drawn from a generator
  seeded by the run's seed, so the seed fixes the data order (tiny-cpu).
- "sequential" (`SequentialSampler`): the order in which the modded-nanogpt records of 10/2024 -
  11/2024 read their shards (their `DistributedDataLoader` and training loop), quirks included;
  the seed plays no part in it (the GPT-2 tracks). README "Data order" says what the record
  loader does and where this sampler agrees with it.

Either way the global batch of a step is the same whatever the number of processes: each rank
takes its slice by position, and accumulation micro-steps take sub-slices of that.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import torch

from nanogpt.errors import UserError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write tokens (values < 65536) atomically: a reader never sees half a shard."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ValueError("shard tokens must fit in uint16")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = (MAGIC, VERSION, tokens.size)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())
    os.replace(tmp, path)


def shard_token_count(path: str | Path) -> int:
    """Validate a shard's header and size; return its token count or raise a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"shard {path} is missing; prepare the track's data (see README, 'Data')")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise UserError(f"shard {path} is corrupt: {size} bytes, shorter than the {HEADER_BYTES}-byte header; delete and regenerate it")
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    if header[0] != MAGIC:
        raise UserError(f"shard {path} is corrupt: magic number {header[0]} != {MAGIC}; not a token shard, regenerate it")
    if header[1] != VERSION:
        raise UserError(f"shard {path} has unsupported version {header[1]} (expected {VERSION}); regenerate it")
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if size != expected:
        raise UserError(
            f"shard {path} is corrupt: header says {count} tokens ({expected} bytes) but the file has {size} bytes; "
            "the download or write was cut short, regenerate it"
        )
    return count


def open_shard(path: str | Path) -> np.ndarray:
    count = shard_token_count(path)
    return np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(count,))


PREPARE = "prepare the track's data first (README 'Data')"


def find_shards(pattern: str, prepare: str = PREPARE) -> list[str]:
    """The shard files matching `pattern`, sorted; `prepare` says how to make them when there are none."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise UserError(f"no shards match {pattern}; {prepare}")
    return files


class TokenStream:
    """All shards of one split, read through memory maps."""

    def __init__(self, pattern: str, prepare: str = PREPARE):
        self.files = find_shards(pattern, prepare)
        self.shards = [open_shard(f) for f in self.files]
        self.sizes = np.array([len(s) for s in self.shards], dtype=np.int64)

    def first_tokens(self, n: int) -> np.ndarray:
        """The first n tokens across shards, in order (the fixed validation set)."""
        if n > self.sizes.sum():
            raise UserError(f"validation needs {n} tokens but {self.files[0]}... hold only {int(self.sizes.sum())}")
        parts, left = [], n
        for shard in self.shards:
            take = min(left, len(shard))
            parts.append(np.asarray(shard[:take]))
            left -= take
            if left == 0:
                break
        return np.concatenate(parts)


class BatchSampler:
    """Seeded random windows of seq_len + 1 tokens; same global batch for any world size."""

    def __init__(self, stream: TokenStream, seq_len: int, batch_size: int, seed: int):
        usable = stream.sizes - (seq_len + 1)
        if (usable <= 0).all():
            raise UserError(f"shards {stream.files[0]}... are shorter than one sequence of {seq_len + 1} tokens")
        self.stream, self.seq_len, self.batch_size = stream, seq_len, batch_size
        self.weights = np.clip(usable, 0, None) / np.clip(usable, 0, None).sum()
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def next_global_batch(self) -> np.ndarray:
        """(batch_size, seq_len + 1) int64 windows for the whole step, identical on every rank."""
        shard_ids = self.rng.choice(len(self.stream.shards), size=self.batch_size, p=self.weights)
        out = np.empty((self.batch_size, self.seq_len + 1), dtype=np.int64)
        for i, s in enumerate(shard_ids):
            start = self.rng.integers(0, self.stream.sizes[s] - self.seq_len - 1 + 1)
            out[i] = self.stream.shards[s][start : start + self.seq_len + 1]
        return out


class SequentialSampler:
    """The records' data order, reproduced exactly (README "Data order").

    It emulates the record's `DistributedDataLoader` on `ranks` processes, each reading
    B = batch_size / (ranks * accum) sequences of seq_len (T) per call, `accum` calls per step:

    - rank r starts at token r*B*T of the first shard (files in sorted order); a call reads the
      B*T + 1 tokens at its position (B rows of T inputs, targets shifted by one) and moves the
      position on by ranks*B*T;
    - after a call the rank moves to the next shard, at token r*B*T, when its position +
      ranks*B*T + 1 exceeds the shard: a shard's tail is dropped, and ranks r > 0 may switch a
      call before rank 0 (from then on the ranks of one step read different shards); after the
      last shard it wraps to the first;
    - the training loop fetches the first batch twice: the calls used are b1, b1, b2, b3, ...,
      `accum` per step, so step 0's first micro-step is repeated (the whole step when accum = 1);
    - the global batch of a step is, in this order, rank 0's calls (micro-steps in order), then
      rank 1's, ...: with as many processes as `ranks`, process r trains on exactly what record
      rank r read; any other number of processes takes the same global batch by position.

    The order does not depend on the seed. A step's batch is computed from the step number alone
    (`global_batch(step)`), so a run can resume at any step (`seek`). Every shard must hold at
    least ranks*B*T + 1 tokens, as the record loader asserts.
    """

    def __init__(self, stream: TokenStream, seq_len: int, batch_size: int, ranks: int = 1, accum: int = 1):
        if ranks < 1 or accum < 1 or batch_size % (ranks * accum):
            raise UserError(f"the sequential order's {ranks} loader ranks x {accum} calls cannot split a global batch of "
                            f"{batch_size} sequences evenly")
        self.stream, self.seq_len, self.batch_size = stream, seq_len, batch_size
        self.ranks, self.accum, self.rows = ranks, accum, batch_size // (ranks * accum)
        call_tokens = self.rows * seq_len  # B*T
        self.span = ranks * call_tokens  # tokens one call of all ranks moves on by
        for f, size in zip(stream.files, stream.sizes):
            if size < self.span + 1:
                raise UserError(f"shard {f} holds {int(size):,} tokens; the sequential data order needs at least "
                                f"{self.span + 1:,} per shard ({ranks} loader ranks x {self.rows} x {seq_len} + 1, "
                                "as the record loader asserts)")
        # calls[r, s]: how many calls rank r makes in shard s before it moves on (at least the first)
        offsets = np.arange(ranks, dtype=np.int64)[:, None] * call_tokens
        self.calls = np.maximum(1, (stream.sizes[None, :] - 1 - offsets) // self.span)
        self.ends = np.cumsum(self.calls, axis=1)  # rank r's call index at which shard s ends
        self.step = 0

    def reset(self) -> None:
        self.step = 0

    def seek(self, step: int) -> None:
        """Continue from `step`: the next batch is that step's."""
        self.step = step

    def position(self, rank: int, call: int) -> tuple[int, int]:
        """(shard index, token position) of record rank `rank`'s call number `call` (0-based) of a fresh loader."""
        call %= int(self.ends[rank, -1])  # wrap-around after the last shard
        shard = int(np.searchsorted(self.ends[rank], call, side="right"))
        first = int(self.ends[rank, shard - 1]) if shard else 0
        return shard, rank * self.rows * self.seq_len + (call - first) * self.span

    def global_batch(self, step: int) -> np.ndarray:
        """(batch_size, seq_len + 1) int64 windows of `step`, ordered by record rank, then micro-step, then row."""
        T, out = self.seq_len, np.empty((self.batch_size, self.seq_len + 1), dtype=np.int64)
        rows = np.arange(self.rows)[:, None] * T + np.arange(T + 1)[None, :]
        i = 0
        for rank in range(self.ranks):
            for micro in range(self.accum):
                call = max(0, step * self.accum + micro - 1)  # the first batch is used twice
                shard, pos = self.position(rank, call)
                out[i : i + self.rows] = np.asarray(self.stream.shards[shard][pos : pos + self.rows * T + 1])[rows]
                i += self.rows
        return out

    def next_global_batch(self) -> np.ndarray:
        batch = self.global_batch(self.step)
        self.step += 1
        return batch


SAMPLERS = ("random", "sequential")


def train_sampler(kind: str, stream: TokenStream, seq_len: int, batch_size: int, seed: int,
                  ranks: int = 1) -> BatchSampler | SequentialSampler:
    """The training batches a track declares (`Track.sampler`, `Track.sampler_ranks`)."""
    if kind == "random":
        return BatchSampler(stream, seq_len, batch_size, seed)
    if kind == "sequential":
        return SequentialSampler(stream, seq_len, batch_size, ranks)
    raise UserError(f"unknown sampler {kind!r}; valid samplers: {', '.join(SAMPLERS)}")


def split_batch(batch_size: int, world_size: int, max_micro: int) -> tuple[int, int]:
    """(micro-batch size, accumulation steps) with which world_size processes fill exactly one
    global batch, so that 1, 2, 4 or 8 processes take the same optimizer step: the largest
    micro-batch that divides each rank's share and fits the track's memory bound."""
    if batch_size % world_size:
        raise UserError(f"the global batch of {batch_size} sequences cannot be split evenly over {world_size} processes; "
                        "use a number of processes that divides it")
    per_rank = batch_size // world_size
    micro = max(d for d in range(1, min(per_rank, max_micro) + 1) if per_rank % d == 0)
    return micro, per_rank // micro


def micro_batches(global_batch: np.ndarray, rank: int, world_size: int, micro_batch_size: int, device: str):
    """Split a global batch into this rank's (inputs, targets) micro-batches."""
    per_rank = len(global_batch) // world_size
    mine = global_batch[rank * per_rank : (rank + 1) * per_rank]
    for i in range(0, per_rank, micro_batch_size):
        chunk = torch.from_numpy(mine[i : i + micro_batch_size]).to(device, non_blocking=True)
        yield chunk[:, :-1], chunk[:, 1:]


def validation_sequences(stream: TokenStream, n_tokens: int, seq_len: int) -> torch.Tensor:
    """The track's fixed validation set as (n_seq, seq_len + 1) windows that overlap by one token,
    so that every one of the first n_tokens tokens after the first is predicted exactly once."""
    n_seq = n_tokens // seq_len
    tokens = stream.first_tokens(n_seq * seq_len + 1).astype(np.int64)
    idx = np.arange(n_seq)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(tokens[idx])
