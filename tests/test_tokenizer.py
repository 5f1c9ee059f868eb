"""The offline GPT-2 encoding (the checks of shared/data/README.md) and the byte tokenizer."""

import json

import numpy as np

from nanogpt.tokenizer import BYTES_EOT, GPT2_EOT, decode, encode_document, gpt2_encoding


def test_gpt2_known_ids_and_vocab():
    enc = gpt2_encoding()
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.n_vocab == 50257
    assert enc.encode("<|endoftext|>", allowed_special="all") == [GPT2_EOT]


def test_gpt2_round_trip_on_the_corpus(root):
    enc = gpt2_encoding()
    with open(root / "data" / "brown" / "brown.jsonl") as f:
        texts = [json.loads(next(f))["text"] for _ in range(3)]
    texts.append("Ünïcödé — emoji 🚀, tabs\tand\n\nnewlines  ")
    for text in texts:
        assert enc.decode(enc.encode_ordinary(text)) == text


def test_documents_start_with_the_separator():
    assert encode_document("hi", "gpt2")[0] == GPT2_EOT
    tokens = encode_document("héllo", "bytes")
    assert tokens[0] == BYTES_EOT and len(tokens) == 1 + len("héllo".encode())
    assert decode(tokens, "bytes") == "héllo"


def test_embedded_shards_match_the_corpus(root):
    """The committed tiny-cpu shards are what data/prepare_brown.py produces (deterministic split)."""
    from data.prepare_brown import split_documents
    from nanogpt.data import open_shard

    train, val = split_documents(root / "data" / "brown" / "brown.jsonl")
    assert (len(train), len(val)) == (475, 25)
    shard = open_shard(root / "data" / "brown" / "shards" / "brown_val_000000.bin")
    expected = np.concatenate([encode_document(d, "bytes") for d in val])
    assert np.array_equal(np.asarray(shard), expected)
