"""Staged output folders: never half-written, never silently replaced (issue 10 §4)."""

import json

import numpy as np
import pytest

from jcausal.results import MARKER, staged_output, to_jsonable, write_metrics


def _names(path):
    """The visible entries (the marker of a jcausal folder is hidden)."""
    return sorted(p.name for p in path.iterdir() if p.name != MARKER)


def _previous_run(out, **files):
    """A folder as an earlier run left it."""
    out.mkdir(parents=True)
    (out / MARKER).write_text("")
    for name, text in files.items():
        (out / name).write_text(text)


def test_results_appear_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "a" / "out"  # parents are created
    with staged_output(out) as stage:
        (stage / "x.txt").write_text("new")
        assert not out.exists()  # nothing visible while the run computes
    assert _names(out) == ["x.txt"] and (out / MARKER).is_file()
    assert _names(out.parent) == ["out"]


def test_non_empty_folder_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    _previous_run(out, **{"old.txt": "old"})
    with pytest.raises(ValueError, match=r"already holds results \(old\.txt\).*--overwrite"):
        with staged_output(out):
            raise AssertionError("the block must not run")
    with staged_output(out, overwrite=True) as stage:
        (stage / "new.txt").write_text("new")
    assert _names(out) == ["new.txt"]  # replaced as a whole: the old file is gone
    assert _names(tmp_path) == ["out"]
    # an empty folder is fine without overwrite
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_output(empty) as stage:
        (stage / "a").write_text("")
    assert _names(empty) == ["a"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_a_failing_run_leaves_the_folder_as_it_was(tmp_path, exc):
    out = tmp_path / "out"
    _previous_run(out, **{"old.txt": "old"})
    with pytest.raises(exc):
        with staged_output(out, overwrite=True) as stage:
            (stage / "half.txt").write_text("half")
            raise exc()
    assert _names(out) == ["old.txt"] and (out / "old.txt").read_text() == "old"
    assert _names(tmp_path) == ["out"]  # no temporary folder left


def test_overwrite_never_deletes_a_folder_jcausal_did_not_write(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match=r"jcausal did not write \(thesis\.tex\)"):
        with staged_output(home, overwrite=True):
            raise AssertionError("the block must not run")
    monkeypatch.chdir(home)
    for cwd_or_parent in (".", "..", home):
        with pytest.raises(ValueError, match="working folder or one of its parents"):
            with staged_output(cwd_or_parent, overwrite=True):
                raise AssertionError("the block must not run")
    assert (home / "thesis.tex").read_text() == "years of work"


def test_unwritable_targets_are_found_on_entry(tmp_path):
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(ValueError, match="--out"):
            with staged_output(bad):
                raise AssertionError("the block must not run")


def test_stale_partial_folders_of_dead_runs_are_removed(tmp_path):
    stale = tmp_path / ".out.partial-999999999-abc"  # no such process
    stale.mkdir()
    with staged_output(tmp_path / "out") as stage:
        (stage / "a").write_text("")
    assert _names(tmp_path) == ["out"]


def test_state_stays_in_place_and_does_not_count_as_results(tmp_path):
    # Deep SCM keeps checkpoints in --out so that a second run resumes.
    out = tmp_path / "out"
    (out / "checkpoints" / "full").mkdir(parents=True)
    (out / "checkpoints" / "full" / "7").write_text("ckpt")
    (out / "train_full.jsonl").write_text('{"step": 7}\n')
    state = ("checkpoints", "train_*.jsonl")
    with staged_output(out, state=state) as stage:  # only state: a resume, allowed
        (out / "train_full.jsonl").write_text('{"step": 7}\n{"step": 8}\n')  # written live
        (stage / "metrics.json").write_text("{}")
    assert _names(out) == ["checkpoints", "metrics.json", "train_full.jsonl"]
    assert (out / "train_full.jsonl").read_text().count("step") == 2
    with pytest.raises(ValueError, match=r"already holds results \(metrics\.json\)"):
        with staged_output(out, state=state):
            pass
    with pytest.raises(RuntimeError):
        with staged_output(out, overwrite=True, state=state) as stage:
            (stage / "metrics.json").write_text("half")
            raise RuntimeError
    assert (out / "metrics.json").read_text() == "{}"
    with staged_output(out, overwrite=True, state=state) as stage:
        (stage / "metrics.json").write_text('{"new": 1}')
    assert (out / "checkpoints" / "full" / "7").read_text() == "ckpt"
    assert json.loads((out / "metrics.json").read_text()) == {"new": 1}
    assert _names(tmp_path) == ["out"]


def test_metrics_json_is_valid_json_with_non_finite_values(tmp_path):
    write_metrics(tmp_path, {"a": np.float64("nan"), "b": np.array([1.0, np.inf])})
    record = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON parses
    assert record["metrics"] == {"a": "nan", "b": [1.0, "inf"]}
    assert to_jsonable(np.int64(3)) == 3
