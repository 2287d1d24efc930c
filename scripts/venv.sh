# Sourced by scripts/demo and scripts/test: makes .venv with tailship installed (idempotent).
# Usage: . scripts/venv.sh [EXTRAS]   (EXTRAS: pip extras to install, comma-separated, e.g. "test,dev")
# PYTHON picks the interpreter that makes the venv (default python3) and TAILSHIP_VENV its directory
# (default .venv), e.g. another interpreter for `python -m bench --python`:
#   PYTHON=python3.13 TAILSHIP_VENV=.venv-3.13 . scripts/venv.sh bench
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
VENV=${TAILSHIP_VENV:-$ROOT/.venv}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
stamp="$VENV/.tailship-installed-${1:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  "$VPY" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VPY" -m pip install -q --disable-pip-version-check -e "$ROOT${1:+[$1]}"
  touch "$stamp"
fi
