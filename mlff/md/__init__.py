"""Molecular dynamics: a batched MD state, torch integrators (NVE, Langevin BAOAB, Nose-Hoover chains),
ASE-driven MD, H5MD trajectories, checkpoints and monitors, and the runner behind ``mlff md``.

    from mlff.md import run_md
    summary = run_md("workflows/fdh_md.yaml")
"""

from mlff.md.checkpoint import load_checkpoint, save_checkpoint
from mlff.md.config import MDConfig, load_md_config, read_structure
from mlff.md.integrators import compute_forces, langevin_step, nhc_init, nhc_step, nve_step
from mlff.md.model import AllPairsModel, HarmonicModel, PotentialModel
from mlff.md.runner import run_md
from mlff.md.state import MDState, state_from_atoms, state_to_atoms

__all__ = ["AllPairsModel", "HarmonicModel", "MDConfig", "MDState", "PotentialModel", "compute_forces", "langevin_step",
           "load_checkpoint", "load_md_config", "nhc_init", "nhc_step", "nve_step", "read_structure", "run_md",
           "save_checkpoint", "state_from_atoms", "state_to_atoms"]
