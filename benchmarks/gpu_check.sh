#!/usr/bin/env bash
# `make gpu-check`: everything a GPU machine must show, in one bounded run.
#
#   bash benchmarks/gpu_check.sh            on a machine with a CUDA GPU
#   GPU_CHECK_REHEARSAL=1 bash benchmarks/gpu_check.sh
#                                           on a CPU machine: the same stages,
#                                           GPU stages replaced by CPU runs of
#                                           the same code at tiny sizes
#
# Each stage runs under its own timeout (one hang costs one stage), its log
# goes to $DIR/<stage>.log, and a stage whose timeout would pass the overall
# deadline (GPU_CHECK_DEADLINE seconds, default 450) is cut to what is left,
# and skipped (saying so) when under 15 s are left.
# The build is for the GPU's own architecture (sm_90 on an H200) against the
# machine's torch. Prints a table of stages last; the JSON of every
# measurement lands in $DIR, and benchmarks/gpu_report.py turns them into
# benchmarks/results/gpu.md.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${GPU_CHECK_DIR:-$ROOT/build/gpu-check}
DEADLINE=${GPU_CHECK_DEADLINE:-450}
REHEARSAL=${GPU_CHECK_REHEARSAL:-0}
PY=${GPU_PYTHON:-python3}
mkdir -p "$DIR"
: > "$DIR/stages.tsv"
START=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

stage() {  # stage NAME TIMEOUT COMMAND...
  local name=$1 limit=$2; shift 2
  local now=$(( $(date +%s) - START ))
  if (( now + limit > DEADLINE )); then limit=$(( DEADLINE - now )); fi  # cut to what is left
  if (( limit < 15 )); then
    printf '%s\tskipped\t0\t(the %ss deadline: %ss left)\n' "$name" "$DEADLINE" "$(( DEADLINE - now ))" >> "$DIR/stages.tsv"
    echo "== $name: skipped (deadline)"
    return 0
  fi
  echo "== $name (at ${now}s, limit ${limit}s)"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$DIR/$name.log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - t0 ))
  local status=ok
  if (( rc == 124 || rc == 137 )); then status=timeout; elif (( rc != 0 )); then status="failed($rc)"; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$(tail -n 1 "$DIR/$name.log" | cut -c1-150)" >> "$DIR/stages.tsv"
  tail -n 4 "$DIR/$name.log" | sed 's/^/   /'
  return 0
}

{
  echo "date: $(date -u)"; uname -a
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  command -v nvcc && nvcc --version | tail -n 2
} > "$DIR/environment.log" 2>&1
cat "$DIR/environment.log"

# Packages the GPU image lacks travel as wheels in .whl/ (captum, stop-words).
if ls .whl/*.whl >/dev/null 2>&1; then
  stage wheels 60 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
fi

if [[ $REHEARSAL == 1 ]]; then
  # The documents and model at rehearsal size; every GPU stage runs its CPU twin.
  stage prepare 300 $PY benchmarks/gpu_job.py prepare "$DIR/job" --documents 2 --tokens 300 --tiny --json "$DIR/prepare.json"
  stage build 600 $PY setup.py build_ext --inplace
  stage tests 300 $PY -m pytest tests/kernels/test_cuda.py -q -rs
  # the kernel benchmark needs CUDA events and an L2: here it is only imported, with its report
  stage kernels-import 60 $PY -c "import sys; sys.path.insert(0, 'benchmarks'); import gpu_speed, gpu_report; print('gpu_speed imports')"
  stage job-float32 300 $PY benchmarks/gpu_job.py cli "$DIR/job" --device cpu --json "$DIR/job-float32.json"
  stage job-bfloat16 300 $PY benchmarks/gpu_job.py cli "$DIR/job" --device cpu --autocast bfloat16 --json "$DIR/job-bfloat16.json"
  stage notebook 300 $PY benchmarks/gpu_job.py notebook "$DIR/job" --device cpu --documents 1 --json "$DIR/notebook.json"
  stage profile-bfloat16 300 $PY benchmarks/gpu_job.py profile "$DIR/job" --device cpu --autocast bfloat16 --json "$DIR/profile-bfloat16.json"
  stage qk 300 $PY benchmarks/gpu_qk.py --device cpu --sizes 256,512 --json "$DIR/qk.json"
else
  # The model and documents are made on the CPU while the extension builds.
  ( timeout 240 $PY benchmarks/gpu_job.py prepare "$DIR/job" --documents 16 --tokens 4096 --json "$DIR/prepare.json" > "$DIR/prepare.log" 2>&1;
    echo $? > "$DIR/prepare.rc" ) &
  PREPARE=$!
  arch=$($PY -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.major}.{p.minor}')")
  stage build 300 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=16 $PY setup.py build_ext --inplace
  stage build-check 60 $PY tests/check_cuda_build.py
  stage kernels 90 $PY benchmarks/gpu_speed.py --json "$DIR/kernels.json" --out "$DIR/kernels.md"
  stage tests 150 $PY -m pytest tests/kernels/test_cuda.py -q -rs
  wait $PREPARE; printf 'prepare\t%s\t-\t%s\n' "rc=$(cat "$DIR/prepare.rc" 2>/dev/null)" "$(tail -n 1 "$DIR/prepare.log" | cut -c1-150)" >> "$DIR/stages.tsv"
  stage job-bfloat16 120 $PY benchmarks/gpu_job.py cli "$DIR/job" --autocast bfloat16 --json "$DIR/job-bfloat16.json"
  stage job-float32 150 $PY benchmarks/gpu_job.py cli "$DIR/job" --json "$DIR/job-float32.json"
  stage notebook 120 $PY benchmarks/gpu_job.py notebook "$DIR/job" --documents 2 --json "$DIR/notebook.json"
  if [[ -f benchmarks/gpu_qk.py ]]; then
    stage qk 90 $PY benchmarks/gpu_qk.py --json "$DIR/qk.json"
  fi
  stage profile-bfloat16 60 $PY benchmarks/gpu_job.py profile "$DIR/job" --autocast bfloat16 --json "$DIR/profile-bfloat16.json"
  if command -v compute-sanitizer >/dev/null 2>&1; then
    stage memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 1 $PY tests/harness/sanitize_cuda.py
  else
    printf 'memcheck\tskipped\t0\tcompute-sanitizer not found\n' >> "$DIR/stages.tsv"
  fi
  stage profile-float32 60 $PY benchmarks/gpu_job.py profile "$DIR/job" --json "$DIR/profile-float32.json"
  stage tests-ops 60 $PY -m pytest tests/kernels/test_ops.py tests/test_errors.py -q -x -k cuda
fi

$PY benchmarks/gpu_report.py "$DIR" --out "$DIR/gpu.md" > "$DIR/report.log" 2>&1 || echo "gpu_report.py failed: $(tail -n 3 "$DIR/report.log")"
if [[ -n "${OUT:-}" ]]; then  # the device tool brings back $OUT (8 files at most)
  cp "$DIR/gpu.md" "$DIR/stages.tsv" "$OUT/" 2>/dev/null
  tar czf "$OUT/gpu-check.tgz" -C "$DIR" --exclude=job/model --exclude='job/store-*' --exclude='job/warm-*' . 2>/dev/null
fi
echo
grep -v '^```\|^date:\|^Linux\|^name, memory' "$DIR/gpu.md" 2>/dev/null | head -n 80
echo
echo "gpu-check: $(( $(date +%s) - START ))s in all; stages:"
column -t -s $'\t' "$DIR/stages.tsv" 2>/dev/null || cat "$DIR/stages.tsv"
