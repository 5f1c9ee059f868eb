"""The FineWeb downloader against a local Hugging Face cache with the hub offline, and the GPT-2
tokenizer script on text, JSONL and parquet: resumable, validated, deterministic, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data import tokenize_corpus
from data.fineweb import REPO_ID, shard_names
from nanogpt.data import open_shard, shard_token_count, write_shard
from nanogpt.errors import UserError
from nanogpt.tokenizer import GPT2_EOT, encode_document, gpt2_encoding

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(cache: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The layout huggingface_hub writes (refs/main -> snapshots/<commit>/<file> -> ../../blobs/<hash>),
    holding small valid shards, so that hf_hub_download resolves them offline."""
    repo = cache / f"datasets--{REPO_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot, blobs = repo / "snapshots" / COMMIT, repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    tokens = {}
    for i, name in enumerate(names):
        tokens[name] = np.random.default_rng(i).integers(0, 50257, size=1000 + 10 * i)
        write_shard(blobs / f"blob{i}", tokens[name])
        (snapshot / name).symlink_to(Path("..", "..", "blobs", f"blob{i}"))
    return tokens


def download(root: Path, dest: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    cmd = [sys.executable, "data/fineweb.py", "--dir", str(dest), "--cache-dir", str(cache), *args]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, env=env)


def test_shard_names_are_the_datasets():
    assert shard_names(2) == ["fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    with pytest.raises(UserError, match="train shards 1 to 103"):
        shard_names(104)


def test_offline_download_validates_resumes_and_repairs(tmp_path, root):
    names = shard_names(2)
    tokens = fake_hub_cache(tmp_path / "cache", names)
    dest = tmp_path / "fineweb10B"

    first = download(root, dest, tmp_path / "cache", "--train-shards", "2")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": downloaded,") == 3 and "1 validation + 2 train shards ready" in first.stdout
    for name in names:
        assert np.array_equal(open_shard(dest / name), tokens[name])

    again = download(root, dest, tmp_path / "cache", "--train-shards", "2")
    assert again.returncode == 0 and again.stdout.count(": present,") == 3

    damaged = (dest / names[1]).read_bytes()[:-6]
    (dest / names[1]).unlink()  # the shard is a hard link to the cache: replace it, as an interrupted copy would
    (dest / names[1]).write_bytes(damaged)
    repaired = download(root, dest, tmp_path / "cache", "--train-shards", "2")
    assert repaired.returncode == 0, repaired.stderr
    assert "is corrupt" in repaired.stderr and "fetching it again" in repaired.stderr
    assert np.array_equal(open_shard(dest / names[1]), tokens[names[1]])
    assert not list(dest.glob("*.tmp"))


def test_offline_without_the_shard_is_a_one_line_error(tmp_path, root):
    fake_hub_cache(tmp_path / "cache", shard_names(1))
    proc = download(root, tmp_path / "out", tmp_path / "cache", "--train-shards", "2")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "cannot download fineweb_train_000002.bin" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert (tmp_path / "out" / "fineweb_train_000001.bin").exists()  # what was fetched stays: the rerun resumes


def test_a_damaged_download_is_refused(tmp_path, root):
    fake_hub_cache(tmp_path / "cache", shard_names(1))
    blob = next((tmp_path / "cache").glob("datasets--*/blobs/blob1"))
    blob.write_bytes(blob.read_bytes()[:-2])
    proc = download(root, tmp_path / "out", tmp_path / "cache", "--train-shards", "1")
    assert proc.returncode == 2 and "the downloaded fineweb_train_000001.bin is damaged" in proc.stderr
    assert not (tmp_path / "out" / "fineweb_train_000001.bin").exists()


# ---- the tokenizer script ---------------------------------------------------------------------------

DOCS = ["The Fulton County Grand Jury said Friday.", "Héllo wörld — unicode\nand lines.", "Short.", "x " * 300]


def expected_tokens(docs: list[str]) -> np.ndarray:
    return np.concatenate([encode_document(d, "gpt2") for d in docs])


def write_inputs(folder: Path) -> list[Path]:
    """The same four documents as a .txt (one document), a .jsonl and a .parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    txt, jsonl, parquet = folder / "a.txt", folder / "b.jsonl", folder / "c.parquet"
    txt.write_text(DOCS[0], encoding="utf-8")
    jsonl.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS[1:3])) + "\n\n", encoding="utf-8")
    pq.write_table(pa.table({"text": DOCS[3:], "url": ["u"]}), parquet)
    return [txt, jsonl, parquet]


@pytest.mark.parametrize("procs", [1, 2])
def test_tokenizer_packs_documents_in_order(tmp_path, procs):
    inputs = write_inputs(tmp_path / "in")
    paths = tokenize_corpus.tokenize_files(inputs, tmp_path / "out", prefix="fw", shard_size=100, procs=procs)
    tokens = np.concatenate([open_shard(p) for p in paths])
    assert np.array_equal(tokens, expected_tokens(DOCS))
    assert [p.name for p in paths[:2]] == ["fw_val_000000.bin", "fw_train_000001.bin"]
    assert all(shard_token_count(p) == 100 for p in paths[:-1]) and 0 < shard_token_count(paths[-1]) <= 100
    assert gpt2_encoding().decode(tokens.tolist()).count("<|endoftext|>") == len(DOCS) and tokens[0] == GPT2_EOT


def test_tokenizer_output_does_not_depend_on_the_process_count(tmp_path):
    inputs = write_inputs(tmp_path / "in")
    one = tokenize_corpus.tokenize_files(inputs, tmp_path / "one", shard_size=64, procs=1)
    two = tokenize_corpus.tokenize_files(inputs, tmp_path / "two", shard_size=64, procs=2)
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]


@pytest.mark.parametrize("content, message", [
    ('{"text": "fine"}\n{"text": broken\n', r"bad\.jsonl:2: not valid JSON"),
    ('{"text": "fine"}\n{"body": "no text"}\n', r'bad\.jsonl:2: no string field "text"'),
])
def test_tokenizer_names_the_bad_line(tmp_path, capsys, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    assert tokenize_corpus.main([str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "out"), "--shard-size", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and __import__("re").search(message, err)


def test_tokenizer_refuses_bad_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["a"]}), tmp_path / "t.parquet")
    with pytest.raises(UserError, match='no "text" column'):
        tokenize_corpus.tokenize_files([tmp_path / "t.parquet"], tmp_path / "o1", shard_size=4)
    (tmp_path / "t.csv").write_text("text\n")
    with pytest.raises(UserError, match="unsupported type '.csv'"):
        tokenize_corpus.tokenize_files([tmp_path / "t.csv"], tmp_path / "o2", shard_size=4)
    (tmp_path / "small.txt").write_text("tiny")
    with pytest.raises(UserError, match="all fit in the validation shard"):
        tokenize_corpus.tokenize_files([tmp_path / "small.txt"], tmp_path / "o3", shard_size=1000)
    tokenize_corpus.tokenize_files([tmp_path / "small.txt"], tmp_path / "o4", shard_size=1)
    with pytest.raises(UserError, match="already holds fineweb shards"):
        tokenize_corpus.tokenize_files([tmp_path / "small.txt"], tmp_path / "o4", shard_size=1)
