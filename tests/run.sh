#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs them.
#   .venv          runtime + [export] + [test] extras (editable)
#   .venv-runtime  the runtime alone (no torch, no open_clip, no onnx), used to
#                  prove `edge-search search` works where only the runtime is
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k search -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

case "$(uname -m)" in
  x86_64) TORCH="torch==2.14.1 torchvision==0.29.1" ;;  # the CPU-sized wheels on this disk
  *)      TORCH="torch==2.9.1 torchvision==0.24.1" ;;
esac

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q $TORCH
.venv/bin/python -m pip install -q -e '.[export,test]'

[ -x .venv-runtime/bin/python ] || "$PY" -m venv .venv-runtime
.venv-runtime/bin/python -m pip install -q --upgrade pip
.venv-runtime/bin/python -m pip install -q --force-reinstall --no-deps .
.venv-runtime/bin/python -m pip install -q .

export EDGE_SEARCH_RUNTIME_PYTHON="$PWD/.venv-runtime/bin/python"
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider "$@"
