#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one command (results under $OUT):
# the kernel and model tests on CUDA at real sizes, then both benchmarks.
#   device run: bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results_gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt"
python3 -m pytest -q -p no:cacheprovider tests/gpu tests/kernels tests/model/test_attention_dispatch.py 2>&1 | tee "$OUT/tests.log"
python3 benchmarks/bench_attention.py --out "$OUT" 2>&1 | tee "$OUT/bench_attention.log"
if python3 -c "import transformers" 2>/dev/null; then
    python3 benchmarks/bench_backbone.py --device cuda --dtypes bfloat16 --out "$OUT" 2>&1 | tee "$OUT/bench_backbone.log"
fi
