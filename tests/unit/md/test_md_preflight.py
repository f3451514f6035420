"""``mlff md`` reads the structure and checks the potential its config names before it creates or writes its
run directory: a typo leaves no run directory behind."""

from __future__ import annotations

import pytest
import yaml
from md_helpers import acid_water_file

from mlff.cli import main
from mlff.errors import MLFFError
from mlff.md import run_md


def _config(structure, out, potential) -> dict:
    return {"structure": structure, "potential": potential, "steps": 2, "dtype": "float64", "device": "cpu",
            "out": str(out)}


@pytest.mark.parametrize("bad, words", [("structure", ["structure file not found", "no_such.xyz"]),
                                        ("potential", ["potential", "no-such-potential", "not found"]),
                                        ("no potential", ["potential: give a potential directory"])])
def test_a_bad_structure_or_potential_is_refused_before_out_is_created(tmp_path, small_config, capsys, bad, words):
    out = tmp_path / "run"
    structure = acid_water_file(tmp_path, reaction=False)
    config = {"structure": _config(str(tmp_path / "no_such.xyz"), out, small_config),
              "potential": _config(structure, out, "no-such-potential"),
              "no potential": _config(structure, out, None)}[bad]
    with pytest.raises(MLFFError) as info:
        run_md(config)
    assert all(word in str(info.value) for word in words), str(info.value)
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["md", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words[0] in err, err
    assert not out.exists()
