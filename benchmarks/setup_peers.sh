#!/usr/bin/env bash
# Creates .venv-bench: the PyTorch peers of the benchmark suite, kept out of metajax's own
# dependencies. torch 2.13.0's CPU build is the version this machine has on disk; learn2learn
# and torchopt are installed where they install.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m venv .venv-bench
.venv-bench/bin/pip install -q --upgrade pip
.venv-bench/bin/pip install -q "torch==2.13.0" numpy
for peer in learn2learn torchopt; do
  .venv-bench/bin/pip install -q "$peer" || echo "setup_peers: $peer did not install; the suite skips it"
done
.venv-bench/bin/python -c "import torch; print('torch', torch.__version__)"
