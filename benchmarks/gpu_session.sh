#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one command, within about 7 minutes:
# correctness first (the CUDA tests decide), then the benchmarks. Every step has its own
# time cap and streams into $OUT as it goes, so a cap or a crash still returns what ran.
# The device tool returns at most 8 files, so steps share logs:
#   env.txt  tests.log  bench_attention.log  attention.json (+ attention.png)
#   bench_backbone.log  backbone json (+ png)
#   device run: bash benchmarks/gpu_session.sh            (timeout_s 480 leaves a rerun)
#   quick look at the plan without a GPU: DRY_RUN=1 bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results_gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
started=$(date +%s)

# step NAME SECONDS LOG COMMAND...: run COMMAND under a time cap, appending to $OUT/LOG.
step() {
    local name=$1 seconds=$2 log=$OUT/$3
    shift 3
    echo "=== $name (cap ${seconds}s, at $(( $(date +%s) - started ))s): $*" | tee -a "$log"
    if [ -n "${DRY_RUN:-}" ]; then
        return 0
    fi
    timeout -k 10 "$seconds" "$@" 2>&1 | tee -a "$log"
    local status=${PIPESTATUS[0]}
    [ "$status" = 124 ] && echo "=== $name: TIMED OUT after ${seconds}s" | tee -a "$log"
    echo "=== $name: exit $status" | tee -a "$log"
}

step env 20 env.txt bash -c "nvidia-smi; $PYTHON -c \"import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())\""
# Real-size kernel checks (padded, masked, varlen, dropout) and the model on CUDA; the
# Triton cache they fill is reused by every later step.
step tests_gpu 180 tests.log $PYTHON -m pytest -q -p no:cacheprovider --durations=10 tests/gpu
step tests_kernels 70 tests.log $PYTHON -m pytest -q -p no:cacheprovider tests/kernels tests/model/test_attention_dispatch.py
# Useful TFLOP/s: key_lengths, the masked path (right-padded and scattered masks), varlen
# and SDPA; the targets are printed at the end.
step bench_attention 100 bench_attention.log $PYTHON benchmarks/bench_attention.py --out "$OUT" \
    --heads 12 --seqlens 512 1024 4096 --paddings 0 0.5
if $PYTHON -c "import transformers" 2>/dev/null || [ -n "${DRY_RUN:-}" ]; then
    step bench_backbone 60 bench_backbone.log $PYTHON benchmarks/bench_backbone.py --device cuda --dtypes bfloat16 \
        --shapes 8x512,64x512 --fills 1.0,0.5,0.25 --repeats 3 --out "$OUT"
fi
echo "=== done in $(( $(date +%s) - started ))s" | tee -a "$OUT/env.txt"
