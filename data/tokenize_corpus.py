"""Tokenize raw text into GPT-2 token shards (the modded-nanogpt / llm.c format of nanogpt/data.py).

    python data/tokenize_corpus.py INPUT [INPUT ...] --out DIR [--prefix fineweb] [--shard-size 100000000] [--procs N]

Inputs, by extension: .txt (the whole file is one document), .jsonl (one document per line, its
"text" field), .parquet (its "text" column, streamed in record batches with pyarrow, so a FineWeb
parquet file never has to fit in memory). Documents are encoded by a pool of processes with
tiktoken's gpt2 encoding built offline (nanogpt.tokenizer.encode_document: <|endoftext|> before
every document), in input order, and packed into shards of exactly --shard-size tokens (the last
one shorter); a document that crosses a shard boundary continues in the next shard.

Validation split: as in modded-nanogpt's data/fineweb.py, the FIRST shard is the validation shard
({prefix}_val_000000.bin) and the others are training shards ({prefix}_train_000001.bin, ...), the
layout of the kjj0/fineweb10B-gpt2 files that the GPT-2 tracks read. So the validation set is the
first --shard-size tokens of the input: shuffle ordered corpora first (data/make_local_gpt2_shards.py
does). The output is deterministic for given inputs and options, whatever the number of processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from nanogpt.data import shard_token_count, write_shard
from nanogpt.errors import UserError, entry_point
from nanogpt.tokenizer import encode_document

DEFAULT_SHARD_SIZE = 10**8  # tokens per shard, as modded-nanogpt's data/fineweb.py
READ_CHUNK = 1024  # documents handed to the pool at a time (reading errors surface in the main process)


def encode(text: str) -> np.ndarray:
    """One document's GPT-2 tokens, <|endoftext|> first (runs in the worker processes)."""
    return encode_document(text, "gpt2")


def read_documents(path: Path) -> Iterator[str]:
    """The documents of one input file, in order; malformed input names the file (and line)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        yield path.read_text(encoding="utf-8")
    elif suffix == ".jsonl":
        yield from _jsonl_documents(path)
    elif suffix == ".parquet":
        yield from _parquet_documents(path)
    else:
        raise UserError(f"input {path}: unsupported type {suffix!r}; use .txt (one document), .jsonl or .parquet")


def _jsonl_documents(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one object per line") from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise UserError(f'{path}:{lineno}: no string field "text"; each line must be like {{"text": "..."}}')
            yield text


def _parquet_documents(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("reading .parquet needs pyarrow: pip install pyarrow (or pip install -e '.[fineweb]')") from None
    parquet = pq.ParquetFile(path)
    if "text" not in parquet.schema_arrow.names:
        raise UserError(f'{path}: no "text" column (columns: {", ".join(parquet.schema_arrow.names)})')
    row = 0
    for batch in parquet.iter_batches(columns=["text"], batch_size=READ_CHUNK):
        for text in batch.column(0).to_pylist():
            if not isinstance(text, str):
                raise UserError(f'{path}: row {row} of column "text" is {text!r}, not a string')
            row += 1
            yield text


class ShardWriter:
    """Packs token arrays into shards of exactly `size` tokens; the first shard is the validation shard.

    A full buffer is written only when more tokens arrive, so an input that fills no more than the
    validation shard is refused before anything is written."""

    def __init__(self, out: Path, prefix: str, size: int):
        self.out, self.prefix, self.size = out, prefix, size
        self.buffer = np.empty(size, dtype=np.uint16)
        self.fill = 0
        self.paths: list[Path] = []

    def add(self, tokens: np.ndarray) -> None:
        while len(tokens):
            if self.fill == self.size:
                self._flush()
            take = min(self.size - self.fill, len(tokens))
            self.buffer[self.fill : self.fill + take] = tokens[:take]
            self.fill += take
            tokens = tokens[take:]

    def _flush(self) -> None:
        index = len(self.paths)
        path = self.out / f"{self.prefix}_{'val' if index == 0 else 'train'}_{index:06d}.bin"
        write_shard(path, self.buffer[: self.fill])
        self.paths.append(path)
        self.fill = 0

    def close(self) -> list[Path]:
        if not self.paths:
            raise UserError(f"the input has {self.fill:,} tokens, which all fit in the validation shard "
                            f"(--shard-size {self.size:,}); lower --shard-size to leave tokens for training")
        if self.fill:
            self._flush()
        return self.paths


def _chunks(items: Iterable[str], n: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def tokenize_documents(documents: Iterable[str], out: Path, prefix: str = "fineweb",
                       shard_size: int = DEFAULT_SHARD_SIZE, procs: int = 1) -> list[Path]:
    """Encode documents (in order) into val + train shards under `out`; returns the shard paths."""
    if shard_size < 1:
        raise UserError(f"--shard-size {shard_size}: must be a positive number of tokens")
    if procs < 1:
        raise UserError(f"--procs {procs}: must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob(f"{prefix}_*_*.bin"))
    if stale:
        raise UserError(f"{out} already holds {prefix} shards ({stale[0].name}, ...); delete them or choose another --out or --prefix")
    writer = ShardWriter(out, prefix, shard_size)
    if procs == 1:
        for text in documents:
            writer.add(encode(text))
        return writer.close()
    with multiprocessing.Pool(procs) as pool:
        for chunk in _chunks(documents, READ_CHUNK):
            for tokens in pool.imap(encode, chunk, chunksize=16):
                writer.add(tokens)
    return writer.close()


def tokenize_files(inputs: list[Path], out: Path, prefix: str = "fineweb", shard_size: int = DEFAULT_SHARD_SIZE,
                   procs: int = 1) -> list[Path]:
    """Tokenize the documents of the input files, in the order given."""
    for path in inputs:
        if not path.is_file():
            raise UserError(f"input {path} does not exist")
    documents = (text for path in inputs for text in read_documents(path))
    return tokenize_documents(documents, out, prefix, shard_size, procs)


@entry_point(interrupted="interrupted: delete the partial shards in --out before rerunning (it refuses a folder that holds some)")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="The first shard is the validation split (see the module docstring).")
    parser.add_argument("inputs", nargs="+", type=Path, help=".txt, .jsonl (field 'text') or .parquet (column 'text') files")
    parser.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS,
                        help="output folder (must not already hold shards of --prefix)")
    parser.add_argument("--prefix", default="fineweb", help="shard names: PREFIX_val_000000.bin, PREFIX_train_000001.bin, ...")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="tokens per shard")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                        help="tokenizer processes (the default is this machine's core count)")
    args = parser.parse_args(argv)
    paths = tokenize_files(args.inputs, args.out, args.prefix, args.shard_size, args.procs)
    total = sum(shard_token_count(p) for p in paths)
    print(f"{args.out}: 1 validation + {len(paths) - 1} training shards, {total:,} tokens "
          f"({paths[0].name} holds the first {shard_token_count(paths[0]):,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
