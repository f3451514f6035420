"""The DFT label queue for a GPU run: the held-out scan first, then the stratified pool queue, minus what is labelled.

    python workflows/dft_queue.py            # writes data/fdh-cluster/dft_queue_gpu_small.h5 (defaults below)

The queue holds pool records from pool_small.h5 (exact geometries), not the extxyz entries: the extxyz file
rounds positions to 8 decimals, which changes the geometry hash, so labels of the extxyz geometries would
never match their pool records by hash. The extxyz entries only give the order (matched back to the pool by
position); an entry counts as labelled when either its pool record's hash or its own hash is in the dataset
(the seed labels in fdh_small.h5 were computed on the extxyz geometries).

The held-out scan stays first although fdh_holdout_small.h5 holds its CPU labels: a GPU run's labels of it are
the free GPU-against-CPU check of workflows/gpu_label_check.py (~75 s of GPU time), which never imports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlff.data import Dataset, read_structures
from mlff.data.queue import build_label_queue

DATA = Path(__file__).resolve().parents[1] / "data" / "fdh-cluster"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=Path, default=DATA / "pool_small.h5")
    p.add_argument("--order", type=Path, default=DATA / "dft_queue_small.extxyz",
                   help="structures giving the queue order (matched to the pool by position)")
    p.add_argument("--labelled", type=Path, default=DATA / "fdh_small.h5", help="dataset whose geometries are done")
    p.add_argument("--first-tag", action="append", default=None, help="pool tags queued first (default holdout-scan)")
    p.add_argument("--out", type=Path, default=DATA / "dft_queue_gpu_small.h5")
    args = p.parse_args(argv)
    first_tags = args.first_tag or ["holdout-scan"]
    pool = Dataset(args.pool).read()
    order = read_structures(args.order, require=())
    labelled = Dataset(args.labelled).column("geometry_hash") if args.labelled.exists() else []
    queue, report = build_label_queue(pool, order=order, labelled=labelled, first_tags=first_tags)
    description = (f"DFT label queue: {report.first} pool records tagged {', '.join(first_tags)}, then "
                   f"{report.ordered} in the order of {args.order.name}; from {args.pool.name}, without the "
                   f"geometries in {args.labelled.name} (workflows/dft_queue.py)")
    out = Dataset.create(args.out, description=description, overwrite=True)
    out.append(queue, require=())
    print(f"{args.out}: {report}")


if __name__ == "__main__":
    main()
