"""``analyse(run, config)`` for any BiasedRun, and ``run_fes(run_dir)``: read, analyse, write fes.json, fes.csv
and the plots into ``RUN_DIR/fes`` (or ``out``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlff.errors import MLFFError
from mlff.fes._pymbar import pymbar_version
from mlff.fes.config import FESConfig
from mlff.fes.result import Analysis

__all__ = ["analyse", "run_fes", "FESOutput", "analysis_provenance"]


@dataclass
class FESOutput:
    analysis: Analysis
    document: dict  # the content of fes.json
    out: Path
    files: list[Path]


def analyse(run, config: FESConfig | None = None, committee: dict | None = None) -> Analysis:
    """The free-energy analysis of a ``mlff.bias.io.BiasedRun`` (umbrella: MBAR; metad: reweighting + hills).
    ``committee``: the members' energies on the run's frames (``mlff.fes.committee.member_energies``), for the
    model error (umbrella runs)."""
    config = config or FESConfig()
    if run.kind == "umbrella":
        from mlff.fes.umbrella import analyse_umbrella

        return analyse_umbrella(run, config, committee)
    if run.kind == "metad":
        from mlff.fes.metad_analysis import analyse_metad

        if config.single_points or committee is not None:
            raise MLFFError("reweighting to single points or committee members is implemented for umbrella runs only")

        return analyse_metad(run, config)
    raise MLFFError(f"run kind {run.kind!r}; expected 'umbrella' or 'metad'")


def analysis_provenance() -> dict:
    from mlff.provenance import provenance

    record = provenance()
    record["versions"]["pymbar"] = pymbar_version()
    return record


def _read_run(run_dir: Path):
    try:
        from mlff.bias.io import read_biased_run
    except ImportError as err:
        raise MLFFError("this mlff cannot read biased run directories (mlff.bias.io.read_biased_run is missing); "
                        "update mlff") from err
    return read_biased_run(run_dir)


def run_fes(run_dir: str | Path, config: FESConfig | None = None, out: str | Path | None = None,
            run=None) -> FESOutput:
    """Analyse the biased run in ``run_dir`` (or the given BiasedRun ``run``) and write the outputs."""
    from mlff.fes.report import fes_document, write_csv, write_frames, write_json

    config = config or FESConfig()
    run_dir = Path(run_dir)
    if run is None:
        if not run_dir.is_dir():
            raise MLFFError(f"run directory not found: {run_dir}")
        run = _read_run(run_dir)
    committee = None
    if config.committee:
        if run.kind != "umbrella":
            raise MLFFError("committee: the model error by reweighting is implemented for umbrella runs only")
        from mlff.fes.committee import member_energies

        committee = member_energies(run_dir)
    analysis = analyse(run, config, committee)
    out = Path(out) if out is not None else run_dir / "fes"
    out.mkdir(parents=True, exist_ok=True)
    document = fes_document(analysis, config.to_dict(), analysis_provenance())
    document["provenance"]["analysis"]["run_dir"] = str(run_dir)
    files = [out / "fes.json", out / "fes.csv"]
    write_json(document, files[0])
    write_csv(analysis, files[1])
    if write_frames(analysis, out / "frames.csv"):
        files.append(out / "frames.csv")
    if config.plots:
        from mlff.fes.plots import write_plots

        files += write_plots(analysis, out)
    return FESOutput(analysis, document, out, files)
