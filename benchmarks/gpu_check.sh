#!/usr/bin/env bash
# The one-command GPU check (issue 14): ≤ 8 minutes on one H100/H200. Installs the pinned torch when the
# virtual environment is missing, then runs benchmarks/gpu_check.py, which writes one results JSON
# (benchmarks/gpu_check_<date>.json) and the 2-minute run's samples beside it. Extra arguments go to it
# (e.g. --skip multi_gpu). Record the figures in benchmarks/RESULTS.md with the card's name.
set -euo pipefail
cd "$(dirname "$0")/.."
make install >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec .venv/bin/python benchmarks/gpu_check.py "$@"
