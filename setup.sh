#!/usr/bin/env bash
# Set up everything a run or the tests need, idempotently: a Python virtual environment in .venv with
# requirements.txt, and (as root, where apt is available) Debian's Fashion-MNIST for offline use.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt

# Optional offline data: the full Fashion-MNIST as a Debian package. Never fatal.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
    || echo "setup: could not install dataset-fashion-mnist (optional; mnist_5k still works offline)" >&2
fi
echo "setup: ready (.venv)" >&2
