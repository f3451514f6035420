"""The GFN2-xTB dataset of the small FDH cluster (data/fdh-cluster/xtb_small.h5), resumably.

    python workflows/fdh_xtb_dataset.py --stage e0s                      # isolated_atoms_xtb.h5 (seconds)
    python workflows/fdh_xtb_dataset.py --stage run [--worker K --workers N] [--minutes M]   # hours, resumable
    python workflows/fdh_xtb_dataset.py --stage merge                    # parts -> xtb_small.h5
    python workflows/fdh_xtb_dataset.py --stage status

``run`` can be stopped at any point (kill, --minutes) and started again: it goes on with the segments not
yet done (see mlff.data.campaign). Several workers (one core each) share the work with --worker/--workers.
Each worker uses one OpenMP thread unless OMP_NUM_THREADS says otherwise: with one thread xTB sums in a fixed
order, so a segment's frames are the same bit for bit however the campaign was cut or shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite's OpenMP runtime starts (see the docstring)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=["e0s", "run", "merge", "status"], required=True)
    p.add_argument("--recipe", default=str(HERE / "fdh_xtb_dataset.yaml"))
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--minutes", type=float, help="start no new segment after this wall time")
    p.add_argument("--precision", choices=["float32", "float64"], help="storage precision of the merged dataset")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    from mlff.data import Dataset, label
    from mlff.data.campaign import done_segments, load_campaign, merge_parts, plan, run_segments
    from mlff.errors import MLFFError

    try:
        recipe = load_campaign(args.recipe)
        if args.stage == "e0s":
            from mlff.data.cluster import isolated_atoms
            from mlff.data.labelers import XTBLabeler

            out = Path(recipe.out).with_name("isolated_atoms_xtb.h5")
            print(label(list(isolated_atoms().values()), XTBLabeler(), out, progress=False,
                        description="isolated atoms for E0s, GFN2-xTB (tblite), GBE eps=4"))
        elif args.stage == "run":
            def log(message):
                print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

            run_segments(recipe, worker=args.worker, workers=args.workers, log=log,
                         time_limit_s=None if args.minutes is None else 60 * args.minutes)
        elif args.stage == "merge":
            print(f"{recipe.out}: {merge_parts(recipe, precision=args.precision)} records")
        else:
            segments = plan(recipe, Dataset(recipe.pool).infos())
            parts = sorted(Path(recipe.out).with_suffix(".parts").glob("worker-*.h5"))
            done = done_segments([recipe.out, *parts])
            print(f"{len(done)} of {len(segments)} segments done ({len(parts)} part files)")
    except MLFFError as err:
        print(f"fdh_xtb_dataset: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
