#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs them twice.
#   .venv-runtime  the runtime alone (no torch, no open_clip, no onnx) + pytest, hypothesis
#                  and pillow (a test reference only): every test but the export ones, against
#                  the committed tests/data/tiny-bundle, proving the device needs nothing more
#   .venv          runtime + [export] + [test] + [scale] extras (editable): the `export`-marked tests
#                  (all of tests/export, and the few elsewhere that export a bundle; Ray's among them)
# Extra arguments go to both pytest runs, e.g. `bash tests/run.sh -k search -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

case "$(uname -m)" in
  x86_64) TORCH="torch==2.14.1 torchvision==0.29.1" ;;  # the CPU-sized wheels on this disk
  *)      TORCH="torch==2.9.1 torchvision==0.24.1" ;;
esac

PIN="-c tests/constraints.txt"  # the versions the tests were written against (see that file)

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q $TORCH
.venv/bin/python -m pip install -q $PIN -e '.[export,test,scale]'

[ -x .venv-runtime/bin/python ] || "$PY" -m venv .venv-runtime
.venv-runtime/bin/python -m pip install -q --upgrade pip
.venv-runtime/bin/python -m pip install -q --force-reinstall --no-deps .
.venv-runtime/bin/python -m pip install -q $PIN . pytest hypothesis pillow

export EDGE_SEARCH_RUNTIME_PYTHON="$PWD/.venv-runtime/bin/python"
# Both halves run; exit 5 ("no test selected", e.g. -k naming tests of one half) is fine while the other ran some.
runtime_rc=0 export_rc=0
.venv-runtime/bin/python -m pytest -q -rs -p no:cacheprovider "$@" || runtime_rc=$?
.venv/bin/python -m pytest -q -rs -p no:cacheprovider -m export "$@" || export_rc=$?
for rc in "$runtime_rc" "$export_rc"; do
  case "$rc" in 0|5) ;; *) exit "$rc" ;; esac
done
[ "$runtime_rc" -eq 0 ] || [ "$export_rc" -eq 0 ] || exit 5
