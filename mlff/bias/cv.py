"""Collective variables in torch, batched over the systems of an MD state.

A CV names atoms by their index *inside each system* (as in that system's ASE Atoms); ``bind`` turns them
into global indices of the batched state once (``counts``: atoms per system), so ``cv(positions)`` gives one
value per system, [S], for the whole batch in one call. CVs are plain differentiable torch functions of the
positions: their gradients (and the bias forces) come from autograd in one place, ``mlff.bias.model.bias_terms``.
No minimum image: the CVs are for molecular clusters (and toy models).

    xi = DistanceDifference.xi(infos)          # d(C_formate-H) - d(H-C4) from each system's info["xi_atoms"]
    d = Distance([0, 3])                       # the same pair in every system
    s = LinearCombination([(0.5, d1), (-0.5, d2)])
    xi.bind(counts, device); s = xi(positions)  # [S] Å
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mlff.errors import MLFFError

__all__ = ["CV", "Coordinate", "Distance", "DistanceDifference", "LinearCombination", "cv_from_spec"]


class CV:
    """A scalar collective variable per system. Subclasses set ``local`` [S or 1, k] (atom indices inside each
    system), ``name`` and ``unit``, and implement ``_value(positions, atoms [S,k] global) -> [S]``."""

    name = "cv"
    unit = "A"

    def __init__(self, local, *, arity: int, what: str, distinct: bool = False):
        local = np.asarray(local, dtype=np.int64)
        if local.ndim == 1:
            local = local[None]
        if local.ndim != 2 or local.shape[1] != arity:
            raise MLFFError(f"{what} needs {arity} atom indices per system, got {local.tolist()}")
        if (local < 0).any():
            raise MLFFError(f"{what}: atom indices must be >= 0, got {local.tolist()}")
        if distinct:  # a distance from an atom to itself is 0 with no direction: NaN forces, a constant CV
            for row in local:
                if len(set(row.tolist())) < arity:
                    raise MLFFError(f"{what}: atoms {row.tolist()} name an atom twice; a distance needs two different "
                                    "atoms (an atom's distance to itself is always 0, and its force undefined)")
        self.local = local  # [S or 1, k] indices inside each system
        self.what = what
        self.atoms: torch.Tensor | None = None  # [S, k] global indices, set by bind()

    def bind(self, counts: Sequence[int], device="cpu") -> "CV":
        """Global indices for systems of ``counts`` atoms (in batch order); a clear error for an index outside its system."""
        counts = np.asarray(counts, dtype=np.int64)
        local = np.broadcast_to(self.local, (len(counts), self.local.shape[1])) if len(self.local) == 1 else self.local
        if len(local) != len(counts):
            raise MLFFError(f"{self.what} gives atoms for {len(local)} systems, the batch has {len(counts)}")
        bad = np.argwhere(local >= counts[:, None])
        if len(bad):
            s, k = bad[0]
            raise MLFFError(f"{self.what}: atom {int(local[s, k])} is outside system {int(s)}, which has "
                            f"{int(counts[s])} atoms (indices 0..{int(counts[s]) - 1})")
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.atoms = torch.as_tensor(local + offsets[:, None], device=device)
        return self

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        """[S] CV values of positions [N,3] (differentiable)."""
        if self.atoms is None:
            raise RuntimeError(f"{self.what}: call bind(counts) before evaluating it")
        return self._value(positions, self.atoms)

    def _value(self, positions: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def spec(self) -> dict:
        """A JSON description (for bias.json and COLVAR headers)."""
        return {"kind": type(self).__name__, "name": self.name, "unit": self.unit, "atoms": self.local.tolist()}


class Coordinate(CV):
    """One Cartesian coordinate (axis 0, 1, 2 = x, y, z) of one atom (toy models: the CV is x)."""

    def __init__(self, atom, axis: int = 0, *, name: str = "x"):
        super().__init__(np.asarray(atom).reshape(-1, 1), arity=1, what=f"CV {name}")
        if axis not in (0, 1, 2):
            raise MLFFError(f"CV {name}: axis must be 0, 1 or 2, got {axis}")
        self.axis, self.name = int(axis), name

    def _value(self, positions, atoms):
        return positions[atoms[:, 0], self.axis]

    def spec(self) -> dict:
        return {**super().spec(), "axis": self.axis}


class Distance(CV):
    """|r_b - r_a| (Å) for atoms [a, b] (one pair for every system, or one row per system)."""

    def __init__(self, atoms, *, name: str = "d"):
        super().__init__(atoms, arity=2, what=f"CV {name}", distinct=True)
        self.name = name

    def _value(self, positions, atoms):
        return (positions[atoms[:, 1]] - positions[atoms[:, 0]]).norm(dim=-1)


class DistanceDifference(CV):
    """d(a, b) - d(b, c) (Å) for atoms [a, b, c]: the hydride-transfer coordinate xi with [C_formate, H, C4]."""

    def __init__(self, atoms, *, name: str = "xi"):
        super().__init__(atoms, arity=3, what=f"CV {name}", distinct=True)
        self.name = name

    @classmethod
    def xi(cls, infos: Sequence[dict]) -> "DistanceDifference":
        """xi from every system's ``info["xi_atoms"]`` = [c_formate, h, c4] (indices inside the system)."""
        rows = []
        for s, info in enumerate(infos):
            if info.get("xi_atoms") is None:
                raise MLFFError(f"CV xi: system {s} has no info['xi_atoms'] = [c_formate, h, c4] "
                                "(build the cluster with mlff.data.build_cluster)")
            rows.append(np.asarray(info["xi_atoms"], dtype=np.int64).reshape(-1))
        return cls(np.stack(rows))

    def _value(self, positions, atoms):
        a, b, c = (positions[atoms[:, k]] for k in range(3))
        return (b - a).norm(dim=-1) - (c - b).norm(dim=-1)


class LinearCombination(CV):
    """sum_i c_i s_i(positions) of CVs (PLUMED's COMBINE with powers 1)."""

    def __init__(self, terms: Sequence[tuple[float, CV]], *, name: str = "combination"):
        if not terms:
            raise MLFFError("CV combination needs at least one (coefficient, cv) term")
        self.terms = [(float(c), cv) for c, cv in terms]
        self.name, self.what, self.local = name, f"CV {name}", np.zeros((1, 0), dtype=np.int64)
        units = {cv.unit for _, cv in self.terms}
        self.unit = units.pop() if len(units) == 1 else "mixed"
        self.atoms = None

    def bind(self, counts, device="cpu") -> "LinearCombination":
        for _, cv in self.terms:
            cv.bind(counts, device)
        self.atoms = self.terms[0][1].atoms
        return self

    def __call__(self, positions):
        return sum(c * cv(positions) for c, cv in self.terms)

    def spec(self) -> dict:
        return {"kind": "LinearCombination", "name": self.name, "unit": self.unit,
                "terms": [{"coefficient": c, **cv.spec()} for c, cv in self.terms]}


def cv_from_spec(spec, infos: Sequence[dict]) -> CV:
    """A CV from a config value: "xi", or a mapping {kind: distance | difference | coordinate | combination,
    atoms: [...], name:, axis:, terms: [{coefficient:, ...}, ...]}."""
    if spec == "xi":
        return DistanceDifference.xi(infos)
    if not isinstance(spec, dict) or "kind" not in spec:
        raise MLFFError(f"cv: expected 'xi' or a mapping with 'kind' (distance, difference, coordinate, "
                        f"combination), got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("kind")
    allowed = {"distance": {"atoms", "name"}, "difference": {"atoms", "name"}, "coordinate": {"atoms", "axis", "name"},
               "combination": {"terms", "name"}}
    if kind not in allowed:
        raise MLFFError(f"cv kind {kind!r} is not known; expected one of {', '.join(allowed)}")
    unknown = sorted(set(spec) - allowed[kind])
    if unknown:
        raise MLFFError(f"cv {kind}: unknown key {unknown[0]!r}; expected one of {', '.join(sorted(allowed[kind]))}")
    if kind == "combination":
        terms = []
        for term in spec.get("terms", []):
            term = dict(term)
            terms.append((float(term.pop("coefficient", 1.0)), cv_from_spec(term, infos)))
        return LinearCombination(terms, name=spec.get("name", "combination"))
    if "atoms" not in spec:
        raise MLFFError(f"cv {kind}: missing key 'atoms'")
    name = spec.get("name", {"distance": "d", "difference": "xi", "coordinate": "x"}[kind])
    if kind == "distance":
        return Distance(spec["atoms"], name=name)
    if kind == "difference":
        return DistanceDifference(spec["atoms"], name=name)
    return Coordinate(spec["atoms"], int(spec.get("axis", 0)), name=name)
