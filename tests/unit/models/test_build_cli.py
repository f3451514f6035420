"""`mlff potential build` refuses to overwrite an existing potential directory without --force."""

import yaml

from mlff.cli import main


def test_potential_build_refuses_an_existing_directory_without_force(tmp_path, small_config, capsys):
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump(small_config))
    out = tmp_path / "pot"
    assert main(["potential", "build", str(model), str(out)]) == 0
    before = (out / "potential.json").read_text()
    assert main(["potential", "build", str(model), str(out), "--seed", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"mlff: error: {out} exists; pass --force to overwrite it, or choose another directory"
    assert (out / "potential.json").read_text() == before
    assert main(["potential", "build", str(model), str(out), "--seed", "3", "--force"]) == 0
    assert (out / "potential.json").read_text() != before
