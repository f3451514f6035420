"""The sampling recipe of the FDH dataset: which GFN2-xTB geometries to make and which to keep.

Reactant and product clusters are sampled by Langevin MD at several temperatures, the hydride-transfer
coordinate xi by restrained windows from ``scan_from_A`` to ``scan_to_A``, and the minima by normal-mode
displacements. Farthest-point selection then keeps ``select`` diverse geometries, at least ``ts_min`` of
them with |xi| < ``ts_region_A``. A separate restrained, relaxed scan (tag ``holdout-scan``) is kept out of
training, to check a potential's energy profile along xi against DFT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff.config import checked, from_dict, load_yaml
from mlff.errors import MLFFError

__all__ = ["SamplingRecipe", "load_recipe", "sample_pool", "region_of"]


@dataclass
class SamplingRecipe:
    # cluster size: small (~40 atoms), medium (~60), large
    size: str = checked("small", choices=("small", "medium", "large"))
    seed: int = checked(0, ge=0)
    md_temperatures_K: list[float] = checked(default_factory=lambda: [300.0, 450.0, 600.0], gt=0)
    md_steps: int = checked(2000, ge=0)  # per temperature and state
    md_every: int = checked(10, ge=1)  # keep a frame every N steps
    scan_from_A: float = -1.4
    scan_to_A: float = 1.4
    scan_windows: int = checked(29, ge=1)
    scan_k_eV_per_A2: float = checked(20.0, ge=0)
    scan_md_steps: int = checked(400, ge=0)  # restrained MD per window
    scan_temperature_K: float = checked(300.0, gt=0)
    normal_modes: int = checked(100, ge=0)  # displaced geometries per state
    normal_mode_temperature_K: float = checked(300.0, gt=0)
    select: int = checked(1500, ge=1)  # geometries kept by farthest-point selection
    ts_region_A: float = checked(0.3, gt=0)
    ts_min: int = checked(150, ge=0)  # at least this many kept with |xi| < ts_region_A
    holdout_scan_points: int = checked(15, ge=0)  # relaxed restrained scan kept out of training (0: none)

    def __post_init__(self):
        if self.select < self.ts_min:
            raise MLFFError(f"select ({self.select}) must be at least ts_min ({self.ts_min})")


def load_recipe(source) -> SamplingRecipe:
    """A recipe from a YAML path or a dict (unknown keys refused by name)."""
    data = load_yaml(source) if not isinstance(source, dict) else source
    return from_dict(SamplingRecipe, data, "sampling recipe" if isinstance(source, dict) else str(source))


def region_of(xi_A: float, ts_region_A: float = 0.3) -> str:
    """"reactant" (xi < -ts), "ts" (|xi| < ts) or "product" (xi > ts)."""
    if xi_A < -ts_region_A:
        return "reactant"
    return "product" if xi_A > ts_region_A else "ts"


def _start(size: str, state: str, seed: int):
    """The relaxed cluster sampling starts from: the shipped geometry for seed 0 (the same one MD and the
    tests use), a fresh GFN2-xTB build otherwise."""
    from mlff.data.cluster import SHIPPED, build_cluster, load_cluster

    if seed == 0 and (SHIPPED / f"cluster_{size}_{state}.xyz").is_file():
        return load_cluster(size, state)
    return build_cluster(size, state, seed=seed)


def _candidates(recipe: SamplingRecipe, progress: bool) -> list:
    from mlff.data.sampling import normal_mode_samples, scan_xi, xtb_md

    frames = []
    states = {s: _start(recipe.size, s, recipe.seed) for s in ("reactant", "product")}
    for k, (state, atoms) in enumerate(states.items()):
        for t, temperature in enumerate(recipe.md_temperatures_K):
            frames += xtb_md(atoms, temperature_K=temperature, steps=recipe.md_steps, every=recipe.md_every,
                             seed=recipe.seed + 100 * k + t)
        frames += normal_mode_samples(atoms, recipe.normal_modes, temperature_K=recipe.normal_mode_temperature_K,
                                      seed=recipe.seed + 10 + k)
    xi_values = np.linspace(recipe.scan_from_A, recipe.scan_to_A, recipe.scan_windows)
    frames += scan_xi(states["reactant"], xi_values, k_eV_per_A2=recipe.scan_k_eV_per_A2,
                      md_steps_per_window=recipe.scan_md_steps, temperature_K=recipe.scan_temperature_K,
                      seed=recipe.seed + 20)
    return frames


def _holdout(recipe: SamplingRecipe) -> list:
    from mlff.data.sampling import scan_xi

    if recipe.holdout_scan_points <= 0:
        return []
    xi_values = np.linspace(recipe.scan_from_A, recipe.scan_to_A, recipe.holdout_scan_points)
    frames = scan_xi(_start(recipe.size, "reactant", recipe.seed), xi_values,
                     k_eV_per_A2=recipe.scan_k_eV_per_A2, md_steps_per_window=0, seed=recipe.seed + 30)
    # one relaxed geometry per window: the last frame of each
    last = {}
    for frame in frames:
        last[frame.info["window_xi0"]] = frame
    return [_tag(f, "holdout-scan", scan="holdout") for f in last.values()]


def _tag(atoms, *tags: str, **info):
    atoms.info["tags"] = sorted(set(atoms.info.get("tags", [])) | set(tags))
    atoms.info.update(info)
    return atoms


def sample_pool(recipe: SamplingRecipe, *, progress: bool = False) -> list:
    """The selected geometries (unlabelled), each with ``xi``, ``source``, region tag and fixed atoms."""
    from mlff.data.cluster import reaction_coordinate
    from mlff.data.sampling import farthest_point_selection

    frames = _candidates(recipe, progress)
    xi = np.array([reaction_coordinate(f) for f in frames])
    ts = np.flatnonzero(np.abs(xi) < recipe.ts_region_A)
    if len(ts) < recipe.ts_min:
        raise MLFFError(f"only {len(ts)} candidate geometries with |xi| < {recipe.ts_region_A} Å, "
                        f"ts_min is {recipe.ts_min}: add scan windows or restrained MD steps")
    chosen = set(ts[farthest_point_selection([frames[i] for i in ts], recipe.ts_min, seed=recipe.seed)].tolist())
    rest = np.array(sorted(set(range(len(frames))) - chosen))
    n_rest = min(recipe.select - len(chosen), len(rest))
    chosen |= set(rest[farthest_point_selection([frames[i] for i in rest], n_rest, seed=recipe.seed)].tolist())
    pool = []
    for i in sorted(chosen):
        frame = frames[i]
        frame.info["xi"] = float(xi[i])
        pool.append(_tag(frame, region_of(xi[i], recipe.ts_region_A), scan="sampling"))
    return pool + _holdout(recipe)
