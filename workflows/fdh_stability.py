"""Stability check of a shipped potential: 8 replicas x 10 ps of Langevin MD at 300 K of the small FDH cluster
in one batch, monitors on, then the bonds and the committee spread over time (issue 12, item 6).

    nohup nice python workflows/fdh_stability.py run [--resume] &        # background; SIGTERM -> --resume
    python workflows/fdh_stability.py analyse [--card potentials/fdh-cluster-small-xtb]
    python workflows/fdh_stability.py run --potential gfn2-xtb --steps 4000 --out out/fdh_stability_xtb   # reference
    python workflows/fdh_stability.py export --to data/fdh-cluster/xtb_small_contact.h5   # xTB labels where it failed
                                         [--spread-above 0.3]   # and wherever any replica's committee was unsure

`analyse` writes OUT/stability.json and OUT/stability.png (committee force spread, xi and temperature against
time per replica); with --card it also writes the numbers into the potential's directory (stability.json and
a "Stability" section of MODEL_CARD.md). A bond is a pair closer than 1.2 x the sum of covalent radii in the
start structure; it counts as broken in a frame where it is longer than 1.5 x that sum; a new bond is a pair
that starts unbonded and comes closer than 1.1 x the sum. The two pairs of the hydride transfer
(C_formate-H and H-C4, from info["xi_atoms"]) are reported apart: the reaction may make and break them.
Per replica, the closest approach of two atoms that start more than 2.5 Å apart (no bond, no hydrogen bond;
non-reactive pairs): a potential with a hole lets in atoms that the reference keeps apart.
``analyse --reference xtb`` recomputes the last frames of the replica with the largest final spread with
GFN2-xTB (same continuum as the data) and sets the potential's energy change beside xTB's (0.1 s a frame).
``export`` labels the same replica's last frames, and Gaussian-rattled copies of each, with GFN2-xTB into a dataset
(resumable; tag ``contact``; every fifth frame and its copies are ``test``): the data for the hole the run found.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULTS = {"structure": "fdh-cluster:small:reactant", "potential": "fdh-cluster-small-xtb", "engine": "gpu",
            "integrator": "langevin", "timestep_fs": 0.5, "temperature_K": 300.0, "friction_per_fs": 0.01,
            "steps": 20000, "replicas": 8, "seed": 7, "device": "auto", "dtype": "float32", "neighbors": "verlet",
            "trajectory_every": 20, "checkpoint_every": 1000, "monitor_every": 10, "max_force_eV_per_A": 50.0,
            "max_force_std_eV_per_A": 1.0, "out": "out/fdh_stability"}
# neighbors: on the CPU the Verlet list about halves the cost of a step against all pairs (measured on one thread
# with the committee of 4: 24 clusters 1.7 s against 3.3 s; 8 clusters 0.64 s); with CUDA graphs on a GPU
# all_pairs is the usual choice for one cluster
BONDED, BROKEN, FORMED = 1.2, 1.5, 1.1
APART = 2.5  # Å: pairs farther apart at the start are "new contacts" when they close in


def _stat(fn, values):
    """fn of the finite values, or None (a single-member potential has no committee spread)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else None


def _run(args) -> None:
    from mlff.bias.umbrella import XTB  # --potential gfn2-xtb: the same MD at the labels' level (no potential's holes)
    from mlff.md import run_md

    overrides = {k: v for k, v in {"potential": args.potential, "steps": args.steps, "replicas": args.replicas,
                                   "device": args.device, "out": args.out}.items() if v is not None}
    config, engine = {**DEFAULTS, **overrides}, None
    if args.potential == XTB:  # the reference level itself (tblite, one calculator per replica on the host)
        from mlff.data.sampling import xtb_calculator
        from mlff.md.ase_model import AseCalculatorModel
        from mlff.md.config import load_md_config, read_structure
        from mlff.md.engines import BatchEngine

        config = load_md_config({**config, "potential": None})
        engine = BatchEngine(config, read_structure(config.structure), None,
                             model=AseCalculatorModel(xtb_calculator, name="GFN2-xTB"))
    summary = run_md(config, resume=args.resume, engine=engine)
    print(f"{summary['status']}: {summary['steps_done']} steps, {summary['ms_per_step']:.1f} ms/step"
          + (f"; {summary['message']}" if summary.get("message") else ""))


def bond_events(frames, xi_atoms) -> dict:
    """Bonds broken and formed over ``frames`` (ASE Atoms of one replica, the first is the reference)."""
    from ase.data import covalent_radii

    first = frames[0]
    radii = covalent_radii[first.numbers]
    limit = radii[:, None] + radii[None, :]
    n = len(first)
    iu = np.triu_indices(n, 1)
    reactive = {tuple(sorted(p)) for p in ((xi_atoms[0], xi_atoms[1]), (xi_atoms[1], xi_atoms[2]))} if xi_atoms else set()
    d0 = first.get_all_distances()[iu]
    bonded = d0 < BONDED * limit[iu]
    broken, formed = {}, {}
    for k, atoms in enumerate(frames):
        d = atoms.get_all_distances()[iu]
        for idx in np.flatnonzero(bonded & (d > BROKEN * limit[iu])):
            broken.setdefault((int(iu[0][idx]), int(iu[1][idx])), k)
        for idx in np.flatnonzero(~bonded & (d < FORMED * limit[iu])):
            formed.setdefault((int(iu[0][idx]), int(iu[1][idx])), k)
    sym = first.get_chemical_symbols()

    def named(events):
        return [{"pair": list(p), "atoms": f"{sym[p[0]]}{p[0]}-{sym[p[1]]}{p[1]}", "first_frame": k,
                 "reactive": p in reactive} for p, k in sorted(events.items())]

    return {"bonds_at_start": int(bonded.sum()), "broken": named(broken), "formed": named(formed)}


def closest_contact(frames, xi_atoms) -> dict:
    """The closest approach over ``frames`` of two atoms that start more than ``APART`` Å apart (so neither
    bonded nor hydrogen-bonded at the start; the reactive pairs left out): a potential with a hole lets in
    atoms that the reference keeps apart. Pair, distance (Å), its distance at the start, the frame."""
    first = frames[0]
    iu = np.triu_indices(len(first), 1)
    d0 = first.get_all_distances()[iu]
    keep = d0 > APART
    for a, b in ((xi_atoms[0], xi_atoms[1]), (xi_atoms[1], xi_atoms[2])) if xi_atoms is not None else ():
        keep &= ~((iu[0] == min(a, b)) & (iu[1] == max(a, b)))
    best = None
    for k, atoms in enumerate(frames):
        d = np.where(keep, atoms.get_all_distances()[iu], np.inf)
        idx = int(np.argmin(d))
        if best is None or d[idx] < best[0]:
            best = (float(d[idx]), idx, k)
    d, idx, k = best
    i, j = int(iu[0][idx]), int(iu[1][idx])
    sym = first.get_chemical_symbols()
    return {"pair": [i, j], "atoms": f"{sym[i]}{i}...{sym[j]}{j}", "distance_A": round(d, 3),
            "start_distance_A": round(float(d0[idx]), 3), "frame": k}


def reference_check(frames, potential: str, info: dict, last: int = 10) -> dict:
    """Energies of the potential and of GFN2-xTB along the last ``last`` frames, relative to the first of them,
    and the largest force difference: a flat potential under a rising xTB energy is a hole. ``info``: the
    structure's (charge, multiplicity)."""
    from mlff.calculator import MLFFCalculator
    from mlff.data.labelers.xtb import xtb_calculator

    calc = MLFFCalculator(potential, device="cpu")
    picked = frames[-last:]
    rows = []
    for atoms in picked:
        mine = atoms.copy()
        mine.info = {**frames[0].info, **info}
        mine.calc = calc
        e, f = mine.get_potential_energy(), mine.get_forces()
        ref = mine.copy()
        ref.info = dict(mine.info)
        ref.calc = xtb_calculator(ref)
        e_ref, f_ref = ref.get_potential_energy(), ref.get_forces()
        rows.append((e, e_ref, float(np.abs(f - f_ref).max())))
    e0, r0 = rows[0][0], rows[0][1]
    return {"frames": len(picked), "potential_dE_eV": [round(e - e0, 4) for e, _, _ in rows],
            "xtb_dE_eV": [round(r - r0, 4) for _, r, _ in rows],
            "force_error_max_eV_A": [round(x, 3) for _, _, x in rows]}


def _load_run(out: Path, what: str) -> tuple[dict, dict, dict]:
    """A finished or stopped stability run in ``out``: (run.json, its MD config, the log's rows per replica)."""
    from mlff.errors import MLFFError
    from mlff.md.runlog import read_log

    if not (out / "run.json").is_file():
        raise MLFFError(f"no run to {what} in {out} (run.json missing): `python workflows/fdh_stability.py run` first")
    run = json.loads((out / "run.json").read_text())
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    rows = read_log(out / "log.csv")
    return run, config, {s: [r for r in rows if r["system"] == s] for s in sorted({r["system"] for r in rows})}


def _check_weights(run: dict, potential, what: str) -> None:
    """Refuse ``what`` with ``potential`` where its weights are not those the run used (run.json's pins)."""
    from mlff.models.store import check_weights

    check_weights(run.get("inputs"), potential, f"{what} {potential}", "the stability run used")


def _worst(series: dict) -> int:
    """The replica whose committee force spread was largest at the end of the run."""
    return int(max(series, key=lambda s: np.nan_to_num(series[s][-1].get("max_force_std", np.nan), nan=-1)))


def pick_frames(frames, *, last: int, spread_above: float | None) -> list[int]:
    """Numbers of the ``last`` frames and of every frame whose committee force spread (``info["max_force_std"]``,
    eV/Å) is at least ``spread_above``, in order."""
    picked = set(range(len(frames))[len(frames) - last:]) if last > 0 else set()
    if spread_above is not None:  # NaN (one member, or the reference level) never counts
        picked |= {k for k, f in enumerate(frames) if f.info.get("max_force_std", np.nan) >= spread_above}
    return sorted(picked)


def export_frames(frames, start, *, source: str, rattle: int, sigma_A: float, seed: int, numbers=None) -> list:
    """``frames`` (and ``rattle`` Gaussian copies of each, free atoms only) as unlabelled records with the start
    structure's info, xi, the tags ``contact`` and the xi region, and a split: every fifth frame, copies included,
    is ``test``. ``numbers``: the frames' numbers in the trajectory, for their source (default 0, 1, ...)."""
    from mlff.data.cluster import reaction_coordinate
    from mlff.data.recipe import region_of
    from mlff.data.records import fixed_indices

    rng = np.random.default_rng(seed)
    out = []
    numbers = range(len(frames)) if numbers is None else numbers
    for k, (number, frame) in enumerate(zip(numbers, frames)):
        for copy in range(rattle + 1):
            atoms = frame.copy()
            atoms.calc = None
            atoms.info = {key: value for key, value in start.info.items() if key not in ("source", "xi", "tags")}
            if copy:
                free = np.setdiff1d(np.arange(len(atoms)), fixed_indices(atoms))
                atoms.positions[free] += rng.normal(0.0, sigma_A, (len(free), 3))
            xi = reaction_coordinate(atoms)
            atoms.info.update(source=f"{source} frame {number}" + (f" rattled {copy}, sigma {sigma_A:g} Å, seed {seed}"
                                                              if copy else ""),
                              xi=xi, tags=sorted({"contact", region_of(xi)}), split="test" if k % 5 == 4 else "train")
            out.append(atoms)
    return out


def _export(args) -> None:
    from mlff.data import Dataset, label
    from mlff.data.labelers import XTBLabeler
    from mlff.md import read_structure
    from mlff.md.h5md import read_h5md

    out = Path(args.out or DEFAULTS["out"])
    run, config, series = _load_run(out, "export from")
    worst = _worst(series)
    start = read_structure(config.get("structure", DEFAULTS["structure"]))
    began = run.get("provenance", {}).get("created_utc", "?")  # names the potential when its path was reused
    source = (f"fdh_stability run {out.name} of {began} (potential {config.get('potential', DEFAULTS['potential'])}, "
              f"status {run['status']} at step {run['step']})")
    records = []
    for s in sorted(series) if args.spread_above is not None else [worst]:
        frames = read_h5md(out / "trajectory.h5", ":", group=f"system_{int(s):04d}")
        numbers = pick_frames(frames, last=args.last if s == worst else 0, spread_above=args.spread_above)
        records += export_frames([frames[k] for k in numbers], start, source=f"{source} replica {s}",
                                 rattle=args.rattle, sigma_A=args.sigma, seed=args.seed + int(s), numbers=numbers)
    print(f"{len(records)} records to label ({args.rattle} rattled copies of each frame)")
    description = "GFN2-xTB labels of frames where a potential's stability MD failed (workflows/fdh_stability.py export)"
    if not Path(args.to).is_file():  # compact: float32 positions and forces, like the other xTB data
        Dataset.create(args.to, description=description, precision="float32")
    print(label(records, XTBLabeler(), args.to, progress=False, description=description))


def _analyse(args) -> None:
    from mlff.md.h5md import read_h5md
    from mlff.provenance import provenance

    out = Path(args.out or DEFAULTS["out"])
    run, config, series = _load_run(out, "analyse")
    systems = list(series)
    frames_of = {}  # replica -> its frames, kept for the reference check only
    replicas = []
    for s in systems:
        frames = read_h5md(out / "trajectory.h5", ":", group=f"system_{int(s):04d}")
        info = frames[0].info
        events = bond_events(frames, info.get("xi_atoms"))
        mine = series[s]
        spread = np.array([r.get("max_force_std", np.nan) for r in mine], float)
        replicas.append({
            "replica": int(s), "frames": len(frames), "time_ps": mine[-1]["time_fs"] / 1000.0,
            "temperature_K_mean": float(np.mean([r["temperature"] for r in mine[len(mine) // 10:]])),
            "xi_A_range": [float(min(r["xi"] for r in mine)), float(max(r["xi"] for r in mine))] if "xi" in mine[0] else None,
            "max_force_std_eV_A": {"mean": _stat(np.mean, spread), "max": _stat(np.max, spread),
                                   "p99": _stat(lambda v: np.percentile(v, 99), spread)},
            "energy_std_eV_max": _stat(np.max, [r.get("energy_std", np.nan) for r in mine]),
            "bonds_at_start": events["bonds_at_start"],
            "broken_nonreactive": [e for e in events["broken"] if not e["reactive"]],
            "formed_nonreactive": [e for e in events["formed"] if not e["reactive"]],
            "reactive_events": [e for e in events["broken"] + events["formed"] if e["reactive"]],
            "closest_contact": closest_contact(frames, info.get("xi_atoms")),
        })
        if args.reference:
            frames_of[int(s)] = frames
    t_ps = np.array([r["time_fs"] for r in series[systems[0]]]) / 1000.0
    spread_t = np.array([[r.get("max_force_std", np.nan) for r in series[s]] for s in systems])
    blocks = [{"from_ps": float(a), "to_ps": float(a + 1), "max_force_std_eV_A_mean": _stat(np.mean, spread_t[:, m]),
               "max_force_std_eV_A_max": _stat(np.max, spread_t[:, m])}
              for a in range(int(np.ceil(t_ps[-1]))) if (m := (t_ps > a) & (t_ps <= a + 1)).any()]
    potential = config.get("potential", DEFAULTS["potential"]) if isinstance(run.get("config"), dict) else None
    reference = None
    if args.reference:
        checked = potential or DEFAULTS["potential"]
        from mlff.md import read_structure

        start = read_structure(config.get("structure", DEFAULTS["structure"])).info
        charge = {k: start[k] for k in ("charge", "multiplicity") if k in start}
        worst = _worst(series)
        _check_weights(run, checked, "compare with xTB")
        reference = {"replica": worst, "method": "GFN2-xTB (tblite), the labels' level",
                     **reference_check(frames_of[worst], checked, charge)}
    doc = {"what": "stability of a potential: replicas of Langevin MD of the small FDH cluster in one batch",
           "potential": potential, "reference_check": reference,
           "status": run["status"], "message": run.get("message"), "steps": run["step"],
           "steps_planned": config.get("steps"), "timestep_fs": config.get("timestep_fs"),
           "ms_per_step": run.get("ms_per_step"), "device": run.get("device"),
           "monitor_tripped": run["status"] == "stopped",
           "nonreactive_bonds_broken": sum(len(r["broken_nonreactive"]) for r in replicas),
           "nonreactive_bonds_formed": sum(len(r["formed_nonreactive"]) for r in replicas),
           "committee_spread_per_ps": blocks, "replicas": replicas,
           "criteria": {"bonded": BONDED, "broken": BROKEN, "formed": FORMED, "unit": "x sum of covalent radii"},
           "provenance": provenance()}
    (out / "stability.json").write_text(json.dumps(doc, indent=1) + "\n")
    _plot(series, systems, out / "stability.png")
    print(_summary(doc))
    if args.card:
        card_dir = Path(args.card)
        _check_weights(run, card_dir, "write the stability numbers into the card of")
        (card_dir / "stability.json").write_text(json.dumps(doc, indent=1) + "\n")
        _card(card_dir / "MODEL_CARD.md", doc)
        shutil.copyfile(out / "stability.png", card_dir / "stability.png")
        print(f"wrote {card_dir / 'stability.json'} and the Stability section of {card_dir / 'MODEL_CARD.md'}")
    print(f"wrote {out / 'stability.json'} and {out / 'stability.png'}")


def _summary(doc: dict) -> str:
    reps = doc["replicas"]
    t = min(r["time_ps"] for r in reps)
    spread = _stat(np.max, [r["max_force_std_eV_A"]["max"] or np.nan for r in reps])
    mean = _stat(np.mean, [r["max_force_std_eV_A"]["mean"] or np.nan for r in reps])
    spread_text = ("no committee spread (one member)" if spread is None else
                   f"committee max force spread mean {mean * 1000:.0f} meV/Å, max {spread * 1000:.0f} meV/Å")
    reactive = sum(len(r["reactive_events"]) for r in reps)
    planned = (doc.get("steps_planned") or 0) * (doc.get("timestep_fs") or 0) / 1000.0
    unfinished = doc["status"] != "finished" and not doc["monitor_tripped"] and planned
    return (("INCOMPLETE, " if unfinished else "") + f"{len(reps)} replicas x {t:.2f} ps"
            + (f" of the {planned:g} ps planned (resume: workflows/fdh_stability.py run --resume)" if unfinished else "")
            + f" at {np.mean([r['temperature_K_mean'] for r in reps]):.0f} K: status "
            f"{doc['status']}{' (MONITOR TRIPPED)' if doc['monitor_tripped'] else ', no monitor trip'}; "
            f"non-reactive bonds broken {doc['nonreactive_bonds_broken']}, formed {doc['nonreactive_bonds_formed']}; "
            f"events on the reacting pairs {reactive}; {spread_text}")


def _card(path: Path, doc: dict) -> None:
    from mlff.models.store import set_card_section

    lines = [_summary(doc) + ".", "",
             f"Run: workflows/fdh_stability.py ({doc['replicas'][0]['frames']} frames per replica, "
             f"{doc['ms_per_step']:.1f} ms/step on {doc['device']}; "
             f"{doc['provenance'].get('created_utc', '')}). Plot: stability.png (spread, xi and T against time).", "",
             "| ps | mean of max force spread (meV/Å) | max (meV/Å) |", "|---|---|---|"]
    lines += [f"| {b['from_ps']:.0f}-{b['to_ps']:.0f} | {_mev(b['max_force_std_eV_A_mean'])} | "
              f"{_mev(b['max_force_std_eV_A_max'])} |" for b in doc["committee_spread_per_ps"]]
    if doc.get("message"):
        lines += ["", f"Monitor: {doc['message'].split('; state saved')[0]}."]
    contacts = [r for r in doc["replicas"] if r.get("closest_contact")]
    if contacts:
        lines += ["", f"| replica | closest approach of atoms > {APART} Å apart at the start | distance (Å) | "
                  "at start (Å) | frame |", "|---|---|---|---|---|"]
        lines += [f"| {r['replica']} | {c['atoms']} | {c['distance_A']:.2f} | {c['start_distance_A']:.2f} | "
                  f"{c['frame']} |" for r in contacts if (c := r["closest_contact"])]
    ref = doc.get("reference_check")
    if ref:
        lines += ["", f"Reference check of replica {ref['replica']}, its last {ref['frames']} frames against {ref['method']}: "
                  f"energy change of the potential {ref['potential_dE_eV'][-1]:+.2f} eV, of xTB {ref['xtb_dE_eV'][-1]:+.2f} eV; "
                  f"largest force error {max(ref['force_error_max_eV_A']):.2f} eV/Å (stability.json has every frame)."]
    for r in doc["replicas"]:
        for e in r["broken_nonreactive"] + r["formed_nonreactive"]:
            kind = "broken" if e in r["broken_nonreactive"] else "formed"
            lines.append(f"\nReplica {r['replica']}: bond {e['atoms']} {kind} at frame {e['first_frame']}.")
    set_card_section(path, "Stability", "\n".join(lines))


def _mev(value) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _plot(series: dict, systems, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlff.plotting import save_figure

    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(7, 7.5))
    for s in systems:
        rows = series[s]
        t = [r["time_fs"] / 1000 for r in rows]
        axes[0].plot(t, [1000 * r.get("max_force_std", np.nan) for r in rows], lw=0.7, label=f"replica {int(s)}")
        axes[1].plot(t, [r.get("xi", np.nan) for r in rows], lw=0.7)
        axes[2].plot(t, [r["temperature"] for r in rows], lw=0.5)
    axes[0].set_ylabel("max force spread (meV/Å)")
    axes[0].legend(fontsize=6, ncol=4)
    axes[1].set_ylabel("xi (Å)")
    axes[2].set_ylabel("T (K)")
    axes[2].set_xlabel("time (ps)")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def main(argv=None) -> int:
    from mlff.errors import script_exit

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    run = sub.add_parser("run")
    run.add_argument("--resume", action="store_true")
    run.add_argument("--potential")
    run.add_argument("--steps", type=int)
    run.add_argument("--replicas", type=int)
    run.add_argument("--device")
    ana = sub.add_parser("analyse")
    ana.add_argument("--card", help="a potential directory: write the numbers into its card")
    ana.add_argument("--reference", choices=["xtb"], help="recompute the last frames of the replica with the largest "
                     "final spread with GFN2-xTB (the xTB potential's own level)")
    exp = sub.add_parser("export")
    exp.add_argument("--to", required=True, help="the dataset to add the xTB-labelled frames to (resumable)")
    exp.add_argument("--last", type=int, default=40, help="frames from the end of the worst replica (default 40)")
    exp.add_argument("--rattle", type=int, default=4, help="Gaussian copies of each frame (default 4)")
    exp.add_argument("--sigma", type=float, default=0.05, help="their displacement, Å (default 0.05)")
    exp.add_argument("--spread-above", type=float, help="also every frame of any replica whose committee force "
                     "spread was at least this (eV/Å)")
    exp.add_argument("--seed", type=int, default=0, help="rattle seed, plus the replica's number (default 0)")
    for s in (run, ana, exp):
        s.add_argument("--out")
    args = p.parse_args(argv)
    return script_exit("fdh_stability", {"run": _run, "analyse": _analyse, "export": _export}[args.stage], args)


if __name__ == "__main__":
    sys.exit(main())
