"""A labelled GFN2-xTB sampling campaign: the xTB dataset of an FDH cluster, made resumably in segments.

The campaign is a fixed, deterministic list of segments (``plan``); each segment is one unit of work whose
frames are written together or not at all:

- ``holdout``: the held-out restrained scan of the geometry pool (tag ``holdout-scan``), labelled with xTB;
- ``free``: unbiased Langevin MD of the reactant or the product, from a pool geometry of that state;
- ``window``: MD with xi restrained (k/2 (xi - xi0)^2) to a centre, from the pool geometry nearest it, or, with
  ``window_start: chain`` (for centres beyond the pool's reach), from the last frame of the window one spacing
  nearer the pool: each chain walks outward from the pool, one temperature and one row at a time;
- ``modes``: normal-mode displacements of the relaxed reactant or product;
- ``rattle``: Gaussian displacements of the free atoms of pool geometries.

MD frames keep the xTB energy and forces their own step computed (``xtb_md(labels=True)``); the other
segments are labelled with ``XTBLabeler``. Every start geometry is a different pool geometry. Splits are by
segment, stratified: in every stratum (state or window centre) whole segments go to ``test`` (never
trained on), so no test frame is a near copy of a training frame; chained windows go to ``test`` by whole
chains, for the same reason; ``modes`` and ``rattle`` records are independent draws and are split per record.

``run`` works through the segments not yet done into per-worker part files (several workers may run at
once on disjoint segments); ``merge`` folds the parts into the campaign's dataset in segment order, so the
dataset is the same however the work was cut, killed or shared (bit for bit with one OpenMP thread per
worker; with several, xTB's parallel sums make trajectories differ at round-off). A killed worker loses only
its segment in progress.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlff.config import from_dict, load_yaml
from mlff.errors import MLFFError

__all__ = ["CampaignRecipe", "Segment", "load_campaign", "plan", "run_segments", "merge_parts", "done_segments"]


@dataclass
class CampaignRecipe:
    size: str = "small"  # cluster size (data/fdh-cluster/cluster_<size>_*.xyz)
    pool: str = "data/fdh-cluster/pool_small.h5"  # start geometries (and the held-out scan)
    out: str = "data/fdh-cluster/xtb_small.h5"  # the campaign's dataset
    seed: int = 0
    timestep_fs: float = 0.5
    segment_steps: int = 400  # MD steps per segment
    every: int = 8  # a labelled frame every N steps
    free_temperatures_K: list = field(default_factory=lambda: [300.0, 400.0, 500.0])
    free_segments: int = 20  # per state and temperature
    window_from_A: float = -1.6
    window_to_A: float = 1.6
    window_spacing_A: float = 0.1
    window_k_eV_per_A2: float = 10.0
    window_temperatures_K: list = field(default_factory=lambda: [300.0, 450.0])
    window_segments: int = 5  # per centre and temperature
    window_start: str = "pool"  # pool: the nearest pool geometry | chain: the end of the window one step nearer
    holdout: bool = True  # label the pool's held-out scan (segment 0)
    tags: list = field(default_factory=list)  # added to every record (e.g. to score this campaign's data apart)
    normal_modes: int = 500  # per state
    normal_mode_temperature_K: float = 300.0
    rattled: int = 1000
    rattle_sigma_A: float = 0.05
    test_fraction: float = 0.1  # of the segments of every stratum (at least one), and of modes/rattle records
    valid_fraction: float = 0.05  # of the training records, by record

    def __post_init__(self):
        for name in ("segment_steps", "every", "timestep_fs", "window_spacing_A", "window_k_eV_per_A2",
                     "rattle_sigma_A", "normal_mode_temperature_K"):
            if not getattr(self, name) > 0:
                raise MLFFError(f"campaign: {name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.test_fraction < 1 or not 0 <= self.valid_fraction < 1:
            raise MLFFError("campaign: test_fraction and valid_fraction must lie in [0, 1)")
        if self.window_start not in ("pool", "chain"):
            raise MLFFError(f"campaign: window_start must be pool or chain, got {self.window_start!r}")


@dataclass(frozen=True)
class Segment:
    id: int  # position in the plan; the dataset is ordered by it
    kind: str  # holdout | free | window | modes | rattle
    stratum: str  # e.g. "free:reactant", "window:+0.30"
    split: str  # train | test | holdout | record (modes/rattle: split per record)
    temperature_K: float = 0.0
    state: str = ""  # reactant | product (free, modes)
    xi0_A: float | None = None  # window centre
    start: int = -1  # pool record the MD starts from
    after: int = -1  # or the segment whose last frame it starts from (chained windows)
    seed: int = 0


def load_campaign(source) -> CampaignRecipe:
    data = source if isinstance(source, dict) else load_yaml(source)
    return from_dict(CampaignRecipe, data, "campaign" if isinstance(source, dict) else str(source))


def _hash01(*parts) -> float:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16) / 16**15


def _test_members(n: int, fraction: float, key: str) -> set:
    """Which of ``n`` segments of a stratum are test segments (at least one when fraction > 0)."""
    if fraction <= 0 or n < 2:
        return set()
    order = sorted(range(n), key=lambda r: _hash01(key, r))
    return set(order[:max(1, int(round(fraction * n)))])


def plan(recipe: CampaignRecipe, pool_infos: list) -> list[Segment]:
    """The deterministic segment list, interleaved so that any prefix covers every stratum."""
    usable = [k for k, info in enumerate(pool_infos) if "holdout-scan" not in info.get("tags", [])]
    xi = np.array([pool_infos[k]["xi"] for k in usable])
    used: set = set()

    def take(candidates_order) -> int:
        for k in candidates_order:
            if usable[k] not in used:
                used.add(usable[k])
                return usable[k]
        raise MLFFError(f"the pool {recipe.pool} has too few geometries for the campaign")

    rng = np.random.default_rng(recipe.seed)
    centres = np.round(np.arange(recipe.window_from_A, recipe.window_to_A + 1e-9, recipe.window_spacing_A), 6)
    chain = recipe.window_start == "chain"
    if chain:  # outward from the pool: the first centre of every chain is the one nearest the pool's geometries
        centres = centres[np.argsort(np.abs(centres - np.median(xi)), kind="stable")]
    queues = []  # one list of segment specs per stratum, round-robin merged below
    for state in ("reactant", "product"):
        n = len(recipe.free_temperatures_K) * recipe.free_segments
        test = _test_members(n, recipe.test_fraction, f"{recipe.seed}:free:{state}")
        in_state = rng.permutation(np.flatnonzero([state in pool_infos[k].get("tags", []) for k in usable]))
        queues.append([dict(kind="free", stratum=f"free:{state}", state=state, split="test" if r in test else "train",
                            temperature_K=float(recipe.free_temperatures_K[r % len(recipe.free_temperatures_K)]),
                            order=in_state) for r in range(n)])
    for i, c in enumerate(centres):
        n = len(recipe.window_temperatures_K) * recipe.window_segments
        test = _test_members(n, recipe.test_fraction, f"{recipe.seed}:" + ("chain" if chain else f"window:{c:+.2f}"))
        queues.append([dict(kind="window", stratum=f"window:{c:+.2f}", xi0_A=float(c),
                            split="test" if r in test else "train", order=np.argsort(np.abs(xi - c), kind="stable"),
                            temperature_K=float(recipe.window_temperatures_K[r % len(recipe.window_temperatures_K)]),
                            link=(i, r)) for r in range(n)])
    specs = [dict(kind="holdout", stratum="holdout", split="holdout")] if recipe.holdout else []
    if recipe.normal_modes:
        specs += [dict(kind="modes", stratum=f"modes:{s}", state=s, split="record",
                       temperature_K=recipe.normal_mode_temperature_K) for s in ("reactant", "product")]
    if recipe.rattled:
        specs += [dict(kind="rattle", stratum="rattle", split="record")]
    for row in range(max(len(q) for q in queues)):
        specs += [q[row] for q in queues if row < len(q)]
    segments, ids = [], {}
    for k, spec in enumerate(specs):
        order, link = spec.pop("order", None), spec.pop("link", None)
        after = ids[(link[0] - 1, link[1])] if chain and link is not None and link[0] > 0 else -1
        start = take(order) if order is not None and after < 0 else -1
        if link is not None:
            ids[link] = k
        segments.append(Segment(id=k, seed=recipe.seed * 100003 + k, start=start, after=after, **spec))
    return segments


def done_segments(paths) -> set:
    """Segment ids present in the datasets at ``paths`` (records or failures)."""
    from mlff.data.store import Dataset

    done = set()
    for path in paths:
        if Path(path).is_file():
            dataset = Dataset(path)
            for table in ("records", "failures"):
                done |= {info["segment"] for info in dataset.infos(table) if "segment" in info}
    return done


def _parts_dir(recipe: CampaignRecipe) -> Path:
    return Path(recipe.out).with_suffix(".parts")


def _split_records(frames: list, segment: Segment, recipe: CampaignRecipe) -> None:
    from mlff.data.recipe import region_of

    for k, frame in enumerate(frames):
        split = segment.split
        if split == "record":
            split = "test" if _hash01(recipe.seed, "record", segment.id, k) < recipe.test_fraction else "train"
        if split == "train" and _hash01(recipe.seed, "valid", segment.id, k) < recipe.valid_fraction:
            split = "valid"
        tags = (set(frame.info.get("tags", [])) - {"reactant", "ts", "product"}) | set(recipe.tags)
        if split != "holdout":
            tags.add(region_of(frame.info["xi"]))
        frame.info.update(segment=segment.id, stratum=segment.stratum, split=split, tags=sorted(tags))


def _last_frame(recipe: CampaignRecipe, segment_id: int):
    """The last frame of a segment already done (the start of the window chained to it)."""
    from mlff.data.store import Dataset

    for path in [Path(recipe.out), *sorted(_parts_dir(recipe).glob("worker-*.h5"))]:
        if path.is_file():
            dataset = Dataset(path)
            mine = [k for k, info in enumerate(dataset.infos()) if info.get("segment") == segment_id]
            if mine:
                return dataset.read([mine[-1]])[0]
    raise MLFFError(f"campaign {recipe.out}: segment {segment_id}, where a chained window starts, is not done "
                    f"(or failed): chained windows run in order, with one worker")


def _segment_frames(segment: Segment, recipe: CampaignRecipe, pool) -> tuple[list, bool]:
    """(frames, already labelled) of one segment."""
    from mlff.data.cluster import load_cluster
    from mlff.data.sampling import XiRestraint, normal_mode_samples, xtb_md

    if segment.kind == "holdout":
        held = [k for k, info in enumerate(pool.infos()) if "holdout-scan" in info.get("tags", [])]
        return pool.read(held), False
    if segment.kind in ("free", "window"):
        start = pool.read([segment.start])[0] if segment.after < 0 else _last_frame(recipe, segment.after)
        start.calc = None
        restraint = None
        if segment.kind == "window":
            restraint = XiRestraint(start.info["xi_atoms"], segment.xi0_A, recipe.window_k_eV_per_A2)
        frames = xtb_md(start, temperature_K=segment.temperature_K, steps=recipe.segment_steps,
                        timestep_fs=recipe.timestep_fs, every=recipe.every, seed=segment.seed, restraint=restraint,
                        labels=True)
        for frame in frames:
            frame.info["start_geometry"] = (f"{Path(recipe.pool).name} record {segment.start}" if segment.after < 0
                                            else f"last frame of segment {segment.after}")
            if segment.kind == "window":
                frame.info.update(window_xi0=segment.xi0_A, window_k_eV_per_A2=recipe.window_k_eV_per_A2)
        return frames, True
    if segment.kind == "modes":
        return normal_mode_samples(load_cluster(recipe.size, segment.state), recipe.normal_modes,
                                   temperature_K=segment.temperature_K, seed=segment.seed), False
    return _rattled(pool, recipe, segment.seed), False


def _rattled(pool, recipe: CampaignRecipe, seed: int) -> list:
    from mlff.data.records import fixed_indices
    from mlff.data.sampling import _frame

    infos = pool.infos()
    usable = [k for k, info in enumerate(infos) if "holdout-scan" not in info.get("tags", [])]
    rng = np.random.default_rng(seed)
    picks = rng.choice(usable, size=min(recipe.rattled, len(usable)), replace=False)
    frames = []
    for k, atoms in zip(picks, pool.read(sorted(picks))):
        atoms.calc = None
        free = np.setdiff1d(np.arange(len(atoms)), fixed_indices(atoms))
        atoms.positions[free] += rng.normal(0.0, recipe.rattle_sigma_A, (len(free), 3))
        frames.append(_frame(atoms, f"{Path(recipe.pool).name} record {k} rattled, sigma "
                                    f"{recipe.rattle_sigma_A:g} Å, seed {seed}"))
    return frames


def run_segments(recipe: CampaignRecipe, *, worker: int = 0, workers: int = 1, time_limit_s: float | None = None,
                 log=print) -> int:
    """Do this worker's share (segment id % workers == worker) of the segments not yet done; returns how many
    it did. Each segment's frames are appended to the worker's part file in one atomic append."""
    from mlff.data.label import label
    from mlff.data.labelers.xtb import XTBLabeler
    from mlff.data.store import Dataset

    if not 0 <= worker < workers:
        raise MLFFError(f"worker must lie in [0, {workers}), got {worker}")
    if workers > 1 and recipe.window_start == "chain":
        raise MLFFError("chained windows (window_start: chain) run in order: use one worker")
    pool = Dataset(recipe.pool)
    segments = plan(recipe, pool.infos())
    parts = _parts_dir(recipe)
    part = parts / f"worker-{worker}.h5"
    done = done_segments([recipe.out, *sorted(parts.glob("worker-*.h5"))])
    todo = [s for s in segments if s.id not in done and s.id % workers == worker]
    log(f"campaign {recipe.out}: {len(segments)} segments, {len(done)} done, {len(todo)} for worker "
        f"{worker}/{workers}")
    began, count = time.perf_counter(), 0
    for segment in todo:
        if time_limit_s is not None and time.perf_counter() - began > time_limit_s:
            break
        t0 = time.perf_counter()
        frames, labelled = _segment_frames(segment, recipe, pool)
        _split_records(frames, segment, recipe)
        if labelled:
            dataset = Dataset(part) if part.exists() else Dataset.create(part, description="campaign part")
            dataset.append(frames, where=f"segment {segment.id} frame")
        else:
            label(frames, XTBLabeler(), part, checkpoint_every=len(frames) or 1, progress=False)
        count += 1
        log(f"segment {segment.id} ({segment.kind} {segment.stratum} {segment.temperature_K:g} K, {segment.split}): "
            f"{len(frames)} frames in {time.perf_counter() - t0:.1f} s")
    return count


def merge_parts(recipe: CampaignRecipe, *, precision: str | None = None) -> int:
    """Fold the part files into ``recipe.out`` in segment order (records already there are kept); returns the
    number of records. The parts are removed once the merged dataset is in place."""
    from mlff.data.store import Dataset

    out, parts = Path(recipe.out), sorted(_parts_dir(recipe).glob("worker-*.h5"))
    sources = ([Dataset(out)] if out.is_file() else []) + [Dataset(p) for p in parts]
    tables = {}
    for table in ("records", "failures"):
        rows = [r for d in sources for r in d.read(table=table)]
        seen, unique = set(), []
        for r in sorted(rows, key=lambda r: r.info.get("segment", -1)):  # stable: frame order kept
            key = (r.info.get("segment"), r.info.get("source"))
            if key not in seen:
                seen.add(key)
                unique.append(r)
        tables[table] = unique
    tmp = out.with_name(f".{out.name}.merging")
    kwargs = {} if precision is None else {"precision": precision}
    merged = Dataset.create(tmp, description=f"GFN2-xTB campaign of the FDH {recipe.size} cluster",
                            overwrite=True, **kwargs)
    merged.append(tables["records"], where="merged record")
    merged.append(tables["failures"], table="failures", where="merged failure", require=())
    tmp.replace(out)
    for p in parts:
        p.unlink()
    return len(tables["records"])
