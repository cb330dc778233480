#!/usr/bin/env bash
# The suite (and the remat table) on a GPU, when one is present; the device's name goes into
# every measurement.
#
#     bash benchmarks/gpu.sh [OUT_DIR] [STEPS] [WORKLOADS]
#
# Needs a Python with JAX (CUDA build), flax, optax, chex and PyTorch (CUDA build): by
# default `python3`, or $PYTHON. TorchOpt is measured where it imports. Writes
# OUT_DIR/suite.txt (the table), OUT_DIR/suite.jsonl (one line per measurement),
# OUT_DIR/remat.txt and OUT_DIR/device.txt. Does nothing, and says so, without a GPU.
# WORKLOADS (default a,b,c,d,e) and REMAT=0 (skip the remat table) split a run into parts
# when a machine is lent for a limited time.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-bench}
steps=${2:-20}
workloads=${3:-a,b,c,d,e}
py=${PYTHON:-python3}
mkdir -p "$out"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU here (nvidia-smi finds none): nothing to measure" >&2
  exit 1
fi
# Each measured process allocates what it needs, so that the device peak is its own and a
# process that has not yet released its memory cannot starve the next.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$py" -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.get_device_name())"
  nproc
} | tee "$out/device.txt"
impls=metajax,jax,torch,torchfunc
"$py" -c "import torchopt" 2>/dev/null && impls="$impls,torchopt"
rm -f "$out/suite.jsonl"
"$py" -m benchmarks.suite --workloads "$workloads" --impls "$impls" --steps "$steps" --peer-python "$(command -v "$py")" \
  --record "$out/suite.jsonl" | tee "$out/suite.txt"
if [ "${REMAT:-1}" != 0 ]; then
  "$py" -m benchmarks.remat --meta-batch 32 | tee "$out/remat.txt"
fi
