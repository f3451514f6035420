"""The two engines behind one small interface the runner drives: ``start()``, ``step()``, ``state`` (an
MDState), ``checkpoint_parts()`` and ``restore(data)``.

- ``BatchEngine``: the GPU-resident batched engine (replicas in one MDState, torch step functions).
- ``AseEngine``: ASE's own integrators driving ``MLFFCalculator``; its ``state`` mirrors the Atoms after
  each step (one system) so monitors, trajectory and checkpoints are shared with the batched engine.
"""

from __future__ import annotations

import copy
import json
from functools import partial

import numpy as np
import torch
from ase import Atoms, units

from mlff.calculator import torch_device
from mlff.errors import MLFFError
from mlff.geometry import check_geometry
from mlff.md.config import MDConfig, apply_masses
from mlff.md.integrators import compute_forces, langevin_step, nhc_energy, nhc_init, nhc_step, nve_step
from mlff.md.model import AllPairsModel, PotentialModel
from mlff.md.state import fixed_mask, state_from_atoms

__all__ = ["BatchEngine", "AseEngine", "initial_velocities"]


def pin_fixed_atoms(atoms: Atoms) -> None:
    """Give ``atoms`` a FixAtoms for the atoms listed in ``info["fixed"]`` (indices or a mask) if it has none,
    so that ASE's integrators and velocity draws honour them too."""
    from ase.constraints import FixAtoms

    mask = fixed_mask(atoms)
    if mask.any() and not any(isinstance(c, FixAtoms) for c in atoms.constraints):
        atoms.set_constraint([*atoms.constraints, FixAtoms(mask=mask)])


def initial_velocities(atoms: Atoms, temperature_K: float, seed) -> None:
    """Maxwell-Boltzmann velocities at exactly ``temperature_K`` over the moving atoms (fixed atoms at rest);
    zero total momentum when no atom is fixed."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    pin_fixed_atoms(atoms)
    free = not atoms.constraints  # the total momentum is removed: 3 degrees of freedom fewer
    dof = 3 * int(np.count_nonzero(~fixed_mask(atoms))) - (3 if free else 0)
    # a lone free atom has no degree of freedom left: at rest (scaling to a temperature would divide by 0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed),
                                 force_temp=temperature_K > 0 and dof > 0)
    if free:
        Stationary(atoms, preserve_temperature=temperature_K > 0 and dof > 0)


def _jit_mode(device: torch.device):
    """TorchScript's profiling executor swaps in an optimised graph after the first calls, which rounds
    differently in the last bits: a resumed run would then drift from the uninterrupted one. Off on the CPU,
    where restarts are promised bit for bit; on for CUDA."""
    return torch.jit.optimized_execution(device.type == "cuda")


class BatchEngine:
    """``config.replicas`` copies of ``atoms`` (or one system per entry of ``structures``, e.g. umbrella windows)
    in one batched state, stepped by the torch integrators."""

    def __init__(self, config: MDConfig, atoms: Atoms, potential, *, model=None, structures=None):
        for k, structure in enumerate(structures or [atoms]):
            check_geometry(structure, f"structure {config.structure}" + (f" system {k}" if structures else ""))
        self.config = config
        device = torch_device(config.device)
        dtype = getattr(torch, config.dtype)
        replicas = []
        if structures is not None and len(structures) != config.replicas:
            raise MLFFError(f"{len(structures)} structures given for replicas={config.replicas}")
        beads = config.beads
        for r in range(config.replicas):
            replica = (atoms if structures is None else structures[r]).copy()  # one structure per system
            apply_masses(replica, config.masses)
            for j in range(beads):  # path integrals: P beads of each system, systems of the batch
                bead = replica.copy()
                if config.init_velocities:  # each bead at the bead temperature P T
                    initial_velocities(bead, beads * config.temperature_K, [config.seed, r] + ([j] if beads > 1 else []))
                replicas.append(bead)
        self.state = state_from_atoms(replicas, device=device, dtype=dtype, temperature_K=config.temperature_K,
                                      seed=config.seed)
        self.ring = None
        if beads > 1:
            from mlff.md.pimd import ring_polymer

            self.ring = ring_polymer(beads, self.state.temperature_K.view(config.replicas, beads)[:, 0])
        if model is None:
            if config.cueq or potential.device != device or potential.dtype != dtype:
                # .to() and enable_cueq() change a potential in place: leave the caller's alone
                potential = copy.deepcopy(potential).to(device=device, dtype=dtype)
            if config.cueq:
                if device.type != "cuda":
                    raise MLFFError("cueq: true needs a CUDA device")
                potential.enable_cueq()
            model = (AllPairsModel(potential, self.state) if config.neighbors == "all_pairs"
                     else PotentialModel(potential, skin=config.skin_A))
        self.model = model
        if config.cuda_graph and device.type != "cuda":
            raise MLFFError("cuda_graph: true needs a CUDA device")
        self._graphed = GraphedStep(self.state) if config.cuda_graph else None
        if config.integrator == "nhc":
            nhc_init(self.state, tau_fs=config.nhc_tau_fs, chain_length=config.nhc_chain)
        steps = {"nve": partial(nve_step, dt_fs=config.timestep_fs),
                 "langevin": partial(langevin_step, dt_fs=config.timestep_fs, friction_per_fs=config.friction_per_fs),
                 "nhc": partial(nhc_step, dt_fs=config.timestep_fs)}
        self._step = steps[config.integrator]
        if self.ring is not None:
            from mlff.md.pimd import pimd_step

            self._step = partial(pimd_step, dt_fs=config.timestep_fs, rp=self.ring,
                                 friction_per_fs=config.friction_per_fs, pile_lambda=config.pile_lambda,
                                 cayley=config.cayley)

    def start(self) -> None:
        with _jit_mode(self.state.device):
            compute_forces(self.state, self.model)

    def step(self) -> None:
        if self._graphed is not None:
            self._graphed(self._step, self.model)
            return
        with _jit_mode(self.state.device):
            self._step(self.state, self.model)

    def output_state(self):
        """The state the runner records and monitors: the physical systems (the ring polymers' centroids with
        path integrals; the state itself without)."""
        if self.ring is None:
            return self.state
        from mlff.md.pimd import centroid_state

        return centroid_state(self.state, self.ring)

    def observables(self) -> dict[str, torch.Tensor]:
        """Per physical system [S]: with path integrals, the centroid-virial and primitive quantum kinetic
        energies and the spring energy (eV); nothing more without."""
        if self.ring is None:
            return {}
        from mlff.md.pimd import ring_polymer_observables

        obs = ring_polymer_observables(self.state, self.ring)
        return {"kinetic_energy_virial": obs["kinetic_virial"], "kinetic_energy_primitive": obs["kinetic_primitive"],
                "spring_energy": obs["spring"]}

    def conserved_energy(self) -> torch.Tensor | None:
        """[S] eV the quantity the integrator conserves (None for Langevin)."""
        s = self.state
        if self.config.integrator == "nve":
            return s.energy + s.kinetic_energy()
        if self.config.integrator == "nhc":
            return s.energy + s.kinetic_energy() + nhc_energy(s)
        return None

    def checkpoint_parts(self) -> tuple[dict, dict]:
        return self.model.state_dict(), {}

    def restore(self, data: dict) -> None:
        from mlff.md.checkpoint import restore_state

        restore_state(self.state, data)
        self.model.load_state_dict(data["model_state"], self.state)


def _fixed_aware_nhc(atoms: Atoms, **kwargs):
    """ASE's NoseHooverChainNVT keeps its own momenta, which FixAtoms never touches (a fixed atom's momentum
    grows with its force while its position is held), and counts 3N degrees of freedom. This one zeroes the
    fixed atoms' momenta after every kick and counts 3 x (moving atoms), like the batched engine."""
    from ase.md.nose_hoover_chain import NoseHooverChainNVT, NoseHooverChainThermostat

    fixed = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        fixed[constraint.get_indices()] = True

    class FixedAtomsNHC(NoseHooverChainNVT):
        def _integrate_p(self, delta: float) -> None:
            super()._integrate_p(delta)
            self._p[fixed] = 0.0

    dyn = FixedAtomsNHC(atoms, **kwargs)
    dyn._p[fixed] = 0.0
    dyn._thermostat = NoseHooverChainThermostat(num_atoms_global=int((~fixed).sum()), masses=dyn.masses,
                                                temperature_K=kwargs["temperature_K"], tdamp=kwargs["tdamp"],
                                                tchain=kwargs["tchain"])
    return dyn


class GraphedStep:
    """The whole MD step captured once in a CUDA graph and replayed (the state's tensors are updated in
    place, so the captured kernels always read and write the same buffers). A few eager steps on a side
    stream come first (warm-up, as CUDA graph capture requires); if capture fails, the engine warns once
    and stays eager. ``state.step`` is advanced on the host."""

    def __init__(self, state, warmup: int = 3):
        self.state, self.warmup, self.graph, self.failed = state, warmup, None, None

    def __call__(self, step_fn, model) -> None:
        state = self.state
        if self.failed is not None or self.warmup > 0:
            stream = torch.cuda.Stream(state.device)
            stream.wait_stream(torch.cuda.current_stream(state.device))
            with torch.cuda.stream(stream):
                step_fn(state, model)
            torch.cuda.current_stream(state.device).wait_stream(stream)
            self.warmup -= 1
            return
        if self.graph is None:
            self._capture(step_fn, model)
            if self.graph is None:
                return self(step_fn, model)
        self.graph.replay()
        state.step += 1

    def _capture(self, step_fn, model) -> None:
        import warnings

        state, step = self.state, self.state.step
        graph = torch.cuda.CUDAGraph()
        try:
            if hasattr(graph, "register_generator_state"):
                graph.register_generator_state(state.generator)
            with torch.cuda.graph(graph):
                step_fn(state, model)
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to eager steps
            self.failed = f"{type(err).__name__}: {err}"
            warnings.warn(f"CUDA graph capture failed, running eagerly ({self.failed})", RuntimeWarning, stacklevel=3)
        else:
            self.graph = graph
        state.step = step  # capture records the step without running it


def _ase_dynamics(config: MDConfig, atoms: Atoms):
    from ase.md.nose_hoover_chain import IsotropicMTKNPT
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    dt = config.timestep_fs * units.fs
    if config.integrator == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    if config.integrator == "langevin":
        return Langevin(atoms, timestep=dt, temperature_K=config.temperature_K, friction=config.friction_per_fs / units.fs,
                        fixcm=False, rng=np.random.default_rng(config.seed))
    if config.integrator == "nhc":
        return _fixed_aware_nhc(atoms, timestep=dt, temperature_K=config.temperature_K,
                                tdamp=config.nhc_tau_fs * units.fs, tchain=config.nhc_chain)
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise MLFFError("integrator 'npt' needs a cell periodic in all three directions; this structure is not")
    if atoms.constraints or len(atoms.info.get("fixed", [])):
        raise MLFFError("integrator 'npt' (ASE's IsotropicMTKNPT) does not support fixed atoms")
    return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=config.temperature_K,
                           pressure_au=config.pressure_bar * units.bar, tdamp=config.nhc_tau_fs * units.fs,
                           pdamp=config.barostat_tau_fs * units.fs, tchain=config.nhc_chain, pchain=config.nhc_chain)


# internal variables of ASE's integrators that a restart must restore (attribute paths on the dynamics object)
_ASE_STATE = ("_q", "_p", "_eps", "_p_eps", "_thermostat._eta", "_thermostat._p_eta", "_barostat._xi",
              "_barostat._p_xi")


def _get_path(obj, path):
    for name in path.split("."):
        obj = getattr(obj, name, None)
    return obj


class AseEngine:
    """One structure stepped by ASE's integrator with ``MLFFCalculator``."""

    def __init__(self, config: MDConfig, atoms: Atoms, potential, *, calculator=None):
        from mlff.calculator import MLFFCalculator

        check_geometry(atoms, f"structure {config.structure}")
        self.config = config
        self.atoms = atoms.copy()
        apply_masses(self.atoms, config.masses)
        if config.init_velocities:
            initial_velocities(self.atoms, config.temperature_K, [config.seed, 0])
        pin_fixed_atoms(self.atoms)
        self.atoms.calc = calculator or MLFFCalculator(potential, device=config.device, dtype=config.dtype,
                                                       skin=config.skin_A, cueq=config.cueq)
        self.dyn = _ase_dynamics(config, self.atoms)
        self.state = state_from_atoms([self.atoms], dtype=torch.float64, temperature_K=config.temperature_K,
                                      seed=config.seed)

    def _mirror(self) -> None:
        s, a = self.state, self.atoms
        s.positions.copy_(torch.from_numpy(a.get_positions()))
        s.velocities.copy_(torch.from_numpy(a.get_velocities() * float(units.fs)))
        s.forces.copy_(torch.from_numpy(a.get_forces()))  # fixed atoms' forces zeroed, as in the batched engine
        s.energy.fill_(a.get_potential_energy())
        s.cell.copy_(torch.from_numpy(a.cell.array)[None])
        results = a.calc.results
        if "energy_std" in results:
            s.energy_std = torch.tensor([results["energy_std"]], dtype=torch.float64)
            s.forces_std = torch.from_numpy(np.asarray(results["forces_std"], dtype=np.float64))

    def start(self) -> None:
        with _jit_mode(self.atoms.calc.device):
            self._mirror()

    def step(self) -> None:
        with _jit_mode(self.atoms.calc.device):
            self.dyn.step()
            self._mirror()
        self.dyn.nsteps += 1
        self.state.step += 1

    def conserved_energy(self) -> torch.Tensor | None:
        if self.config.integrator == "nve":
            return self.state.energy + self.state.kinetic_energy()
        if self.config.integrator in ("nhc", "npt"):
            return torch.tensor([self.dyn.get_conserved_energy()], dtype=torch.float64)
        return None

    def checkpoint_parts(self) -> tuple[dict, dict]:
        extra = {path: torch.as_tensor(np.asarray(_get_path(self.dyn, path), dtype=np.float64))
                 for path in _ASE_STATE if _get_path(self.dyn, path) is not None}
        extra["momenta"] = torch.from_numpy(self.atoms.get_momenta())  # exact (velocities x masses is not)
        rng = getattr(self.dyn, "rng", None)
        if rng is not None and hasattr(rng, "bit_generator"):
            extra["rng_json"] = json.dumps(rng.bit_generator.state)
        neighbors = self.atoms.calc.neighbors._ref
        model = {} if neighbors is None else {"reference_positions": neighbors.positions.cpu()}
        return model, extra

    def restore(self, data: dict) -> None:
        from mlff.md.checkpoint import restore_state

        restore_state(self.state, data)
        self.atoms.set_cell(self.state.cell[0].numpy())
        self.atoms.set_positions(self.state.positions.numpy())
        self.atoms.set_momenta(data["extra"]["momenta"].numpy().copy(), apply_constraint=False)
        self.dyn.nsteps = self.state.step
        for path, value in data["extra"].items():
            if path == "momenta":
                continue
            if path == "rng_json":
                self.dyn.rng.bit_generator.state = json.loads(value)
                continue
            parent, _, name = path.rpartition(".")
            target = _get_path(self.dyn, parent) if parent else self.dyn
            old = getattr(target, name)
            setattr(target, name, value.numpy().copy() if isinstance(old, np.ndarray) else float(value))
        reference = data["model_state"].get("reference_positions")
        if reference is not None:  # rebuild the calculator's neighbour list from the same reference positions
            calc = self.atoms.calc
            calc.neighbors.update(reference.to(calc.device, calc.potential.dtype), self.atoms.cell.array[None],
                                  self.atoms.pbc[None], None)
        with _jit_mode(self.atoms.calc.device):
            self._mirror()
