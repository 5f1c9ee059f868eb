"""scripts/bench_overhead.py: its phases account for a run's whole wall time (a measurement
script, so the test checks the accounting, not any speed)."""

import json

import pytest
from conftest import load_script

bench = load_script("bench_overhead")


@pytest.mark.slow  # a fresh process of run.py: about 25 s alone, more under load
def test_the_phases_of_a_run_add_up_to_its_wall_time(tmp_path, capsys):
    out = tmp_path / "o.json"
    assert bench.main(["--repeats", "1", "--steps", "3", "--out", str(out), "--", "--debug-model", "--no-compile", "--quiet"]) == 0
    result = json.loads(out.read_text())
    (run,) = result["runs"]
    phases = run["phases"]
    assert set(phases) == set(bench.PHASES) and run["code"] == 0
    assert all(v >= 0 for v in phases.values()), phases
    assert abs(sum(phases.values()) - run["wall_s"]) < 0.05 * run["wall_s"]  # nothing unaccounted for, nothing twice
    assert phases["training (timed)"] > 0 and phases["evaluation"] > 0 and run["calib_ms"] > 0
    assert "outside training" in capsys.readouterr().out
