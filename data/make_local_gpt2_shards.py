"""Build small GPT-2-token shards from the corpora inside the project, named like FineWeb's.

    python data/make_local_gpt2_shards.py [--out data/local_gpt2]

For GPU machines without internet (and CI): the GPT-2 tracks can then run on real GPT-2 tokens
with `run.py --track gpt2-small --data-dir data/local_gpt2` (recorded as 'gpt2-small~local',
never as the real track) and scripts/bench_gpu.py can make its short training run. A smoke test
`run.py --track gpt2-small --debug-model` on a machine without FineWeb reads them by itself and
builds them first when they are missing (`build_once`, a few seconds).

Sources: data/brown/brown.jsonl (Brown corpus) and, when present, data/transfer/sotu.jsonl (State
of the Union addresses): ~3.4M tokens, ~7 MB of shards. The documents are shuffled with a fixed
seed (so validation and training come from the same mixture), then data/tokenize_corpus.py packs them into
shards of 2**19 tokens: fineweb_val_000000.bin (the first 524,288 tokens, twice what a '~local'
run evaluates on) and fineweb_train_000001.bin, ... The output is byte-identical on every machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from nanogpt.data import shard_token_count
from nanogpt.errors import UserError, entry_point
from nanogpt.tracks import ROOT

try:
    from data.tokenize_corpus import tokenize_documents
except ModuleNotFoundError:  # run as a script: data/ is not a package on the path, but this folder is sys.path[0]
    from tokenize_corpus import tokenize_documents

CORPORA = (ROOT / "data" / "brown" / "brown.jsonl", ROOT / "data" / "transfer" / "sotu.jsonl")
SHARD_SIZE = 2**19
SEED = 0


def load_documents(paths: tuple[Path, ...]) -> tuple[list[str], list[Path]]:
    """The "text" of every line of the corpora that exist, and which ones were used."""
    used = [p for p in paths if p.is_file()]
    if not used:
        raise UserError(f"none of the corpora exist: {', '.join(str(p) for p in paths)}")
    documents = []
    for path in used:
        with open(path, encoding="utf-8") as f:
            documents += [json.loads(line)["text"] for line in f if line.strip()]
    return documents, used


def build(out: Path, procs: int = 1, shown: Path | None = None) -> list[Path]:
    """Write the shards into `out` (reported as `shown`, default `out`)."""
    documents, used = load_documents(CORPORA)
    order = np.random.default_rng(SEED).permutation(len(documents))
    paths = tokenize_documents((documents[i] for i in order), out, prefix="fineweb", shard_size=SHARD_SIZE, procs=procs)
    print(f"{shown or out}: {len(documents)} documents from {', '.join(p.name for p in used)}: "
          f"{sum(shard_token_count(p) for p in paths):,} tokens in 1 validation + {len(paths) - 1} training shards")
    return paths


def build_once(out: Path) -> Path:
    """`out`, built unless it exists. The shards are written to a temporary sibling folder renamed
    into place, so `out` is never half written and concurrent callers (every rank under torchrun)
    are safe: the first rename wins and the others use its identical result."""
    if out.is_dir():
        return out
    tmp = out.with_name(f"{out.name}-{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build(tmp, procs=1, shown=out)
        try:
            os.rename(tmp, out)
        except OSError:
            if not out.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@entry_point(interrupted="interrupted: delete the partial shards in --out before rerunning (it refuses a folder that holds some)")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build small GPT-2-token shards from the corpora inside the project (Brown and, when present, State of the "
                    "Union), named like FineWeb's, for GPU machines without internet and CI: ~3.4M tokens, ~7 MB of shards, "
                    "tokenized locally (no download).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "local_gpt2", help="output folder")
    parser.add_argument("--procs", type=int, default=2, help="tokenizer processes")
    args = parser.parse_args(argv)
    build(args.out, args.procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
