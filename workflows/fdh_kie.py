"""The semiclassical H/D kinetic isotope effect of the hydride transfer in the small FDH cluster.

The reactant minimum (the shipped cluster relaxed), the transition state (the pool geometry nearest the guessed
TS xi, relaxed under a stiff restraint on xi, then a dimer search along the gradient of xi), both with the
potential; then harmonic TST with Wigner and Bell corrections for the transferring hydride (xi's H) replaced by D
(`mlff.fes.kie`). Writes OUT/kie.json (every number, the frequencies, provenance) and OUT/reactant.xyz, ts.xyz.

    python workflows/fdh_kie.py [--potential fdh-cluster-small] [--ts-xi 0.25] [--temperature 300] [--out out/fdh_kie]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mlff.errors import script_exit


def _restrained(atoms, calculator, centre: float, kappa: float):
    """``calculator`` plus a harmonic restraint on xi at ``centre`` (eV/Å^2 ``kappa``)."""
    from mlff.bias.cv import cv_from_spec
    from mlff.bias.model import BiasCalculator, Biases
    from mlff.bias.restraint import HarmonicRestraint

    biases = Biases(cv_from_spec("xi", [atoms.info]), [HarmonicRestraint([centre], [kappa])]).bind([len(atoms)])
    return BiasCalculator(biases, calculator)


def _xi_gradient(atoms) -> np.ndarray:
    """d xi / d positions [N, 3]: xi = d(C_formate-H) - d(H-C4)."""
    c, h, c4 = (int(k) for k in atoms.info["xi_atoms"])
    grad = np.zeros((len(atoms), 3))
    u1 = atoms.positions[h] - atoms.positions[c]
    u2 = atoms.positions[c4] - atoms.positions[h]
    u1, u2 = u1 / np.linalg.norm(u1), u2 / np.linalg.norm(u2)
    grad[h] += u1 + u2
    grad[c] -= u1
    grad[c4] -= u2
    return grad


def card_section(record: dict) -> str:
    """The potential card's section on the semiclassical KIE, from ``kie.json``'s record."""
    bell = "n/a (deep tunnelling)" if record["kie_bell"] is None else f"{record['kie_bell']:.2f}"
    commit = record.get("provenance", {}).get("mlff_git_commit", "?")
    return (f"`python workflows/fdh_kie.py` (mlff {str(commit)[:7]}, "
            f"{record.get('provenance', {}).get('created_utc', '')[:10]}): reactant minimum at xi "
            f"{record['reactant']['xi_A']:+.2f} Å, transition state at xi {record['ts']['xi_A']:+.2f} Å "
            f"({record['imaginary_cm_H']:.0f}i cm^-1 for H, {record['imaginary_cm_D']:.0f}i for D), electronic barrier "
            f"{record['barrier_electronic_kcal_mol']:.1f} kcal/mol; partial Hessian over {record['moving_atoms']} moving "
            f"atoms. H/D KIE of xi's hydride at {record['temperature_K']:g} K: {record['kie_zpe_only']:.2f} from the "
            f"zero-point energy alone, **{record['kie']:.2f}** harmonic TST (Bigeleisen-Mayer), "
            f"{record['kie_wigner']:.2f} with Wigner's and {bell} with Bell's tunnelling correction. Experiment "
            "(intrinsic, formate oxidation by FDH): about 2.7-3. Caveats: a 39-atom cluster with fixed atoms, not the "
            "enzyme; this potential is 2-4x off held-out DFT, and the frequencies carry that error; harmonic wells, a "
            "parabolic barrier top, no recrossing (the path-integral KIE is the check on these).\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--potential", default="fdh-cluster-small")
    parser.add_argument("--ts-xi", type=float, default=0.25, help="the TS guess's xi (Å)")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--fmax", type=float, default=0.005, help="eV/Å at the stationary points")
    parser.add_argument("--out", default="out/fdh_kie")
    parser.add_argument("--card", action="store_true", help="write the result into the potential's MODEL_CARD.md")
    return script_exit("fdh_kie", run, parser.parse_args(argv))


def run(args) -> None:
    from ase.io import write

    from mlff import load_potential
    from mlff.calculator import MLFFCalculator
    from mlff.data import Dataset
    from mlff.data.cluster import reaction_coordinate
    from mlff.fes.kie import minimise, saddle, semiclassical_kie
    from mlff.md.config import REPO, read_structure
    from mlff.provenance import provenance

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    potential = load_potential(args.potential, dtype="float64")
    calculator = MLFFCalculator(potential, device="cpu", dtype="float64")
    reactant = read_structure("fdh-cluster:small:reactant")
    reactant.calc = calculator
    r = minimise(reactant, fmax=args.fmax)
    print(f"reactant: {r['steps']} BFGS steps, xi {reaction_coordinate(reactant):+.3f} Å", file=sys.stderr)

    pool = Dataset(REPO / "data" / "fdh-cluster" / "pool_small.h5").read()
    ts = min(pool, key=lambda a: abs(a.info["xi"] - args.ts_xi))
    ts.info.update({k: reactant.info[k] for k in ("xi_atoms", "fixed") if k in reactant.info})
    ts.calc = _restrained(ts, calculator, args.ts_xi, 20.0)
    minimise(ts, fmax=0.05)
    ts.calc = calculator
    t = saddle(ts, _xi_gradient(ts), fmax=args.fmax)
    print(f"transition state: {t['steps']} dimer steps, xi {reaction_coordinate(ts):+.3f} Å, "
          f"E - E_reactant {(t['energy_eV'] - r['energy_eV']) * 23.0605:.2f} kcal/mol", file=sys.stderr)

    hydrogen = int(reactant.info["xi_atoms"][1])
    kie = semiclassical_kie(potential, reactant, ts, hydrogen, args.temperature)
    record = {"potential": str(args.potential), "reactant": {**r, "xi_A": reaction_coordinate(reactant)},
              "ts": {**t, "xi_A": reaction_coordinate(ts)},
              "barrier_electronic_kcal_mol": (t["energy_eV"] - r["energy_eV"]) * 23.060548, **kie,
              "provenance": provenance()}
    (out / "kie.json").write_text(json.dumps(record, indent=1, default=float) + "\n")
    for name, atoms in (("reactant", reactant), ("ts", ts)):  # positions and info; not the calculator's arrays
        plain = atoms.copy()
        plain.calc = None
        write(out / f"{name}.xyz", plain)
    if args.card:
        from mlff.models.store import resolve_potential_path, set_card_section

        set_card_section(resolve_potential_path(args.potential) / "MODEL_CARD.md", "Kinetic isotope effect "
                         "(semiclassical)", card_section(json.loads((out / "kie.json").read_text())))
    bell = "n/a (deep tunnelling)" if kie["kie_bell"] is None else f"{kie['kie_bell']:.2f}"
    print(f"KIE(H/D) at {args.temperature:g} K: {kie['kie']:.2f} (zero-point only {kie['kie_zpe_only']:.2f}); "
          f"Wigner {kie['kie_wigner']:.2f}; Bell {bell}; imaginary {kie['imaginary_cm_H']:.0f}i cm^-1 (H), "
          f"{kie['imaginary_cm_D']:.0f}i (D); written to {out / 'kie.json'}")


if __name__ == "__main__":
    sys.exit(main())
