"""Regenerate the embedded tiny-cpu shards from data/brown/brown.jsonl, deterministically.

Document i goes to validation when i % 20 == 0, otherwise to training. Byte-level tokens, a
separator (256) before each document, in the shard format of nanogpt/data.py.

    python data/prepare_brown.py [--tokenizer bytes|gpt2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nanogpt.data import write_shard
from nanogpt.tokenizer import encode_document

HERE = Path(__file__).resolve().parent
VAL_EVERY = 20


def split_documents(path: Path) -> tuple[list[str], list[str]]:
    train, val = [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            (val if i % VAL_EVERY == 0 else train).append(json.loads(line)["text"])
    return train, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Document i goes to validation when i % 20 == 0.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tokenizer", default="bytes", choices=["bytes", "gpt2"], help="byte-level (the tiny-cpu track) or GPT-2 tokens")
    parser.add_argument("--corpus", type=Path, default=HERE / "brown" / "brown.jsonl", help="JSON-lines corpus, one document per line")
    parser.add_argument("--out", type=Path, help="output folder; unset: data/brown/shards (bytes) or data/brown/shards_gpt2")
    args = parser.parse_args()
    out = args.out or HERE / "brown" / ("shards" if args.tokenizer == "bytes" else "shards_gpt2")
    out.mkdir(parents=True, exist_ok=True)
    train, val = split_documents(args.corpus)
    for split, docs in (("train", train), ("val", val)):
        tokens = np.concatenate([encode_document(d, args.tokenizer) for d in docs])
        path = out / f"brown_{split}_000000.bin"
        write_shard(path, tokens)
        print(f"{path}: {len(docs)} documents, {tokens.size:,} tokens")


if __name__ == "__main__":
    main()
