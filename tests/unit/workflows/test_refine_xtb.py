"""workflows/fdh_refine_xtb.py: the loop's labels shipped as training data, and its history in the model card."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

spec = importlib.util.spec_from_file_location("fdh_refine_xtb", Path(__file__).resolve().parents[3] / "workflows" / "fdh_refine_xtb.py")
refine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(refine)


def test_export_puts_every_label_in_the_training_split_with_its_provenance(tmp_path):
    from mlff.data import Dataset, make_record
    from mlff.errors import MLFFError

    run = tmp_path / "run"
    run.mkdir()
    records = []
    for k in range(3):
        atoms = molecule("H2O")
        atoms.positions[0, 0] += 0.02 * k
        atoms.info.update(learn_split="train" if k else "valid", learn_iteration=k, provenance={"method": "GFN2-xTB"},
                          xi=(-1.0, 0.1, 0.9)[k])
        records.append(make_record(atoms, energy=-float(k), forces=np.full((3, 3), 0.1 * k), tags=["md"]))
    Dataset.create(run / "labels.h5").append(records)
    out = tmp_path / "refine.h5"
    assert refine.export(run, out) == 3
    back = Dataset(out)
    infos = back.infos()
    assert [i["split"] for i in infos] == ["train"] * 3
    assert [set(i["tags"]) for i in infos] == [{"md", "refine", r} for r in ("reactant", "ts", "product")]
    assert [i["learn_iteration"] for i in infos] == [0, 1, 2] and infos[0]["provenance"]["method"] == "GFN2-xTB"
    assert np.allclose(back.column("energy"), [0.0, -1.0, -2.0])
    with pytest.raises(MLFFError, match="no labels"):
        refine.export(tmp_path / "elsewhere", out)


def test_the_card_section_tells_each_iteration_and_replaces_an_old_one(tmp_path):
    run = tmp_path / "run"
    for k, (status, steps) in enumerate((("stopped", 370), ("finished", 1200))):
        it = run / f"iter_{k:03d}"
        (it / "explore" / "md").mkdir(parents=True)
        (it / "report.json").write_text(json.dumps({"iteration": k, "labelled_this_iteration": 28 + k,
                                                    "labels_spent": 28 + 57 * k, "calibration": {"slope": 2.67},
                                                    "test": {"all": {"forces_rmse_meV_A": 104.0 - k,
                                                                     "energy_rmse_meV_atom": 4.77}}}))
        (it / "explore" / "md" / "run.json").write_text(json.dumps({"status": status, "step": steps,
                                                                    "config": {"steps": 1200}}))
    (run / "iter_002").mkdir()  # an iteration still running has no report: not a row
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# p\n\n## Refinement\n\nold\n\n## Stability\n\nkept\n")
    refine.card(tmp_path, run)
    text = card.read_text()
    assert "old" not in text and text.count("## Refinement") == 1 and "## Stability\n\nkept" in text
    assert "| 0 | 28 (28) | 370 of 1200 (stopped) | 2.67 | 104 | 4.77 |" in text
    assert "| 1 | 29 (85) | 1200 of 1200 | 2.67 | 103 | 4.77 |" in text


def test_a_script_error_is_one_line_and_exit_status_2(capsys):
    assert refine.main(["export", "--run", "/nonexistent/run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fdh_refine_xtb: no labels at /nonexistent/run/labels.h5") and "Traceback" not in err
