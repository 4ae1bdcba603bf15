#!/usr/bin/env bash
# Build the payload that bench/device_check.sh installs on a lent GPU machine (no internet there; PyTorch,
# numpy, scipy, scikit-learn, pandas, matplotlib and pytest are in its image):
#   .whl/                      CPython 3.12 manylinux x86_64 wheels, without their dependencies, of what the
#                              image lacks (the versions this checkout's .venv has, where it has them)
#   .devdata/fashion-mnist/    Debian's Fashion-MNIST IDX files
# Both are git-ignored. Then: run(command="bash bench/device_check.sh", carry=[".whl", ".devdata"], ...).
# Needs PyPI (pip download); about 25 MB of wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(wandb mlxtend submitit flask blinker itsdangerous werkzeug pydantic pydantic-core annotated-types
      typing-inspection platformdirs xxhash cwevals httpx httpcore h11 distro sniffio anyio
      opentelemetry-api opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
      opentelemetry-exporter-otlp-proto-common opentelemetry-proto opentelemetry-semantic-conventions
      googleapis-common-protos protobuf importlib-metadata zipp typing-extensions cloudpickle)
pinned=()
for pkg in "${PKGS[@]}"; do
  version=$(.venv/bin/python -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except Exception: pass" "$pkg" 2>/dev/null || true)
  pinned+=("${pkg}${version:+==$version}")
done
rm -rf .whl && mkdir -p .whl
.venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform any -d .whl "${pinned[@]}"
mkdir -p .devdata/fashion-mnist
if ls /usr/share/datasets/fashion-mnist/*.gz >/dev/null 2>&1; then
  cp /usr/share/datasets/fashion-mnist/*.gz .devdata/fashion-mnist/
else
  echo "device_payload: no /usr/share/datasets/fashion-mnist (run setup.sh as root first); .devdata is empty" >&2
fi
du -sh .whl .devdata
