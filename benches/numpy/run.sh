#!/usr/bin/env bash
# The fsr benchmark against NumPy: runs `cargo bench --bench fsr` (skip with
# SKIP_RUST=1 to reuse target/fsr-bench/), then the NumPy reference in a
# throwaway virtual environment under target/, with OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE unset for that command alone (they slow a current
# OpenBLAS down on this machine; see the README's Performance section).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/numpy-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet numpy threadpoolctl
fi
if [ "${SKIP_RUST:-0}" != 1 ]; then
    (cd "$root" && cargo bench --bench fsr)
fi
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$venv/bin/python" "$here/fsr.py"
