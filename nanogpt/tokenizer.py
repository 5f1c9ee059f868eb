"""Tokenizers that work offline: raw bytes (tiny-cpu) and tiktoken's exact `gpt2` encoding built
from the vocabulary files shipped in data/gpt2 (tiktoken would otherwise download them)."""

from __future__ import annotations

import functools
import os

import numpy as np

from nanogpt.config import ROOT

GPT2_DIR = ROOT / "data" / "gpt2"
GPT2_EOT = 50256
BYTES_EOT = 256  # byte-level vocabulary: 256 byte values plus one document separator
# The gpt2 pre-tokenization regex, as in tiktoken_ext/openai_public.py.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@functools.cache
def gpt2_encoding():
    """tiktoken's gpt2 encoding, identical to tiktoken.get_encoding('gpt2'), with no network."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", "")  # local files need no cache
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(GPT2_DIR / "vocab.bpe"), encoder_json_file=str(GPT2_DIR / "encoder.json")
    )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": GPT2_EOT},
        explicit_n_vocab=50257,
    )


def encode_document(text: str, tokenizer: str) -> np.ndarray:
    """Tokens of one document, preceded by the end-of-text separator (as in the FineWeb shards)."""
    if tokenizer == "bytes":
        body = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)
        return np.concatenate([np.array([BYTES_EOT], dtype=np.uint16), body])
    if tokenizer == "gpt2":
        ids = gpt2_encoding().encode_ordinary(text)
        return np.array([GPT2_EOT, *ids], dtype=np.uint16)
    raise ValueError(f"unknown tokenizer {tokenizer!r}; valid: bytes, gpt2")


def decode(tokens, tokenizer: str) -> str:
    if tokenizer == "bytes":
        return bytes(int(t) for t in tokens if t != BYTES_EOT).decode("utf-8", errors="replace")
    return gpt2_encoding().decode([int(t) for t in tokens])
