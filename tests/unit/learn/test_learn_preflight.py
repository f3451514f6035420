"""``mlff learn`` checks its whole config, the oracle included, before it writes anything into OUT: a run refused
for a typo leaves OUT as it was, so the corrected config then starts (or resumes)."""

from __future__ import annotations

import pytest
from learn_helpers import learn_dict

from mlff.learn import loop
from mlff.cli import main
from mlff.errors import MLFFError
from mlff.learn import run_learning


@pytest.fixture
def started(monkeypatch):
    """run_learning up to the loop itself: the checks, the lock and learn.json, then no training."""
    monkeypatch.setattr(loop, "_run", lambda config, out: {"status": "started", "out": str(out)})


def _snapshot(path):
    return {p.relative_to(path): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))} if path.exists() else None


def _sets(xtb_sets):
    return {"seed": xtb_sets["seed"], "test": xtb_sets["test"]}


@pytest.mark.parametrize("changes, words", [
    ({"select__per_iteraton": 3}, ["unknown key 'select.per_iteraton'"]),
    ({"test__path": "no/such/test.h5"}, ["test.path: no dataset at no/such/test.h5"]),
    ({"label": {"oracle": {"backend": "pyscf", "functional": "b3lyp", "basis": "def2-svqp"}}},
     ["basis 'def2-svqp'", "BasisNotFoundError"]),
    ({"label": {"oracle": {"backend": "pyscf", "functional": "b3lpy"}}}, ["unknown functional 'b3lpy'"]),
    ({"label": {"oracle": {"backend": "xtb", "solvent": 4}}}, ["unknown key 'solvent'", "solvent_eps"]),
    ({"initial": {"potential": "no-such-committee"}}, ["initial.potential", "no-such-committee"]),
])
def test_a_bad_config_is_refused_before_out_is_created_and_the_corrected_one_starts(tmp_path, xtb_sets, started,
                                                                                      changes, words):
    out = tmp_path / "run"
    with pytest.raises(MLFFError) as info:
        run_learning(learn_dict(out, _sets(xtb_sets), **changes))
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message
    assert not out.exists()  # nothing written: not even the run directory or its lock
    assert run_learning(learn_dict(out, _sets(xtb_sets)))["status"] == "started"
    assert (out / "learn.json").is_file()


def test_a_bad_oracle_on_resume_leaves_the_run_as_it_was(tmp_path, xtb_sets, started):
    out = tmp_path / "run"
    run_learning(learn_dict(out, _sets(xtb_sets)))
    (out / "initial.json").write_text("{}")  # the run has begun
    before = _snapshot(out)
    bad = learn_dict(out, _sets(xtb_sets), label={"oracle": {"backend": "pyscf", "basis": "def2-svqp"}})
    with pytest.raises(MLFFError, match="def2-svqp"):
        run_learning(bad, resume=True)
    with pytest.raises(MLFFError, match="already holds a learning run; pass --resume"):
        run_learning(learn_dict(out, _sets(xtb_sets)))
    assert _snapshot(out) == before
    assert run_learning(learn_dict(out, _sets(xtb_sets)), resume=True)["status"] == "started"


def test_nothing_to_resume_creates_nothing(tmp_path, xtb_sets, started):
    out = tmp_path / "run"
    with pytest.raises(MLFFError, match="nothing to resume"):
        run_learning(learn_dict(out, _sets(xtb_sets)), resume=True)
    assert not out.exists()


def test_a_run_refused_by_an_older_mlff_after_writing_learn_json_says_how_to_start_afresh(tmp_path, xtb_sets,
                                                                                          started):
    """An mlff that checked late left OUT with only learn.json (and its lock): the refusal says what to do."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "learn.json").write_text('{"config": {"seed": 99}, "provenance": {}}')
    (out / ".lock").write_text("")
    for resume, words in ((False, "already holds a learning run"), (True, "config changed")):
        with pytest.raises(MLFFError, match=words) as info:
            run_learning(learn_dict(out, _sets(xtb_sets)), resume=resume)
        assert f"it has begun nothing: delete {out / 'learn.json'} to start it afresh" in str(info.value)
    (out / "learn.json").unlink()
    assert run_learning(learn_dict(out, _sets(xtb_sets)))["status"] == "started"


def test_the_cli_refuses_a_typo_in_one_line_and_writes_nothing(tmp_path, xtb_sets, capsys):
    import json

    out = tmp_path / "run"
    config = learn_dict(out, _sets(xtb_sets), label={"oracle": {"backend": "pyscf", "basis": "def2-svqp"}})
    path = tmp_path / "learn.yaml"
    path.write_text(json.dumps(config, default=str))  # JSON is YAML
    assert main(["learn", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "def2-svqp" in err
    assert not out.exists()
