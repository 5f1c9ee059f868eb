"""Runs finishing at once on one machine never lose or tear a row."""

import multiprocessing as mp

from analysis.records import read_table
from nanogpt.recording import COLUMNS, SCHEMA_VERSION, append_row


def row(i: int) -> dict:
    r = {c: "" for c in COLUMNS}
    r.update(run_id=f"run-{i}", track="tiny-cpu", optimizer="muon", hparams='{"lr": 0.02, "note": "a,b\\"c"}', seed=i,
             status="ok", schema_version=SCHEMA_VERSION, log="x" * 5000)
    return r


def append_many(args):
    records_dir, start, barrier = args
    barrier.wait()
    for i in range(start, start + 25):
        append_row(records_dir, row(i))


def test_concurrent_appends_lose_nothing(tmp_path):
    ctx = mp.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(8)
        with ctx.Pool(8) as pool:
            pool.map(append_many, [(str(tmp_path), 25 * k, barrier) for k in range(8)])
    df = read_table(tmp_path)
    assert sorted(df["seed"]) == list(range(200))
    assert (df["log"].str.len() == 5000).all()
    assert (tmp_path / "records.csv").read_text().count("run_id") == 1  # one header
