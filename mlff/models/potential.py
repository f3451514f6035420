"""``Potential``: one MACE model or a committee, the one place where forces and stress come from autograd."""

from __future__ import annotations

import warnings

import torch

from mlff.errors import MLFFError
from mlff.models.config import ModelConfig, config_from_mace, mace_kwargs, model_config
from mlff.models.graph import Graph

__all__ = ["Potential", "hessian", "node_descriptors"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise MLFFError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _build_member(config: ModelConfig, seed: int, dtype: torch.dtype):
    import mlff.models._mace  # noqa: F401
    from mace.modules import ScaleShiftMACE

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TorchScript annotation noise from mace
            torch.manual_seed(seed)
            return ScaleShiftMACE(**mace_kwargs(config)).to(dtype)
    finally:
        torch.set_default_dtype(previous)


def _grad_or_zeros(output: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool, retain_graph: bool):
    if not output.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(output, inputs, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


class Potential(torch.nn.Module):
    """A MACE potential: a config, one or more members (a committee) and a metadata card.

    ``evaluate(graph)`` returns energies [S] (eV), forces [N,3] (eV/Å), optionally stress [S,3,3] (eV/Å³,
    ASE's sign); for committees, means over members with ``energy_std`` [S] and ``forces_std`` [N].
    """

    def __init__(self, config: ModelConfig, members: list[torch.nn.Module], metadata: dict | None = None, *,
                 base: "Potential | None" = None, base_source: str | None = None):
        super().__init__()
        if not members:
            raise MLFFError("a potential needs at least one model")
        self.config = config
        self.members = torch.nn.ModuleList(members)
        self.metadata = dict(metadata or {})
        # a residual (delta) model: every member's energy is added to the committee mean of this frozen potential
        # (e.g. a foundation trained on cheaper labels); base_source: its directory or shipped name, as saved
        self.base, self.base_source = base, base_source
        if base is not None:
            if base.base is not None:
                raise MLFFError("the base of a residual model cannot itself be a residual model")
            base.requires_grad_(False)
        self.head = config.heads[-1] if "default" not in config.heads else "default"
        lut = torch.full((119,), -1, dtype=torch.int64)
        lut[config.atomic_numbers] = torch.arange(len(config.atomic_numbers))
        self.register_buffer("species_index", lut, persistent=False)
        self._fast: torch.nn.ModuleList | None = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, config: dict | ModelConfig, *, committee: int = 1, seed: int = 0, dtype="float64") -> "Potential":
        """An untrained potential; committee members get seeds seed, seed+1, ..."""
        config = model_config(config)
        if committee < 1:
            raise MLFFError(f"committee size must be at least 1, got {committee}")
        members = [_build_member(config, seed + k, _dtype(dtype)) for k in range(committee)]
        return cls(config, members, {"origin": f"built from config, untrained, seeds {seed}..{seed + committee - 1}"})

    @classmethod
    def from_mace_model(cls, modules, metadata: dict | None = None) -> "Potential":
        """Wrap mace-torch ScaleShiftMACE model(s) (e.g. a foundation or a colleague's model): the config is
        read off the first, every module's weights are copied into freshly built members."""
        modules = list(modules) if isinstance(modules, (list, tuple)) else [modules]
        modules = [_to_e3nn(m) for m in modules]
        config = config_from_mace(modules[0])
        dtype = next(modules[0].parameters()).dtype
        members = []
        for module in modules:
            if config_from_mace(module) != config:
                raise MLFFError("all models of a committee must share one architecture and species")
            member = _build_member(config, 0, dtype)
            member.load_state_dict(module.state_dict())
            members.append(member)
        return cls(config, members, metadata or {"origin": "wrapped mace-torch model"})

    def to_mace_model(self, path, member: int = 0) -> None:
        """Write member ``member`` as a mace-torch ``.model`` file (MACECalculator, LAMMPS export accept it)."""
        if not 0 <= member < len(self.members):
            raise MLFFError(f"member must be in [0, {len(self.members)}), got {member}")
        model = _build_member(self.config, 0, self.dtype)
        model.load_state_dict(self.members[member].state_dict())
        torch.save(model.cpu(), path)

    # ---- properties ---------------------------------------------------------------------------
    @property
    def cutoff(self) -> float:
        """The graph cutoff (Å): the largest r_max of the members and the base (MACE masks edges past its r_max)."""
        return max(float(self.config.r_max), self.base.cutoff if self.base is not None else 0.0)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.members[0].parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.members[0].parameters()).device

    @property
    def committee_size(self) -> int:
        return len(self.members)

    def enable_cueq(self) -> "Potential":
        """Evaluate through cuEquivariance kernels (CUDA): converted copies of the members, same weights."""
        try:
            from mace.cli.convert_e3nn_cueq import run as to_cueq
        except ImportError as err:
            raise MLFFError("cuEquivariance needs cuequivariance-torch: pip install 'mlff[cuda13]'") from err
        previous = torch.get_default_dtype()
        try:
            self._fast = torch.nn.ModuleList([to_cueq(m, device=str(self.device)) for m in self.members])
        finally:
            torch.set_default_dtype(previous)
        return self

    def disable_cueq(self) -> "Potential":
        self._fast = None
        return self

    # ---- evaluation ---------------------------------------------------------------------------
    def _mace_input(self, graph: Graph, positions: torch.Tensor, cell: torch.Tensor, heads=None) -> dict:
        index = self.species_index[graph.numbers]
        capturing = index.is_cuda and torch.cuda.is_current_stream_capturing()  # no host sync inside a CUDA graph
        if not capturing and bool((index < 0).any()):
            from ase.data import chemical_symbols

            unknown = sorted({chemical_symbols[int(z)] for z in graph.numbers[index < 0].cpu()})
            raise MLFFError(f"species {', '.join(unknown)} not in this potential's species "
                            f"{[chemical_symbols[z] for z in self.config.atomic_numbers]}")
        n_systems = graph.n_systems
        shifts = torch.einsum("ek,ekl->el", graph.unit_shifts, cell[graph.system_idx[graph.edge_index[0]]])
        counts = torch.zeros(n_systems, dtype=torch.int64, device=positions.device).index_add_(
            0, graph.system_idx, torch.ones_like(graph.system_idx))  # bincount would read the max back to the host
        ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        return {
            "positions": positions, "cell": cell, "edge_index": graph.edge_index, "shifts": shifts,
            "unit_shifts": graph.unit_shifts, "batch": graph.system_idx, "ptr": ptr,
            "node_attrs": torch.nn.functional.one_hot(index, len(self.config.atomic_numbers)).to(positions.dtype),
            "head": heads.to(positions.device) if heads is not None else
            torch.full((n_systems,), self.config.heads.index(self.head), dtype=torch.int64, device=positions.device),
        }

    def evaluate(self, graph: Graph, *, forces: bool = True, stress: bool = False, training: bool = False,
                 heads: torch.Tensor | None = None) -> dict:
        """Energies, forces (-dE/dr) and stress ((1/V) dE/dstrain) of every system in ``graph``, through the
        potential's head ``self.head``, or per system through ``heads`` ([S] indices into ``config.heads``:
        training on data of several levels of theory)."""
        graph = graph.to(self.device, self.dtype)
        members = self._fast if (self._fast is not None and not training) else self.members
        need_grad = forces or stress
        with torch.set_grad_enabled(need_grad or training):
            positions = graph.positions.detach().requires_grad_(need_grad)
            cell, inputs = graph.cell, [positions]
            if stress:
                strain = torch.zeros_like(cell, requires_grad=True)
                inputs.append(strain)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                positions = positions + torch.einsum("nk,nkl->nl", positions, sym[graph.system_idx])
                cell = cell + cell @ sym
            data = self._mace_input(graph, positions, cell, heads)
            energies = torch.stack([m(dict(data), training=training, compute_force=False)["energy"] for m in members])
            if self.base is not None:  # frozen: gradients reach the positions (forces, stress), not its weights
                base_data = self.base._mace_input(graph, positions, cell)
                energies = energies + torch.stack([m(dict(base_data), training=False, compute_force=False)["energy"]
                                                   for m in self.base.members]).mean(0)
            out = {"energy": energies.mean(0)}
            if need_grad:
                grads = [_grad_or_zeros(e.sum(), inputs, training, training or k < len(members) - 1)
                         for k, e in enumerate(energies)]
                member_forces = -torch.stack([g[0] for g in grads])  # [M,N,3]
                out["forces"] = member_forces.mean(0)
            if stress:
                volume = torch.linalg.det(graph.cell).abs()
                out["stress"] = torch.stack([g[1] for g in grads]).mean(0) / volume[:, None, None]
        if len(members) > 1:
            out["energy_members"] = energies
            out["energy_std"] = energies.std(0, correction=0)
            if forces:
                out["forces_members"] = member_forces
                out["forces_std"] = (member_forces - out["forces"]).pow(2).sum(-1).mean(0).sqrt()
        if not training:
            out = {k: v.detach() for k, v in out.items()}
        return out


def hessian(potential: Potential, atoms, *, indices=None) -> "np.ndarray":
    """[3n, 3n] eV/Å² second derivatives of the committee-mean energy at ``atoms`` by autograd (double
    backward through the members, the base model included), over the atoms ``indices`` (default: all; e.g.
    the moving atoms of a cluster with fixed ones: a partial Hessian), symmetrised. The neighbour graph is
    built at ``atoms`` (second derivatives are local)."""
    import numpy as np

    from mlff.models.graph import batch_atoms

    indices = np.arange(len(atoms)) if indices is None else np.asarray(indices, dtype=np.int64)
    graph = batch_atoms([atoms], potential.cutoff, device=potential.device, dtype=potential.dtype)
    with torch.enable_grad():
        positions = graph.positions.detach().requires_grad_(True)
        data = potential._mace_input(graph, positions, graph.cell)
        energy = torch.stack([m(dict(data), training=True, compute_force=False)["energy"]
                              for m in potential.members]).mean(0).sum()
        if potential.base is not None:
            base_data = potential.base._mace_input(graph, positions, graph.cell)
            energy = energy + torch.stack([m(dict(base_data), training=True, compute_force=False)["energy"]
                                           for m in potential.base.members]).mean(0).sum()
        (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
        rows = gradient[torch.as_tensor(indices, device=positions.device)].reshape(-1)
        columns = torch.as_tensor(indices, device=positions.device)
        out = torch.stack([torch.autograd.grad(rows[k], positions, retain_graph=k < len(rows) - 1)[0][columns].reshape(-1)
                           for k in range(len(rows))])
    out = out.detach().double().cpu().numpy()
    return 0.5 * (out + out.T)


def _invariant_columns(member) -> torch.Tensor:
    """Indices of the scalar (0e) channels in a mace-torch model's ``node_feats`` (all layers concatenated)."""
    from e3nn import o3

    columns, start = [], 0
    for product in member.products:
        irreps = o3.Irreps(product.linear.irreps_out)
        for (mul, ir), part in zip(irreps, irreps.slices()):
            if ir == o3.Irrep("0e"):
                columns.append(torch.arange(start + part.start, start + part.stop))
        start += irreps.dim
    return torch.cat(columns)


@torch.no_grad()
def node_descriptors(potential: Potential, graph: Graph, member: int = 0) -> torch.Tensor:
    """[N, F] rotation-invariant MACE node features of one committee member: the scalar (0e) channels of every
    interaction layer's output (mace-torch's ``node_feats``), e.g. for farthest-point selection."""
    graph = graph.to(potential.device, potential.dtype)
    model = potential.members[member]
    data = potential._mace_input(graph, graph.positions, graph.cell)
    with torch.enable_grad():  # mace's forward asks for position gradients even without forces
        out = model(dict(data), training=False, compute_force=False)
    return out["node_feats"].detach()[:, _invariant_columns(model).to(graph.positions.device)]


def _to_e3nn(module):
    """mace-torch modules converted back from cuEquivariance when needed (we store e3nn weights)."""
    cueq = getattr(module, "cueq_config", None)
    if cueq is not None and getattr(cueq, "enabled", False):
        from mace.cli.convert_cueq_e3nn import run as to_e3nn

        previous = torch.get_default_dtype()
        try:
            return to_e3nn(module, device=str(next(module.parameters()).device))
        finally:
            torch.set_default_dtype(previous)
    return module
