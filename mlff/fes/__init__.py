"""Free-energy analysis of biased runs: MBAR (pymbar) with analytic and bootstrap errors, overlap and convergence
diagnostics for umbrella windows; well-tempered metadynamics from the hills and by reweighting; barriers,
reaction free energies and Eyring rates; fes.json, fes.csv and plots. Input: ``mlff.bias.io.BiasedRun``."""

from mlff.fes.analysis import FESOutput, analyse, run_fes
from mlff.fes.config import FESConfig, load_fes_config
from mlff.fes.result import Analysis, BarrierEstimate, Profile

__all__ = ["Analysis", "BarrierEstimate", "FESConfig", "FESOutput", "Profile", "analyse", "load_fes_config", "run_fes"]
