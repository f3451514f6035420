#!/usr/bin/env bash
# Every GPU test and benchmark of mlff in one run, each step under its own time limit, for the offline GPU node.
#
#   bash benchmarks/gpu_check.sh [--cpu-smoke] [--out DIR] [--only S1,S2] [--deadline-s N] [--commit SHA]
#
# Steps, in this order (default: pytest neighbors md_cluster md_step umbrella; the last two only with --only):
#   pytest      pytest -m gpu tests (junit XML kept)
#   neighbors   benchmarks/neighbors.py: ours (CuPy cell list) vs vesin-torch vs matscipy, 3k/24k/96k atoms
#   md_cluster  benchmarks/md_cluster.py --cueq: one cluster, 512 replicas vs TorchSim, water NVE vs the model, drift
#   md_step     benchmarks/md_step.py --cueq: MACECalculator vs MLFFCalculator vs the model alone, small + medium
#   umbrella    benchmarks/umbrella.py, if that file exists (args: $UMBRELLA_ARGS, default --device cuda --cueq
#               --append-results; on the CPU --device cpu --steps 3 --warmup 1)
#   train       benchmarks/train_vs_mace.py on data/fdh-cluster/fdh_small.h5 (short)
#   largest     benchmarks/md_step.py --largest (small model): the largest water box that fits
# Output (at most 8 files come back from the node; this writes 6), updated after every step, so that a run cut
# off anywhere keeps what it did:
#   gpu_check.log   everything printed, step by step      gpu_check.json  steps, rows, targets (gpu_report.py)
#   steps.jsonl     one line per finished step             rows.jsonl      one line per measured benchmark row
#   RESULTS.md      benchmarks/RESULTS.md after the step   junit.xml       pytest's report
# On the node the core wheel set travels as parts in .gpu-core/ (see benchmarks/GPU_RUN.md): each carried part's
# install.sh is sourced here; once /tmp/site is installed, later calls carry nothing. --cpu-smoke runs the same
# steps on this CPU with the scripts' --cpu-smoke sizes and short limits (it checks the plumbing, measures nothing).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

SMOKE=0; OUTDIR=${OUT:-$ROOT/out/gpu_check}; ONLY=""; DEADLINE=""; COMMIT=""
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-smoke) SMOKE=1 ;;
    --out) OUTDIR=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --deadline-s) DEADLINE=$2; shift ;;
    --commit) COMMIT=$2; shift ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ "$SMOKE" = 1 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} CUDA_VISIBLE_DEVICES=""
  export PATH="$(dirname "$PY"):$PATH"   # mace_run_train beside the interpreter
  DEADLINE=${DEADLINE:-900}             # a busy 2-core CPU: the limits only catch a hang
else
  DEADLINE=${DEADLINE:-560}              # the whole command stays inside a 600 s device call
fi
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/gpu_check.log; ROWS=$OUTDIR/rows.jsonl; STEPS=$OUTDIR/steps.jsonl
T0=$(date +%s)
say() { echo "$*" | tee -a "$LOG"; }

report() {  # gpu_check.json from the JSON lines so far, and RESULTS.md as it now is
  "$PY" "$ROOT/benchmarks/gpu_report.py" "$OUTDIR" --mode "$([ $SMOKE = 1 ] && echo cpu-smoke || echo gpu)" \
    ${COMMIT:+--commit "$COMMIT"} >>"$LOG" 2>&1 || say "gpu_report.py failed (see above)"
  cp "$ROOT/benchmarks/RESULTS.md" "$OUTDIR/RESULTS.md" 2>/dev/null || true
}

record() {  # name status rc wall_s limit_s command
  "$PY" -c 'import json, sys; n, s, rc, w, l, c = sys.argv[1:]
print(json.dumps({"step": n, "status": s, "rc": int(rc), "wall_s": int(w), "limit_s": int(l), "command": c}))' \
    "$@" >>"$STEPS"
}

run_step() {  # name limit_s command...
  local name=$1 limit=$2; shift 2
  local left=$(( DEADLINE - ($(date +%s) - T0) - 5 ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    say "== $name: skipped, ${left}s left of the ${DEADLINE}s deadline"
    record "$name" skipped -1 0 0 "$*"; report; return
  fi
  say "== $name (limit ${limit}s, $(date -u +%H:%M:%S) UTC): $*"
  local start=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]} wall=$(( $(date +%s) - start )) status=ok
  case $rc in 0) ;; 124|137) status=timeout ;; *) status=failed ;; esac
  say "== $name: $status (rc $rc, ${wall}s)"
  record "$name" "$status" "$rc" "$wall" "$limit" "$*"; report
}

install_core() {  # source every carried part of the core set; then /tmp/site is on PYTHONPATH
  local d
  for d in "$ROOT"/.gpu-core/part_*.d; do
    [ -f "$d/install.sh" ] && source "$d/install.sh" 2>&1 | tee -a "$LOG"
  done
  export PYTHONPATH="$ROOT:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
  if [ ! -f /tmp/parts/.gpu-core/INSTALLED ]; then
    say "core wheel set not installed on this node (/tmp/parts/.gpu-core/INSTALLED missing): carry its parts first"
    return 1
  fi
}

: >"$LOG"; : >"$ROWS"; : >"$STEPS"
say "gpu_check.sh $([ $SMOKE = 1 ] && echo --cpu-smoke) started $(date -u '+%Y-%m-%d %H:%M:%S') UTC on $(hostname); out: $OUTDIR"
if [ "$SMOKE" = 0 ]; then
  istart=$(date +%s)
  install_core; irc=$?
  record install "$([ $irc = 0 ] && echo ok || echo failed)" $irc $(( $(date +%s) - istart )) 0 "source .gpu-core/part_*.d/install.sh"
  [ $irc = 0 ] || { report; exit 3; }
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 | tee -a "$LOG"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib, sys
import mlff.models._mace  # noqa: F401  (mace before e3nn)
print("python", sys.version.split()[0])
for name in ("torch", "cupy", "mace", "e3nn", "cuequivariance", "cuequivariance_torch", "vesin", "vesin.torch",
             "matscipy", "torch_sim", "ase", "mlff"):
    try:
        module = importlib.import_module(name)
        print(f"{name:22s} {getattr(module, '__version__', '?')}")
    except Exception as err:  # noqa: BLE001 - a missing peer is reported here and by its benchmark
        print(f"{name:22s} MISSING ({type(err).__name__}: {str(err)[:80]})")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

if [ "$SMOKE" = 1 ]; then
  S=--cpu-smoke; A=""
  LIM_PYTEST=150; LIM_NB=90; LIM_CLUSTER=240; LIM_STEP=180; LIM_UMB=180; LIM_TRAIN=240; LIM_LARGEST=60
  PYTEST_EXTRA=()
  CLUSTER_ARGS=(); TRAIN_ARGS=(); LARGEST_ARGS=()
else
  S=""; A=--append-results
  LIM_PYTEST=100; LIM_NB=60; LIM_CLUSTER=170; LIM_STEP=170; LIM_UMB=60; LIM_TRAIN=150; LIM_LARGEST=150
  PYTEST_EXTRA=(--timeout 90)
  CLUSTER_ARGS=(--cueq --steps 100 --warmup 10 --drift-steps 8000)
  TRAIN_ARGS=(--data data/fdh-cluster/fdh_small.h5 --epochs 60 --limit-s 60)
  LARGEST_ARGS=(--cueq --largest --models small --sizes 96k --steps 3)
fi
STEP_LIST=${ONLY:-pytest,neighbors,md_cluster,md_step,umbrella}
for step in ${STEP_LIST//,/ }; do
  case $step in
    pytest) run_step pytest $LIM_PYTEST "$PY" -m pytest -m gpu tests -q -ra -p no:cacheprovider \
              --continue-on-collection-errors --junitxml "$OUTDIR/junit.xml" "${PYTEST_EXTRA[@]}" ;;
    neighbors) run_step neighbors $LIM_NB "$PY" benchmarks/neighbors.py $S $A --json "$ROWS" ;;
    md_cluster) run_step md_cluster $LIM_CLUSTER "$PY" benchmarks/md_cluster.py $S $A "${CLUSTER_ARGS[@]}" \
              --json "$ROWS" ;;
    md_step) run_step md_step $LIM_STEP "$PY" benchmarks/md_step.py $S $A $([ $SMOKE = 0 ] && echo --cueq) \
              --json "$ROWS" ;;
    umbrella)
      if [ -f benchmarks/umbrella.py ]; then
        read -r -a UARGS <<<"${UMBRELLA_ARGS:-$([ $SMOKE = 1 ] && echo --device cpu --steps 3 --warmup 1 \
                                                  || echo --device cuda --cueq --append-results)}"
        grep -q -- '"--json"' benchmarks/umbrella.py && UARGS+=(--json "$ROWS")
        run_step umbrella $LIM_UMB "$PY" benchmarks/umbrella.py "${UARGS[@]}"
      else
        say "== umbrella: skipped, benchmarks/umbrella.py does not exist"; record umbrella skipped -1 0 0 "-"; report
      fi ;;
    train) run_step train $LIM_TRAIN "$PY" benchmarks/train_vs_mace.py $S $A "${TRAIN_ARGS[@]}" --json "$ROWS" ;;
    largest) if [ $SMOKE = 1 ]; then say "== largest: skipped on the CPU"; record largest skipped -1 0 0 "-"; report
             else run_step largest $LIM_LARGEST "$PY" benchmarks/md_step.py $A "${LARGEST_ARGS[@]}" --json "$ROWS"; fi ;;
    *) say "== $step: unknown step (expected pytest neighbors md_cluster md_step umbrella train largest)"
       record "$step" failed 2 0 0 "-" ;;
  esac
done
report
say "gpu_check.sh done in $(( $(date +%s) - T0 ))s"
"$PY" "$ROOT/benchmarks/gpu_report.py" "$OUTDIR" --summary-only
