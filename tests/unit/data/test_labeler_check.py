"""A labeller spec is checked against the structures before anything is written (``check_labeler``): an unknown
basis, a basis without one of their elements, an impossible charge or multiplicity. ``mlff data label`` (serial
and with workers) and ``mlff learn`` refuse such a spec before their output exists; no calculation is run."""

from __future__ import annotations

import pytest
from ase import Atoms
from ase.build import molecule

from mlff.cli import main
from mlff.data import Dataset, label
from mlff.data.labelers import PySCFLabeler, check_labeler
from mlff.data.workers import label_with_workers
from mlff.errors import MLFFError

pytest.importorskip("pyscf")
pytestmark = pytest.mark.filterwarnings("ignore:Basis may be available")

GAS_HF = {"backend": "pyscf", "functional": "hf", "basis": "sto-3g", "dispersion": None, "solvent_eps": None,
          "density_fit": False}


def _water():
    return [molecule("H2O"), molecule("CH4")]


def test_check_labeler_runs_no_calculation_and_names_what_is_wrong(monkeypatch):
    monkeypatch.setattr(PySCFLabeler, "compute", lambda self, atoms: pytest.fail("no calculation in a check"))
    assert check_labeler(GAS_HF, _water()).basis == "sto-3g"
    with pytest.raises(MLFFError, match=r"basis 'def2-svqp' \(BasisNotFoundError"):
        check_labeler({**GAS_HF, "basis": "def2-svqp"}, _water())
    with pytest.raises(MLFFError, match="cannot build U in basis '6-31g'"):
        check_labeler({**GAS_HF, "basis": "6-31g"}, [Atoms("U", positions=[[0, 0, 0]])])
    radical = molecule("H2O")
    radical.info["multiplicity"] = 2
    with pytest.raises(MLFFError, match="structure 1: charge 0 and multiplicity 2 impossible"):
        check_labeler(GAS_HF, [molecule("CH4"), radical])
    with pytest.raises(MLFFError, match="periodic"):
        check_labeler(GAS_HF, [Atoms(molecule("H2O"), cell=[8.0, 8.0, 8.0], pbc=True)])
    with pytest.raises(MLFFError, match="unknown key 'basis'"):
        check_labeler({"backend": "xtb", "basis": "def2-svp"}, _water())
    assert check_labeler({"backend": "xtb"}, _water()).name == "gfn2-xtb"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_basis_is_refused_before_the_output_exists(tmp_path, workers):
    out = tmp_path / "out.h5"
    spec = {**GAS_HF, "basis": "def2-svqp"}
    with pytest.raises(MLFFError, match="def2-svqp"):
        if workers == 1:
            label(_water(), PySCFLabeler(**{k: v for k, v in spec.items() if k != "backend"}), out, progress=False)
        else:
            label_with_workers(_water(), spec, out, workers=workers, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no dataset, no lock file, no workers' folder


def test_the_cli_refuses_an_unknown_basis_in_one_line_and_writes_nothing(tmp_path, capsys):
    pool = tmp_path / "pool.h5"
    Dataset.create(pool).append(_water(), require=())
    before = sorted(p.name for p in tmp_path.iterdir())
    for workers in ("1", "2"):
        assert main(["data", "label", str(pool), str(tmp_path / "out.h5"), "--basis", "def2-svqp", "--gas",
                     "--workers", workers]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "basis 'def2-svqp'" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # the pool (and its lock file) only
