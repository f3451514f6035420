"""Paths in sbatch scripts are data, never shell text: every kind's scripts, rendered for run directories whose
names hold shell syntax, are valid bash, give sbatch every directive, and run the program with exactly the
words of the job's command (nothing injected runs); what an #SBATCH line cannot carry is refused by name."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from mlff.cli import main
from mlff.errors import MLFFError
from mlff.hpc.kinds import Options, plan
from mlff.hpc.profile import load_profile
from mlff.hpc.script import expand_word
from mlff.hpc.submit import scripts

LEGAL = ["a b", "$(touch PWNED)", "`touch PWNED`", "it's", "x #1 50%x", "; | & < > * ? ~ ! ${HOME} {a,b}"]
ILLEGAL = ['say "hi"', "new\nline", "tab\tx", "back\\slash"]  # not writable in an #SBATCH line

FAKE_MLFF = """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE_RECORD"
printf '%s\\0' "${MLFF_STOP_FILE-}" "${MLFF_EXIT_STATUS-}" > "$FAKE_RECORD.env"
"""
FAKE_SRUN = """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE_RECORD.srun"
while [ "$1" != --no-python ]; do shift; done
shift
exec "$@"
"""


def _configs(d: Path) -> None:
    """A config of every kind in ``d``, each run inside ``d``, and a chain of them all."""
    from ase.build import molecule
    from ase.io import write

    waters = [molecule("H2O"), molecule("H2O")]
    for atoms in waters:
        atoms.info.update(charge=0, multiplicity=1)
    write(d / "pool.xyz", waters, format="extxyz")
    configs = {
        "md": {"structure": "x.xyz", "steps": 10, "out": str(d / "md out")},
        "umbrella": {"structure": "fdh-cluster:small:reactant", "potential": "gfn2-xtb", "centers_A": [-0.2, 0.2],
                     "equilibration_steps": 10, "production_steps": 30, "out": str(d / "umbrella")},
        "learn": {"structure": "fdh-cluster:small:reactant", "out": str(d / "learn"),
                  "initial": {"potential": "some-committee"}, "explore": {"md": {"steps": 100}},
                  "label": {"oracle": {"backend": "xtb"}}},
        "train": {"data": {"paths": "d.h5"}, "model": {"species": ["H", "O"]}, "out": str(d / "train"),
                  "committee": 2},
        "label": {"pool": str(d / "pool.xyz"), "out": str(d / "labels.h5"), "shards": 2,
                  "labeler": {"backend": "ase", "calculator": "emt"}},
    }
    for kind, config in configs.items():
        (d / f"{kind}.yaml").write_text(yaml.safe_dump(config))
    (d / "chain.yaml").write_text(yaml.safe_dump({"steps": [{"kind": k, "config": f"{k}.yaml"} for k in configs]}))


def _rendered(d: Path, profile) -> list:
    """(job, script text, logs dir) of every kind: md, umbrella, learn, train, label array + merge (as one chain),
    and training as committee-member array tasks run by srun torchrun, then the assembling job."""
    chain = plan("chain", str(d / "chain.yaml"), profile)
    members = plan("train", str(d / "train.yaml"), profile, Options(committee_array=True))
    assert {j.kind for j in chain.jobs} >= {"md", "learn", "train", "label", "merge"}
    assert members.jobs[0].torchrun and members.jobs[0].array == 2
    out = []
    for the_plan, kind, config in ((chain, "chain", d / "chain.yaml"), (members, "train", d / "train.yaml")):
        texts = scripts(the_plan, profile, kind=kind, config=str(config))
        out += [(job, text, str(Path(the_plan.run_dir) / "slurm" / "logs")) for job, text in zip(the_plan.jobs,
                                                                                                   texts.values())]
    return out


def _sbatch_words(text: str) -> tuple[list[str], int]:
    """The options sbatch reads from a script (src/sbatch/opt.c: _opt_batch_script, _get_argument): #SBATCH lines
    up to the first command, split at blanks, quotes grouping, a backslash escaping, an unquoted # ending the
    line; and how many #SBATCH lines the script holds in all."""
    words = []
    for line in text.splitlines()[1:]:
        if not line.startswith("#SBATCH"):
            if line.strip() and not line.strip().startswith("#"):
                break
            continue
        word, quote, escaped, started = "", None, False, False
        for ch in line[len("#SBATCH"):] + " ":
            if escaped:
                word, escaped = word + ch, False
            elif ch == "\\":
                escaped = started = True
            elif quote:
                word, quote = (word, None) if ch == quote else (word + ch, quote)
            elif ch in "\"'":
                quote = started = ch
            elif ch == "#":
                break
            elif ch.isspace():
                if started:
                    words.append(word)
                word, started = "", False
            else:
                word, started = word + ch, True
        if started:
            words.append(word)
    return words, sum(line.startswith("#SBATCH") for line in text.splitlines())


def _read(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\0")[:-1]


@pytest.mark.parametrize("name", LEGAL)
def test_every_kind_quotes_hostile_paths_and_runs_exactly_its_command(tmp_path, monkeypatch, name):
    d = tmp_path / name
    (d / "bin").mkdir(parents=True)
    monkeypatch.chdir(d)  # the scripts' --chdir
    fake = d / "bin" / "fake mlff"
    fake.write_text(FAKE_MLFF)
    (tmp_path / "srun").write_text(FAKE_SRUN)
    for f in (fake, tmp_path / "srun"):
        f.chmod(0o755)
    _configs(d)
    torchrun = [str(d / "torchrun"), "--standalone"]
    profile = load_profile(None, {"mlff": shlex.quote(str(fake)), "torchrun": shlex.join(torchrun),
                                  "procs_per_node": 2, "venv": str(d / "venv"), "modules": [name]})
    (d / "venv" / "bin").mkdir(parents=True)
    (d / "venv" / "bin" / "activate").write_text("")
    rendered = _rendered(d, profile)
    assert len(rendered) == 8
    for k, (job, text, logs) in enumerate(rendered):
        where = f"{job.name} ({job.kind})"
        assert subprocess.run(["bash", "-n"], check=False, input=text, text=True).returncode == 0, where
        words, n_directives = _sbatch_words(text)
        pattern = f"{logs.replace('%', '%%')}/{job.name}-" + ("%A_%a.out" if job.array else "%j.out")
        assert f"--output={pattern}" in words, where  # a literal % is %% in sbatch's filename pattern
        assert f"--chdir={d}" in words and "--requeue" in words and "--time=01:00:00" in words, where
        assert len(words) == n_directives, where  # every #SBATCH line read, one option each
        if job.resume_marker:  # a requeued attempt passes --resume when the marker exists
            Path(job.resume_marker).parent.mkdir(parents=True, exist_ok=True)
            Path(job.resume_marker).touch()
        record = tmp_path / f"record-{k}"
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_JOB_ID": "7",
               "SLURM_ARRAY_TASK_ID": "1", "SLURM_RESTART_COUNT": "1", "SLURM_NNODES": "1", "FAKE_RECORD": str(record),
               "HOME": str(tmp_path)}
        env.pop("MLFF_STOP_FILE", None)
        (tmp_path / "module").write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$FAKE_RECORD.module"\n')
        (tmp_path / "module").chmod(0o755)
        run = subprocess.run(["bash", "-c", text], check=False, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "mlff-slurm: finished" in run.stdout, (where, run.stdout, run.stderr)
        expected = [expand_word(w, {"SLURM_ARRAY_TASK_ID": "1"}) for w in job.command]
        resumed = job.resume or bool(job.resume_marker)
        assert _read(record) == expected + (["--resume"] if resumed else []), where
        assert _read(Path(f"{record}.module")) == ["load", name], where
        if job.torchrun:  # srun torchrun ... --no-python mlff ARGS; the stop and status files in the logs dir
            srun = _read(Path(f"{record}.srun"))
            assert srun[2:4] == torchrun, where  # after srun's own two options
            assert srun[srun.index("--no-python") + 1] == str(fake), where
            assert _read(Path(f"{record}.env")) == [f"{logs}/stop-7", f"{logs}/exit-7-1"], where
    assert not list(tmp_path.rglob("PWNED")), "an injected command ran"


def test_a_newline_only_in_a_command_word_is_quoted_not_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "configs\ntouch PWNED"
    folder.mkdir()
    config = folder / "md.yaml"
    config.write_text(yaml.safe_dump({"structure": "x.xyz", "steps": 10, "out": str(tmp_path / "out")}))
    assert main(["slurm", "md", str(config), "--dry-run", "--set", "mlff=echo"]) == 0
    text = capsys.readouterr().out.split("\n", 1)[1]  # after the '# ---- path' line
    assert "run dir" in text and "\ntouch PWNED" not in text.split("set -u")[0]  # the comments escape it
    run = subprocess.run(["bash", "-c", text], check=False, env={**os.environ, "SLURM_JOB_ID": "7"},
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 0 and f"md {config}\n" in run.stdout, run.stdout + run.stderr
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name", ILLEGAL)
@pytest.mark.parametrize("where", ["run dir", "workdir", "partition"])
def test_what_an_sbatch_line_cannot_carry_is_refused_by_name(tmp_path, monkeypatch, name, where):
    (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / name if where == "workdir" else tmp_path)
    out = tmp_path / (name if where == "run dir" else "plain") / "md"
    (tmp_path / "md.yaml").write_text(yaml.safe_dump({"structure": "x.xyz", "steps": 10, "out": str(out)}))
    profile = load_profile(None, {"partition": name} if where == "partition" else {})
    job_plan = plan("md", str(tmp_path / "md.yaml"), profile)
    with pytest.raises(MLFFError, match="#SBATCH --") as err:
        scripts(job_plan, profile, kind="md", config="md.yaml")
    assert repr(name)[1:-1] in str(err.value) and "\n" not in str(err.value)


def test_refusals_are_one_line_errors_of_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs\n#SBATCH --time=9999" / "md"
    (tmp_path / "md.yaml").write_text(yaml.safe_dump({"structure": "x.xyz", "steps": 10, "out": str(out)}))
    assert main(["slurm", "md", "md.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "#SBATCH --output" in err and "control character '\\n'" in err, err
    assert main(["slurm", "md", "md.yaml"]) == 2 and not out.exists()  # nothing written
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({"structure": "x.xyz", "steps": 10, "out": "ok"}))
    profile = load_profile(None, {"sbatch": ["--comment=a\n#SBATCH --time=9999"]})
    with pytest.raises(MLFFError, match="profile sbatch option: .* control character"):
        scripts(plan("md", "ok.yaml", profile), profile, kind="md", config="ok.yaml")


def test_a_profile_command_is_words_not_shell_text():
    with pytest.raises(MLFFError, match="profile: mlff .* is not a command"):
        load_profile(None, {"mlff": "python -m 'mlff.cli"})
    with pytest.raises(MLFFError, match="profile: torchrun must be a command"):
        load_profile(None, {"torchrun": "  "})
