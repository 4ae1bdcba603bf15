#!/usr/bin/env bash
# GPU check for a lent device machine (PyTorch preinstalled, no internet): the test suite, the CUDA
# benchmark and a short CUDA run, each step independent, logs under $OUT.
#
# Payload to prepare here first with `bash bench/device_payload.sh` (both git-ignored, carried with the call):
#   .whl/     CPython 3.12 manylinux x86_64 wheels of what the device lacks: wandb, mlxtend, submitit and
#             flask (+ blinker, itsdangerous) and their missing dependencies (pip download --no-deps --only-binary=:all: --python-version 3.12
#             --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 ...): ~25 MB in all
#             (wandb 0.31 needs pydantic(-core), annotated-types, typing-inspection, platformdirs, xxhash,
#             cwevals, httpx, httpcore, h11, distro, sniffio, opentelemetry-*, googleapis-common-protos,
#             typing_extensions>=4.16).
#   .devdata/fashion-mnist/   the four IDX .gz files from /usr/share/datasets/fashion-mnist/ (~30 MB).
# Then: run(command="bash bench/device_check.sh", carry=[".whl", ".devdata"], timeout_s=540).
# PYTEST_ONLY=1 runs only the install and the suite; SUITE_S and PER_TEST_S set the suite's and a test's limit.
set -u
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
sep() { printf '\n==================== %s ====================\n' "$*"; }
declare -A RC

sep "install wheels (.whl -> /tmp/site)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
RC[install]=$?
echo "install rc=${RC[install]} PYTHONPATH=${PYTHONPATH:-<unset>}"
python3 -c 'import wandb, mlxtend.data, submitit; print("imports ok: wandb", wandb.__version__, "mlxtend", mlxtend.__version__, "submitit", submitit.__version__)'
RC[imports]=$?
python3 -c 'import importlib.metadata as m
for d in ("protobuf","numpy","scipy","scikit-learn","matplotlib","pandas","click","typing_extensions","anyio"):
    try: print(d, m.version(d))
    except Exception as e: print(d, "MISSING", e)' 2>&1 | tr '\n' ' '; echo

sep "Fashion-MNIST -> /usr/share/datasets/fashion-mnist"
mkdir -p /usr/share/datasets/fashion-mnist && cp .devdata/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/
RC[data]=$?
ls -l /usr/share/datasets/fashion-mnist/

sep "device"
nvidia-smi -L
python3 -c 'import torch;print(torch.__version__, torch.cuda.get_device_name())'
RC[torch]=$?

export WANDB_MODE=offline PYTHONUNBUFFERED=1

# pytest-xdist is in the device image: 12 workers (16 cores); each test owns its tmp_path. -v names
# every result as it comes (a run cut by the timeout still says which tests failed), and
# pytest-timeout (also in the image) fails a hung test by name instead of stalling the run.
XDIST=""; python3 -c 'import xdist' 2>/dev/null && XDIST="-n 12"
PER_TEST=""; python3 -c 'import pytest_timeout' 2>/dev/null && PER_TEST="--timeout ${PER_TEST_S:-100}"
SUITE_S=${SUITE_S:-300}
sep "pytest $XDIST $PER_TEST (timeout ${SUITE_S}s) -> \$OUT/pytest.log"
timeout "$SUITE_S" python3 -m pytest -v -rfE -p no:cacheprovider $XDIST $PER_TEST --durations=15 > "$OUT/pytest.log" 2>&1
RC[pytest]=$?
grep -E "FAILED|ERROR|passed|failed" "$OUT/pytest.log" | grep -vE "PASSED|SKIPPED" | tail -40
if [ "${PYTEST_ONLY:-0}" = 1 ]; then
  for k in install imports data torch pytest; do printf '%-8s rc=%s\n' "$k" "${RC[$k]}"; done | tee "$OUT/summary.txt"
  exit 0
fi

sep "bench_round cuda (timeout 150s) -> \$OUT/bench_cuda.jsonl"
timeout 150 python3 bench/bench_round.py --device cuda --rounds 10 --scaling 10000 100000 1000000 2>&1 | tee "$OUT/bench_cuda.jsonl"
RC[bench]=${PIPESTATUS[0]}

sep "main.py cuda smoke (timeout 60s) -> \$OUT/main_cuda.log"
timeout 45 python3 main.py --dataset mnist_5k --strategy bald --n_init_labeled 20 --n_query 10 --n_round 3 \
    --epochs 50 --no-wandb --device cuda --output_dir /tmp/runs 2>&1 | tail -20 | tee "$OUT/main_cuda.log"
RC[main]=${PIPESTATUS[0]}

sep "summary (exit codes; 124 = timeout)"
for k in install imports data torch pytest bench main; do printf '%-8s rc=%s\n' "$k" "${RC[$k]}"; done | tee "$OUT/summary.txt"
