"""Every command-line script answers --help from any directory (the packages are installed, no
sys.path edits), shows its defaults, and the long ones say what their default invocation costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPTS = {  # script -> a word of the description that says how long or how big the default invocation is
    "scripts/leaderboard.py": None,
    "scripts/claims.py": "seconds",
    "scripts/rebuild_records.py": None,
    "scripts/robustness.py": "minutes",
    "scripts/verify.py": None,
    "scripts/bench.py": "runs",
    "scripts/compare_records.py": "seconds",
    "data/fineweb.py": "GB",
    "data/make_local_gpt2_shards.py": "MB",
    "data/prepare_brown.py": None,
    "data/tokenize_corpus.py": None,
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_works_from_another_directory_and_shows_the_defaults(script, root, tmp_path):
    assert "sys.path.insert" not in (root / script).read_text()
    done = subprocess.run([sys.executable, str(root / script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(default:" in done.stdout
    if SCRIPTS[script]:
        assert SCRIPTS[script] in done.stdout
