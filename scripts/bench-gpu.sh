#!/usr/bin/env bash
# The GPU figures of issue 11 on a CUDA machine: builds the addon and llama-bench against the same
# ggml in one tree (build-cuda/), then times generation with the native loop against llama-bench
# (scripts/bench-loop.mjs, with backend sampling and with CPU sampling) and the throughput of a pool of 1, 4 and 8 sessions against one session
# alone (scripts/bench-sessions.mjs --parts pool), every layer offloaded.
#
#   LLAMEM_CUDA_ARCHS=90 bash scripts/bench-gpu.sh [out-dir]      (default out-dir: bench/results)
#
# LLAMEM_GPU_THREADS sets the CPU threads of both (default: llamem's defaultThreads()),
# LLAMEM_GPU_GEN, LLAMEM_GPU_REPS and LLAMEM_GPU_POOL_TOKENS the sizes, and LLAMEM_GPU_PARTS which
# benchmarks run (default "pool loop").
#
# Needs node, cmake, ninja, nvcc and a C++ compiler; `npx tsc -p tsconfig.json` must have built dist/.
# Run it with nothing else on the machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/bench/results}")
cd "$root"
export LLAMEM_GPU=cuda LLAMEM_BUILD_TOOLS=1 LLAMEM_BUILD_DIR="$root/build-cuda"
t0=$SECONDS
node scripts/build-addon.mjs
cmake --build build-cuda --target llama-bench --parallel "$(nproc)" >/dev/null
echo "bench-gpu: built in $((SECONDS - t0)) s" >&2
bench=$(find build-cuda -type f -name llama-bench -perm -u+x | head -n 1)
export LLAMEM_BINARY="$root/build-cuda/Release/llamem.node"
threads=(${LLAMEM_GPU_THREADS:+--threads "$LLAMEM_GPU_THREADS"})
parts=" ${LLAMEM_GPU_PARTS:-pool loop} "
[[ $parts != *" pool "* ]] || node scripts/bench-sessions.mjs --parts pool --gpu-layers 99 "${threads[@]}" --pool-tokens "${LLAMEM_GPU_POOL_TOKENS:-128}" --out "$out"
# complete() twice: with the default ("auto": backend sampling on the GPU) and with CPU sampling.
[[ $parts != *" loop "* ]] || node scripts/bench-loop.mjs --gpu-layers 99 "${threads[@]}" --llama-bench "$bench" --gen "${LLAMEM_GPU_GEN:-512}" --reps "${LLAMEM_GPU_REPS:-3}" --sampling auto,cpu --out "$out"
