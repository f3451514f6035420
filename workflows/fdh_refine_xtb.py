"""Refine the shipped xTB committee with the active-learning loop, score it, and keep what it learned (issue 12, items 3, 6).

    OMP_NUM_THREADS=1 nohup nice mlff learn workflows/fdh_refine_xtb.yaml &   # the loop (resumable: --resume)
    python workflows/fdh_refine_xtb.py export      # its xTB labels -> data/fdh-cluster/xtb_small_refine.h5
    mlff train workflows/fdh_xtb_refined.yaml      # the loop's committee scored on the whole xTB dataset: its card
    python workflows/fdh_refine_xtb.py card RUN/fdh-cluster-small-xtb   # + the loop's history in that card

`export` writes every label of the loop (GFN2-xTB, with the labeller's provenance, where it was found:
``info["learn_iteration"]``, ``info["source"]``) into the training split (``split: train``, tags ``refine`` and
the region of xi: reactant, ts, product) of a
dataset beside xtb_small.h5, so that the potential's card lists it with its checksum and a retraining from
scratch sees the same data. `card` appends a "Refinement" section to a model card: per iteration of the loop, the
labels spent, the 400 K exploration steps before a monitor stop (the stability signal the loop acts on), the
spread calibration and the errors on the held-out xTB scan.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "runs/fdh-refine-xtb"
OUT = REPO / "data/fdh-cluster/xtb_small_refine.h5"


def export(run: Path, out: Path) -> int:
    from mlff.data.store import Dataset
    from mlff.errors import MLFFError
    from mlff.learn.state import write_dataset

    labels = run / "labels.h5"
    if not labels.is_file():
        raise MLFFError(f"no labels at {labels}: run `mlff learn workflows/fdh_refine_xtb.yaml` first")
    from mlff.data.recipe import region_of

    records = Dataset(labels).read()
    for atoms in records:
        atoms.info["split"] = "train"
        region = [region_of(float(atoms.info["xi"]))] if "xi" in atoms.info else []  # as in xtb_small.h5
        atoms.info["tags"] = sorted(set(list(atoms.info.get("tags", [])) + ["refine"] + region))
    n = write_dataset(out, records, description="GFN2-xTB labels chosen by mlff learn (workflows/fdh_refine_xtb.yaml) "
                      "from MD at 400 K and umbrella windows of fdh-cluster-small-xtb", require=("energy", "forces"))
    print(f"wrote {n} records to {out}")
    return n


def history(run: Path) -> list[dict]:
    """One row per finished iteration of the loop in ``run``."""
    rows = []
    for it_dir in sorted(run.glob("iter_*")):
        report = it_dir / "report.json"
        if not report.is_file():
            continue
        r = json.loads(report.read_text())
        md = it_dir / "explore" / "md" / "run.json"
        md = json.loads(md.read_text()) if md.is_file() else {}
        test = (r.get("test") or {}).get("all", {})
        rows.append({"iteration": r["iteration"], "labels": r.get("labelled_this_iteration"),
                     "labels_total": r.get("labels_spent"), "md_status": md.get("status"), "md_steps": md.get("step"),
                     "md_steps_planned": (md.get("config") or {}).get("steps"),
                     "slope": (r.get("calibration") or {}).get("slope"),
                     "test_forces_meV_A": test.get("forces_rmse_meV_A"), "test_energy_meV_atom": test.get("energy_rmse_meV_atom")})
    return rows


def card_section(rows: list[dict]) -> str:
    """The body of the card's "Refinement" section."""
    lines = ["Fine-tuned by `mlff learn workflows/fdh_refine_xtb.yaml` from the first `fdh-cluster-small-xtb` (6 epochs per "
             "member; its stability run tripped the monitor after 0.44 ps), with GFN2-xTB as the oracle: MD of 8 replicas "
             "at 400 K and 17 umbrella windows with the current committee, frames chosen by calibrated committee spread "
             "and diversity, labelled with xTB, each member fine-tuned on all labels so far plus 1 500 replayed records "
             "of xtb_small.h5. The labels are `data/fdh-cluster/xtb_small_refine.h5`. Exploration steps: the 400 K MD "
             "before a monitor stop (committee force spread above 1.5 eV/Å) with the committee of that iteration.", "",
             "| iteration | labels (total) | 400 K MD steps before a stop | spread calibration (error / spread) | "
             "held-out scan: F RMSE (meV/Å) | E RMSE (meV/atom) |", "|---|---|---|---|---|---|"]
    for r in rows:
        steps = f"{r['md_steps']} of {r['md_steps_planned']}" + (" (stopped)" if r["md_status"] == "stopped" else "")
        lines.append(f"| {r['iteration']} | {r['labels']} ({r['labels_total']}) | {steps} | "
                     f"{_num(r['slope'], '.2f')} | {_num(r['test_forces_meV_A'], '.0f')} | {_num(r['test_energy_meV_atom'], '.2f')} |")
    lines.append("\nEach row's errors are those of the committee trained at the end of that iteration; its MD row is the "
                 "exploration with the committee it started from.")
    return "\n".join(lines) + "\n"


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def card(potential_dir: Path, run: Path) -> None:
    from mlff.models.store import set_card_section

    path = potential_dir / "MODEL_CARD.md"
    set_card_section(path, "Refinement", card_section(history(run)))
    print(f"wrote the Refinement section of {path}")


def main(argv=None) -> int:
    from mlff.errors import script_exit

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--out", default=str(OUT))
    ca = sub.add_parser("card")
    ca.add_argument("potential", help="the potential directory whose MODEL_CARD.md gets the section")
    for s in (ex, ca):
        s.add_argument("--run", default=str(RUN), help="the mlff learn run directory")
    args = p.parse_args(argv)
    if args.stage == "export":
        return script_exit("fdh_refine_xtb", export, Path(args.run), Path(args.out))
    return script_exit("fdh_refine_xtb", card, Path(args.potential), Path(args.run))


if __name__ == "__main__":
    sys.exit(main())
