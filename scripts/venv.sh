# Sourced by scripts/demo and scripts/test: makes .venv with tailship installed (idempotent).
# Usage: . scripts/venv.sh [EXTRAS]   (EXTRAS: pip extras to install, comma-separated, e.g. "test,dev")
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
VPY="$ROOT/.venv/bin/python"
stamp="$ROOT/.venv/.tailship-installed-${1:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  "$VPY" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VPY" -m pip install -q --disable-pip-version-check -e "$ROOT${1:+[$1]}"
  touch "$stamp"
fi
