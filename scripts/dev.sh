#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv, installs instseg with its dev extras
# (torch comes from pip; nothing is downloaded at run time), then runs a job:
#   bash scripts/dev.sh demo   -> the demo on an embedded sample
#   bash scripts/dev.sh test   -> ruff, mypy, import-linter and the whole pytest suite (what CI runs);
#                                 also installs Chromium (apt-get) for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.instseg-installed

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "[setup] installing instseg and its dependencies (first time: a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  "$VENV/bin/python" -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  "$VENV/bin/python" -c "import instseg, torch, torchvision, pycocotools" \
    || { echo "[setup] install failed" >&2; exit 1; }
  echo "$want" > "$STAMP"
fi
# torchvision's ImageNet MobileNetV2 weights into its cache, checked by sha256 (no-op when there)
"$VENV/bin/python" scripts/fetch_weights.py \
  || { echo "[setup] could not place the ImageNet weights (see above)" >&2; exit 1; }

job=${1:-demo}
shift || true
case "$job" in
  demo)
    exec "$VENV/bin/instseg" demo "$@"
    ;;
  test)
    # the browser test drives the system's Chromium (Debian package; never `playwright install`)
    if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
      echo "[setup] installing Chromium (apt-get) for the browser test" >&2
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
      { $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium >/dev/null 2>&1; }; } \
        || echo "[setup] could not install chromium with apt-get: the browser test will fail" >&2
    fi
    echo "== ruff" && "$VENV/bin/ruff" check instseg tests bench
    echo "== mypy" && "$VENV/bin/mypy"
    echo "== import layers" && "$VENV/bin/lint-imports"
    echo "== pytest" && exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  *)
    echo "usage: bash scripts/dev.sh [demo|test] [args...]" >&2
    exit 2
    ;;
esac
