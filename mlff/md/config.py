"""``MDConfig``: the keys of an ``mlff md CONFIG.yaml`` run, checked on load (unknown keys named)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mlff.config import checked, device_setting, from_dict, load_yaml
from mlff.errors import MLFFError
from mlff.geometry import check_geometry

__all__ = ["MDConfig", "load_md_config", "read_structure", "apply_masses", "REPO"]

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("gpu", "ase")
INTEGRATORS = {"gpu": ("nve", "langevin", "nhc"), "ase": ("nve", "langevin", "nhc", "npt")}


@dataclass
class MDConfig:
    structure: str  # a file ASE reads, or "fdh-cluster:SIZE:STATE" for data/fdh-cluster/cluster_SIZE_STATE.xyz
    # a potential directory / shipped name, or a dict: an UNTRAINED model config (speed only)
    potential: str | dict | None = None
    # "gpu": the batched engine (also runs on the CPU); "ase": ASE's integrators + MLFFCalculator
    engine: str = checked("gpu", choices=ENGINES)
    integrator: str = "langevin"  # nve | langevin | nhc | npt (npt: ase engine, 3D-periodic cells)
    timestep_fs: float = checked(0.5, gt=0)
    temperature_K: float = checked(300.0, ge=0)  # thermostat target and initial Maxwell-Boltzmann velocities
    friction_per_fs: float = checked(0.01, ge=0)  # Langevin friction
    nhc_tau_fs: float = checked(50.0, gt=0)  # Nose-Hoover chain time constant
    nhc_chain: int = checked(3, ge=1)  # thermostats in the chain
    pressure_bar: float = 1.0  # npt
    barostat_tau_fs: float = checked(500.0, gt=0)  # npt
    steps: int = checked(100, ge=0)  # total steps of the run (a resumed run continues up to this count)
    replicas: int = checked(1, ge=1)  # copies of the structure run in one batch (gpu engine), each with its own noise
    seed: int = checked(0, ge=0)
    init_velocities: bool = True  # Maxwell-Boltzmann at temperature_K (else the structure's own velocities)
    device: str = device_setting("auto")  # auto | cpu | cuda | cuda:N
    dtype: str = checked("float32", choices=("float32", "float64"))
    cueq: bool = False  # cuEquivariance kernels (CUDA)
    skin_A: float = checked(0.5, ge=0)  # Verlet skin of the neighbour list
    # all_pairs: clusters: fixed shapes, no host sync; needed for cuda_graph
    neighbors: str = checked("verlet", choices=("verlet", "all_pairs"))
    cuda_graph: bool = False  # gpu engine on CUDA: capture the whole step in a CUDA graph (needs all_pairs)
    trajectory_every: int = checked(10, ge=0)  # steps between trajectory frames (0: no trajectory)
    checkpoint_every: int = checked(1000, ge=0)  # steps between checkpoints (0: only at the end and on signals)
    # steps between monitor checks (each check reads a few numbers back from the GPU)
    monitor_every: int = checked(10, ge=1)
    max_force_eV_per_A: float | None = checked(50.0, gt=0)  # stop when any force exceeds this
    # stop when the committee force spread of an atom exceeds this
    max_force_std_eV_per_A: float | None = checked(None, gt=0)
    max_energy_std_eV: float | None = checked(None, gt=0)  # stop when a system's committee energy spread exceeds this
    max_temperature_K: float | None = checked(None, gt=0)  # stop when a system's kinetic temperature exceeds this
    # path-integral MD (engine gpu, integrator langevin: PILE-L): P beads per system, systems of one batch
    beads: int = checked(1, ge=1)
    pile_lambda: float = checked(0.5, ge=0)  # PIMD: internal modes damped at 2 lambda omega_k (1: critical)
    cayley: bool = True  # PIMD: the Cayley free ring-polymer step (stable at any P), else the exact rotation
    trajectory_beads: bool = False  # PIMD: every bead's positions and forces in beads.h5 too (the trajectory: centroids)
    # isotopes: {atom index or element symbol: mass in amu}, e.g. {22: 2.014} (one D) or {H: 2.014} (every H)
    masses: dict | None = None
    out: str = "out/md"  # output directory: trajectory.h5, log.csv, checkpoint.pt, run.json

    def __post_init__(self):
        # types, ranges and choices of single keys: mlff.config.from_dict (the checked(...) declarations above)
        if self.integrator not in INTEGRATORS.get(self.engine, ()):
            raise MLFFError(f"integrator {self.integrator!r} is not available with engine {self.engine!r}; "
                            f"expected one of {', '.join(INTEGRATORS.get(self.engine, ()))}")
        if self.integrator in ("nhc", "npt") and not self.temperature_K > 0:
            raise MLFFError(f"integrator {self.integrator!r} needs temperature_K > 0 (its thermostat masses scale with kT)")
        if self.cuda_graph and (self.engine != "gpu" or self.neighbors != "all_pairs"):
            raise MLFFError("cuda_graph: true needs engine: gpu and neighbors: all_pairs (the Verlet list reads a "
                            "rebuild flag back to the host each step)")
        if self.beads > 1 and (self.engine != "gpu" or self.integrator != "langevin"):
            raise MLFFError(f"beads: {self.beads} (path-integral MD) needs engine: gpu and integrator: langevin (the "
                            f"PILE-L thermostat), got engine {self.engine!r}, integrator {self.integrator!r}")
        if self.beads > 1 and not self.temperature_K > 0:
            raise MLFFError("beads > 1 needs temperature_K > 0: the ring polymer's springs scale with T")
        for key, mass in (self.masses or {}).items():
            if not isinstance(key, (int, str)) or isinstance(key, bool) or not isinstance(mass, (int, float)) \
                    or isinstance(mass, bool) or not mass > 0:
                raise MLFFError(f"masses: {key!r}: {mass!r}: expected an atom index or element symbol and a mass "
                                "in amu > 0, e.g. {22: 2.014}")
        if self.engine == "ase" and self.replicas != 1:
            raise MLFFError(f"engine 'ase' runs one replica, got replicas={self.replicas}; use engine: gpu for batches")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def apply_masses(atoms, masses: dict | None) -> None:
    """Set isotope masses on ``atoms`` in place: ``{index or element symbol: amu}`` (indices win over symbols)."""
    if not masses:
        return
    values = atoms.get_masses()
    symbols = atoms.get_chemical_symbols()
    for key, mass in sorted(masses.items(), key=lambda kv: isinstance(kv[0], int)):  # symbols first
        if isinstance(key, int):
            if not -len(atoms) <= key < len(atoms):
                raise MLFFError(f"masses: atom {key} is out of range: the structure has {len(atoms)} atoms")
            values[key] = mass
        else:
            hits = [k for k, s in enumerate(symbols) if s == key]
            if not hits:
                raise MLFFError(f"masses: no {key!r} atom in the structure ({', '.join(sorted(set(symbols)))})")
            values[hits] = mass
    atoms.set_masses(values)


def load_md_config(source: str | Path | dict, **overrides) -> MDConfig:
    """An MDConfig from a YAML file or a dict, with keyword overrides."""
    data = dict(source) if isinstance(source, dict) else load_yaml(source)
    data.update(overrides)
    return from_dict(MDConfig, data, "md config" if isinstance(source, dict) else str(source))


def read_structure(spec: str):
    """ASE Atoms from a file path, or from the shipped FDH cluster geometries "fdh-cluster:small:reactant"."""
    from ase.io import read

    if spec.startswith("fdh-cluster:"):
        from mlff.data.cluster import load_cluster

        parts = spec.split(":")
        if len(parts) != 3:
            raise MLFFError(f"structure {spec!r}: expected 'fdh-cluster:SIZE:STATE', e.g. 'fdh-cluster:small:reactant'")
        return load_cluster(parts[1], parts[2])
    path = Path(spec)
    if not path.is_file():
        raise MLFFError(f"structure file not found: {path}")
    try:
        atoms = read(path)
    except Exception as err:  # noqa: BLE001 - any unreadable structure is one user error
        raise MLFFError(f"structure {path}: ASE cannot read it ({type(err).__name__}: {err})") from err
    check_geometry(atoms, f"structure {spec}")  # before a potential is loaded (the engines check again)
    return atoms
