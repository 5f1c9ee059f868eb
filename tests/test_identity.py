"""What makes two runs the same configuration (issue: "Identity = what runs") and how a run's
hyperparameters resolve: the harness hash covers the code that runs a step and nothing that only
reads runs; an optimizer's code hash covers every project module it imports and the third-party
packages it imports; tuned values are data; conflicting or out-of-range choices are refused."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap

import pytest
from fake_runs import fake_run

import optimizers
import run
from nanogpt.errors import UserError
from nanogpt.identity import closure
from nanogpt.optim import default_hparams, load_optimizer, tuned_table
from nanogpt.runlog import code_sha256, combined_sha256, harness_files, manifest, parse_log, read_sources
from nanogpt.runspec import resolve, track_sha256
from nanogpt.tracks import ROOT, debug_variant, get_track


def project_copy(tmp_path):
    """run.py, the training core, the optimizers and the reporting package, copied to edit freely."""
    for name in ("nanogpt", "optimizers", "analysis"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "run.py", tmp_path / "run.py")
    return tmp_path


def harness_hash(root) -> str:
    files = harness_files(root)
    return combined_sha256(files, manifest(read_sources(root, files)))


def optimizer_hash(root, name: str) -> str:
    deps, _ = closure(root / "optimizers" / f"{name}.py", root)
    files = [f"optimizers/{name}.py", *deps]
    return code_sha256(files, manifest(read_sources(root, files)), {})


def test_the_harness_is_the_code_that_runs_a_step_and_not_reporting(tmp_path):
    root = project_copy(tmp_path)
    files = harness_files(root)
    assert files[0] == "run.py" and "nanogpt/train.py" in files and "nanogpt/model.py" in files
    assert not [f for f in files if f.startswith("analysis/")]
    before = harness_hash(root)
    (root / "analysis" / "plots.py").write_text((root / "analysis" / "plots.py").read_text() + "\n# a cosmetic edit\n")
    assert harness_hash(root) == before  # a plot edit never splits a configuration
    (root / "nanogpt" / "schedule.py").write_text((root / "nanogpt" / "schedule.py").read_text() + "\n# an edit\n")
    assert harness_hash(root) != before


def test_an_optimizers_code_hash_follows_its_imports(tmp_path):
    root = project_copy(tmp_path)
    muon2f, muon = optimizer_hash(root, "muon2f"), optimizer_hash(root, "muon")
    (root / "optimizers" / "muon2.py").write_text((root / "optimizers" / "muon2.py").read_text() + "\n# an edit\n")
    assert optimizer_hash(root, "muon2f") != muon2f  # muon2f imports its update rule from muon2.py
    assert optimizer_hash(root, "muon") == muon  # muon does not
    (root / "optimizers" / "_orthogonalize.py").write_text((root / "optimizers" / "_orthogonalize.py").read_text() + "\n#\n")
    assert optimizer_hash(root, "muon") != muon


def test_the_track_table_enters_by_value_so_another_tracks_edit_splits_nothing(tmp_path):
    """Calibrating tiny-llama-cpu (or adding a track) must not orphan tiny-cpu's records; changing
    the track classes (code) or tiny-cpu's own values does split them."""
    root = project_copy(tmp_path)
    tracks = root / "nanogpt" / "tracks.py"
    before = harness_hash(root)
    assert "nanogpt/tracks.py" not in harness_files(root) and "nanogpt/config.py" in harness_files(root)
    tracks.write_text(tracks.read_text().replace("target=cpu_target(1.5331)", "target=1.57"))
    assert "target=1.57" in tracks.read_text() and harness_hash(root) == before
    (root / "nanogpt" / "config.py").write_text((root / "nanogpt" / "config.py").read_text() + "\n# an edit\n")
    assert harness_hash(root) != before
    # tiny-cpu's own values reach its configuration key through the resolved track
    assert resolve("tiny-cpu", "muon", []).key() != resolve("tiny-cpu", "muon", [], no_compile=True).key()


def test_judging_a_track_differently_keeps_its_runs_one_configuration():
    """Calibrating the steps rule, choosing the other rule or widening the budget changes how runs
    are judged, not what they compute: the track's identity stays. A field a run computes with
    (target, cadence, validation size, schedule shape) changes it."""
    track = get_track("tiny-cpu")
    judged = track.with_overrides(description="reworded", max_steps=5000, rule="steps", steps_sigma=0.0063,
                                  steps_threshold=0.0194, steps_loss_per_step=0.00056)
    assert track_sha256(judged) == track_sha256(track)
    for change in ({"target": 1.59}, {"eval_every": 50}, {"val_tokens": 32768}, {"steps": 401},
                   {"schedule": {**track.schedule, "cooldown_frac": 0.5}}):
        assert track_sha256(track.with_overrides(**change)) != track_sha256(track), change


def test_the_muon_familys_shared_code_is_not_in_an_adamw_runs_identity(tmp_path):
    root = project_copy(tmp_path)
    before, adamw, muon = harness_hash(root), optimizer_hash(root, "adamw"), optimizer_hash(root, "muon")
    for name in ("_matrix.py", "_orthogonalize.py", "_library.py"):
        (root / "optimizers" / name).write_text((root / "optimizers" / name).read_text() + "\n# an edit\n")
    assert harness_hash(root) == before and optimizer_hash(root, "adamw") == adamw
    assert optimizer_hash(root, "muon") != muon
    (root / "optimizers" / "_aux.py").write_text((root / "optimizers" / "_aux.py").read_text() + "\n# an edit\n")
    assert harness_hash(root) != before  # the auxiliary AdamW runs in every optimizer's run


def test_an_installed_class_is_hashed_with_the_glue_that_runs_it():
    spec = resolve("tiny-cpu", "torch.optim.NAdam", [])
    assert spec.code[1:] == ["optimizers/_library.py"] and "optimizers/_library.py" in spec.sources


def test_a_third_party_package_an_optimizer_imports_is_in_its_hash(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fancyopt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("SCALE = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    module = tmp_path / "fancy.py"
    module.write_text(textwrap.dedent("""
        import torch
        import fancyopt
        DEFAULTS = {"lr": 0.1}
        def build(params, hp, model):
            return [torch.optim.SGD([p for ps in params.values() for p in ps], lr=hp["lr"] * fancyopt.SCALE)]
    """))
    try:
        first = resolve("tiny-cpu", str(module), [])
        assert first.packages["fancyopt"]["files"] == 1 and "torch" not in first.packages
        (pkg / "__init__.py").write_text("SCALE = 2.0\n")
        second = resolve("tiny-cpu", str(module), [])
        assert second.code_sha256 != first.code_sha256 and second.key() != first.key()
    finally:
        sys.modules.pop("fancyopt", None)


@pytest.mark.parametrize("name", optimizers.available())
def test_resolved_hyperparameters_are_what_list_prints_and_what_the_log_records(tmp_path, capsys, name):
    run.list_everything("tiny-cpu")
    listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"  {name}: "))
    spec = resolve("tiny-cpu", name, [])
    assert listed == f"  {name}: " + ", ".join(f"{k}={v}" for k, v in spec.hparams.items())
    assert spec.hparams == default_hparams(load_optimizer(name), get_track("tiny-cpu"))
    assert spec.hparams == {**default_hparams(load_optimizer(name), get_track("tiny-cpu")),
                            **tuned_table().get(name, {}).get("tiny-cpu", {})}
    if name in ("muon", "adamw", "sgd"):  # the synthetic runs' profiles
        fake_run(["--optimizer", name, "--records-dir", str(tmp_path)])
        (log,) = (tmp_path / "logs").glob("*.txt")
        assert parse_log(log).config["hparams"] == json.loads(json.dumps(spec.hparams))
        assert parse_log(log).config["steps"] == spec.hparams["steps"]


def test_a_tuned_schedule_length_is_the_one_that_runs():
    """AdamW's tuned tiny-cpu schedule (its admitted T, longer than the track's) is what runs: what
    --list shows is what runs."""
    tuned = tuned_table()["adamw"]["tiny-cpu"]["steps"]
    assert tuned != get_track("tiny-cpu").steps
    spec = resolve("tiny-cpu", "adamw", [])
    assert spec.hparams["steps"] == tuned == spec.track.steps
    # a smoke test keeps the debug variant's own short schedule
    assert resolve("tiny-cpu", "adamw", [], debug_model=True).track.steps == debug_variant(get_track("tiny-cpu"), "cpu").steps


@pytest.mark.parametrize("sets, steps, message", [
    (["steps=4"], 3, "--steps and --set steps=... both set the schedule length"),
    (["lr=0.02", "lr=0.03"], None, r"lr is given twice \(0.02 and 0.03\)"),
    (["lr=-1"], None, "lr=-1.0 must not be negative"),
    (["embed_lr=-0.1"], None, "embed_lr=-0.1 must not be negative"),
    (["momentum=1.5"], None, r"momentum=1.5 must lie in \[0, 1\]"),
    (["weight_decay=-0.01"], None, "weight_decay=-0.01 must not be negative"),
])
def test_conflicting_or_out_of_range_choices_are_refused(sets, steps, message):
    with pytest.raises(UserError, match=message):
        resolve("tiny-cpu", "muon", sets, steps)


def test_a_bad_tuned_value_names_the_file(monkeypatch):
    monkeypatch.setitem(tuned_table(), "muon", {"tiny-cpu": {"lr": "fast"}})
    with pytest.raises(UserError, match=r"tuned.toml: \[muon.tiny-cpu\] lr = 'fast' is not a hyperparameter"):
        resolve("tiny-cpu", "muon", [])
