"""Training data as precomputed graphs kept on the device.

Geometries of a dataset never change, so every record's neighbour list is built once; batches are then
gathered on the device by index (no re-collation, no host round trip per step).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols
from ase.stress import voigt_6_to_full_3x3_stress

from mlff.errors import MLFFError
from mlff.models.graph import Graph, batch_atoms

__all__ = ["GraphSet", "Records", "load_records", "build_graphs"]

_CHUNK = 256  # records per neighbour-list call while precomputing


@dataclass
class Records:
    """Records of one or more datasets: Atoms with labels, their split names and info."""
    atoms: list  # ASE Atoms with a SinglePointCalculator (energy, forces, maybe stress)
    splits: dict  # split name -> np.ndarray of record indices
    infos: list  # info dict per record (tags, xi, ...)
    sources: list  # {"path", "sha256", "records"} per dataset
    repeat: np.ndarray | None = None  # [R] draws per epoch of each record when in the training split (data.repeat)
    heads: np.ndarray | None = None  # [R] the head each record trains (data.heads); None: the potential's head
    target_head: str | None = None  # data.heads[0]: the potential's head, the one its errors are reported for


def _splits_of(dataset, config, offset: int, infos: list) -> dict:
    if config.split_key is not None:
        names = [str(info.get(config.split_key, "")) for info in infos]
        splits = {name: np.flatnonzero(np.array(names) == name) for name in sorted(set(names)) if name}
    else:
        splits = dataset.split(dict(config.split), seed=config.split_seed, group_by=config.group_by)
    held = np.array([config.holdout_tag in info.get("tags", []) for info in infos], bool)
    splits = {name: idx[idx < len(infos)] for name, idx in splits.items()}  # max_records may cut the tail
    out = {name: offset + idx[~held[idx]] for name, idx in splits.items()}
    out[config.holdout_tag] = offset + np.flatnonzero(held)
    return out


def _restricted(split: dict, infos: list, n_train: int | None, replayed: bool, seed: int) -> dict:
    """Splits of one dataset under data.train_records (a seeded draw of its training records) and data.heads
    (a dataset replayed in another head than the potential's only trains, and never with the records of its own
    test split, ``info["split"] == "test"``, as mlff learn's replay draw)."""
    if replayed:
        train = split.get("train", np.zeros(0, np.int64))
        split = {"train": train[np.array([infos[k].get("split") != "test" for k in train], bool)]}
    train = split.get("train")
    if n_train is not None and train is not None and len(train) > n_train:
        rng = np.random.default_rng(seed)
        split = dict(split, train=np.sort(rng.choice(train, size=n_train, replace=False)))
    return split


def load_records(config) -> Records:
    """The records of ``config.paths`` (a DataConfig), checked for energy and forces, with splits. A dataset
    replayed in another head (data.heads) is read only as far as it trains (its data.train_records draw)."""
    from mlff.data import Dataset

    atoms, infos, sources, splits, times_each, heads = [], [], [], {}, [], []
    repeat = config.repeat or [1] * len(config.paths)
    head_of = config.heads or [None] * len(config.paths)
    draws = config.train_records or [None] * len(config.paths)
    for number, (path, times, head, n_train) in enumerate(zip(config.paths, repeat, head_of, draws)):
        dataset = Dataset(path)
        all_infos = dataset.infos()[: config.max_records]
        replayed = head is not None and head != head_of[0]
        split = _restricted(_splits_of(dataset, config, 0, all_infos), all_infos, n_train, replayed,
                            config.split_seed + number)
        keep = np.unique(np.concatenate([np.zeros(0, np.int64), *split.values()])) if replayed \
            else np.arange(len(all_infos))
        records = dataset.read(keep)
        for k, a in zip(keep, records):
            results = getattr(a.calc, "results", {}) or {}
            for key in ("energy", "forces"):
                if results.get(key) is None:
                    raise MLFFError(f"{path} record {k} has no {key}: training needs DFT energies and forces "
                                    f"for every record (label the dataset first: `mlff data label`)")
        position = np.full(len(all_infos), -1, np.int64)
        position[keep] = len(atoms) + np.arange(len(keep))
        for name, idx in split.items():
            splits[name] = np.concatenate([splits.get(name, np.zeros(0, np.int64)), position[idx]])
        source = {"path": str(Path(path).resolve()), "sha256": dataset.checksum(), "records": len(records)}
        if len(records) < len(all_infos):
            source["drawn_from"] = len(all_infos)
        sources.append(source)
        atoms += records
        infos += [a.info for a in records]
        times_each.append(np.full(len(records), times, np.int64))
        heads += [head] * len(records)
    if not atoms:
        raise MLFFError(f"no records in {', '.join(map(str, config.paths))}")
    if len(splits.get("train", [])) == 0:
        raise MLFFError("the training split is empty: add records or raise data.split['train']")
    return Records(atoms=atoms, splits=splits, infos=infos, sources=sources,
                   repeat=np.concatenate(times_each) if config.repeat else None,
                   heads=np.array(heads) if config.heads else None, target_head=head_of[0])


def check_species(atoms_list, atomic_numbers) -> None:
    """One clear error if the data holds elements the model does not know."""
    present = set(int(z) for a in atoms_list for z in np.unique(a.numbers))
    missing = sorted(present - set(int(z) for z in atomic_numbers))
    if missing:
        raise MLFFError(f"the data contains {', '.join(chemical_symbols[z] for z in missing)}, which the model's "
                        f"species {[chemical_symbols[z] for z in sorted(atomic_numbers)]} do not include; "
                        f"add them to model.species")


def _ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated aranges [starts[k], starts[k] + lengths[k]), on the device of ``starts``."""
    total = int(lengths.sum())
    ends = torch.cumsum(lengths, 0)
    base = torch.repeat_interleave(starts - (ends - lengths), lengths, output_size=total)
    return base + torch.arange(total, device=starts.device)


@dataclass
class GraphSet:
    """All records as one big graph plus per-record offsets; ``batch(idx)`` gathers a Graph and labels."""
    graph: Graph  # every record, system k = record k; edges sorted by record
    atom_offset: torch.Tensor  # [R] first atom of each record
    n_atoms: torch.Tensor  # [R]
    edge_offset: torch.Tensor  # [R] first edge of each record
    n_edges: torch.Tensor  # [R]
    energy: torch.Tensor  # [R] eV
    forces: torch.Tensor  # [A,3] eV/Å
    stress: torch.Tensor  # [R,3,3] eV/Å³ (ASE sign), zeros where missing
    has_stress: torch.Tensor  # [R] bool

    def __len__(self) -> int:
        return len(self.n_atoms)

    def to(self, device=None, dtype=None) -> "GraphSet":
        fl = dict(device=device, dtype=dtype)
        return replace(self, graph=self.graph.to(device, dtype), atom_offset=self.atom_offset.to(device),
                       n_atoms=self.n_atoms.to(device), edge_offset=self.edge_offset.to(device),
                       n_edges=self.n_edges.to(device), energy=self.energy.to(**fl), forces=self.forces.to(**fl),
                       stress=self.stress.to(**fl), has_stress=self.has_stress.to(device))

    def batch(self, idx) -> tuple[Graph, dict]:
        """The graph of records ``idx`` (repeats allowed) and their labels, gathered on the device."""
        g = self.graph
        idx = torch.as_tensor(idx, dtype=torch.int64, device=self.n_atoms.device)
        n, ne = self.n_atoms[idx], self.n_edges[idx]
        atoms = _ranges(self.atom_offset[idx], n)
        edges = _ranges(self.edge_offset[idx], ne)
        new_offset = torch.cumsum(n, 0) - n
        local = g.edge_index[:, edges] - torch.repeat_interleave(self.atom_offset[idx], ne, output_size=edges.numel())
        edge_index = local + torch.repeat_interleave(new_offset, ne, output_size=edges.numel())
        system_idx = torch.repeat_interleave(torch.arange(len(idx), device=idx.device), n, output_size=atoms.numel())
        graph = Graph(positions=g.positions[atoms], numbers=g.numbers[atoms], cell=g.cell[idx], pbc=g.pbc[idx],
                      system_idx=system_idx, edge_index=edge_index, unit_shifts=g.unit_shifts[edges])
        labels = {"energy": self.energy[idx], "forces": self.forces[atoms], "stress": self.stress[idx],
                  "has_stress": self.has_stress[idx], "n_atoms": n}
        return graph, labels


def _labels(atoms_list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    energy = np.array([a.calc.results["energy"] for a in atoms_list], np.float64)
    forces = np.concatenate([np.asarray(a.calc.results["forces"], np.float64) for a in atoms_list])
    stress = np.zeros((len(atoms_list), 3, 3))
    has = np.zeros(len(atoms_list), bool)
    for k, a in enumerate(atoms_list):
        s = a.calc.results.get("stress")
        if s is not None and np.all(np.isfinite(s)):
            s = np.asarray(s, np.float64)
            stress[k], has[k] = (voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s), True
    return energy, forces, stress, has


def build_graphs(atoms_list, cutoff_A: float, *, device="cpu", dtype=torch.float64) -> GraphSet:
    """Neighbour lists of every record, built once (in chunks), stored as one GraphSet on ``device``."""
    parts = []
    for start in range(0, len(atoms_list), _CHUNK):
        chunk = atoms_list[start:start + _CHUNK]
        g = batch_atoms(chunk, cutoff_A, dtype=torch.float64)
        order = torch.sort(g.system_idx[g.edge_index[0]], stable=True).indices
        parts.append((g, g.edge_index[:, order], g.unit_shifts[order]))
    n_atoms = torch.tensor([len(a) for a in atoms_list], dtype=torch.int64)
    atom_offset = torch.cumsum(n_atoms, 0) - n_atoms
    graphs, edge_chunks, shift_chunks, n_edges, base = [], [], [], [], 0
    for g, edge_index, shifts in parts:
        graphs.append(g)
        edge_chunks.append(edge_index + base)
        shift_chunks.append(shifts)
        n_edges.append(torch.bincount(g.system_idx[edge_index[0]], minlength=g.n_systems))
        base += len(g.positions)
    n_edges = torch.cat(n_edges)
    full = Graph(positions=torch.cat([g.positions for g in graphs]), numbers=torch.cat([g.numbers for g in graphs]),
                 cell=torch.cat([g.cell for g in graphs]), pbc=torch.cat([g.pbc for g in graphs]),
                 system_idx=torch.repeat_interleave(torch.arange(len(atoms_list)), n_atoms),
                 edge_index=torch.cat(edge_chunks, 1), unit_shifts=torch.cat(shift_chunks))
    energy, forces, stress, has = _labels(atoms_list)
    gs = GraphSet(graph=full, atom_offset=atom_offset, n_atoms=n_atoms, edge_offset=torch.cumsum(n_edges, 0) - n_edges,
                  n_edges=n_edges, energy=torch.from_numpy(energy), forces=torch.from_numpy(forces),
                  stress=torch.from_numpy(stress), has_stress=torch.from_numpy(has))
    return gs.to(device, dtype)
