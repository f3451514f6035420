#!/usr/bin/env bash
# DFT labels of a queue for a fixed wall time on the GPU node, the dataset written into the output folder as it goes.
#
#   bash workflows/gpu_label.sh [--out DIR] [--minutes N] [--queue FILE] [--name OUT.h5] [-- MORE LABEL ARGS]
#   bash workflows/gpu_label.sh --cpu-smoke      # the same plumbing on this CPU: PySCF, one water molecule
#
# GPU: sources every carried part of the DFT wheel set (.gpu-dft/part_*.d/install.sh; see benchmarks/GPU_RUN.md),
# then `mlff data label QUEUE OUT/NAME --backend gpu4pyscf --minutes N` (B3LYP-D3(BJ)/def2-SVP + C-PCM eps 4 by
# default). label() appends every finished label to OUT/NAME at once (atomic rename), and it stops before a label
# that would end past N minutes; a hard `timeout` (N + 1.5 min) backs that up, so a cut-off run keeps every
# finished label. Files written (3 of the 8 that come back): NAME, gpu_label.log, gpu_label.json (the rate).
# A second call on the same warm node resumes: NAME is kept in /tmp/gpu_label_keep and copied back into $OUT.
# Defaults: queue data/fdh-cluster/dft_queue_gpu_small.h5 (workflows/dft_queue.py), N = 7.5, NAME fdh_small_gpu.h5.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
SMOKE=0; OUTDIR=${OUT:-$ROOT/out/gpu_label}; MINUTES=7.5; QUEUE=data/fdh-cluster/dft_queue_gpu_small.h5
NAME=fdh_small_gpu.h5; EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-smoke) SMOKE=1 ;;
    --out) OUTDIR=$2; shift ;;
    --minutes) MINUTES=$2; shift ;;
    --queue) QUEUE=$2; shift ;;
    --name) NAME=$2; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_label.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/gpu_label.log
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }
say "gpu_label.sh $([ $SMOKE = 1 ] && echo --cpu-smoke) started $(date -u '+%Y-%m-%d %H:%M:%S') UTC on $(hostname)"

if [ "$SMOKE" = 1 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} CUDA_VISIBLE_DEVICES=""
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  BACKEND=pyscf; MINUTES=2; QUEUE=$OUTDIR/smoke_queue.extxyz
  "$PY" - "$QUEUE" <<'EOF'
import sys
from ase.build import molecule
from ase.io import write
waters = [molecule("H2O"), molecule("H2O")]
waters[1].rattle(0.02, seed=1)
for k, atoms in enumerate(waters):
    atoms.info.update(charge=0, multiplicity=1, source=f"gpu_label.sh smoke water {k}", tags=["smoke"])
write(sys.argv[1], waters, format="extxyz")
EOF
  [ ${#EXTRA[@]} -eq 0 ] && EXTRA=(--limit 1)
else
  BACKEND=gpu4pyscf
  istart=$(date +%s)
  for d in "$ROOT"/.gpu-dft/part_*.d; do
    [ -f "$d/install.sh" ] && source "$d/install.sh" 2>&1 | tee -a "$LOG"
  done
  export PYTHONPATH="$ROOT:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
  say "install step: $(( $(date +%s) - istart ))s"
  if [ ! -f /tmp/parts/.gpu-dft/INSTALLED ]; then
    say "DFT wheel set not installed on this node (/tmp/parts/.gpu-dft/INSTALLED missing): carry its parts first"
    exit 3
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
  "$PY" -c 'import pyscf, gpu4pyscf, cupy; print("pyscf", pyscf.__version__, "gpu4pyscf", gpu4pyscf.__version__,
"cupy", cupy.__version__)' 2>&1 | tee -a "$LOG"
fi

KEEP=/tmp/gpu_label_keep           # survives between calls while the node stays warm ($OUT is emptied)
if [ "$SMOKE" = 0 ] && [ -f "$KEEP/$NAME" ] && [ ! -f "$OUTDIR/$NAME" ]; then
  cp "$KEEP/$NAME" "$OUTDIR/$NAME" && say "resuming from the $(basename "$NAME") of the previous call on this node"
fi
LIMIT=$("$PY" -c 'import sys; print(int(float(sys.argv[1]) * 60 + 90))' "$MINUTES" 2>/dev/null) \
  || { say "gpu_label.sh: --minutes $MINUTES is not a number"; exit 2; }   # an argument, never Python text
say "== label $QUEUE -> $OUTDIR/$NAME, backend $BACKEND, --minutes $MINUTES (hard limit ${LIMIT}s) ${EXTRA[*]}"
start=$(date +%s)
timeout --signal=TERM --kill-after=10 "$LIMIT" "$PY" -m mlff.cli data label "$QUEUE" "$OUTDIR/$NAME" \
  --backend "$BACKEND" --minutes "$MINUTES" "${EXTRA[@]}" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}; wall=$(( $(date +%s) - start ))
rm -f "$OUTDIR"/."$NAME".tmp-*        # a copy left by an append that a hard kill interrupted
[ "$SMOKE" = 0 ] && [ -f "$OUTDIR/$NAME" ] && mkdir -p "$KEEP" && cp "$OUTDIR/$NAME" "$KEEP/$NAME"
say "== label: rc $rc, ${wall}s"
if [ -f "$OUTDIR/$NAME" ]; then
  "$PY" workflows/gpu_label_check.py summary "$OUTDIR/$NAME" --wall-s "$wall" --json "$OUTDIR/gpu_label.json" \
    2>&1 | tee -a "$LOG"
fi
if [ "$SMOKE" = 1 ] && [ -f "$OUTDIR/$NAME" ]; then   # the CPU-side check, on the smoke label itself
  rm -f "$OUTDIR/check.h5"
  "$PY" workflows/gpu_label_check.py check "$OUTDIR/$NAME" --n 1 --work "$OUTDIR/check.h5" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
fi
exit "$rc"
