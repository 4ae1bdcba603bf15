#!/usr/bin/env bash
# Debian's Chromium for the labelling page's browser test (tests/test_labelling_browser.py), which the
# Python package playwright drives through executable_path=/usr/bin/chromium (playwright's own browser
# download needs the internet). Idempotent and never fatal: without root or apt it says why and exits
# 0, and the browser test then skips with its reason.
set -uo pipefail
say() { echo "install_chromium: $*" >&2; }
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
[ "$(id -u)" = 0 ] || { say "not root: cannot install chromium (run: sudo apt-get install chromium)"; exit 0; }
command -v apt-get >/dev/null || { say "no apt-get: install chromium by hand"; exit 0; }
export DEBIAN_FRONTEND=noninteractive
say "installing chromium (apt-get)"
(apt-get install -y -q chromium >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
  || say "apt-get install chromium failed; the browser test will skip"
[ -x /usr/bin/chromium ] && say "ready: $(/usr/bin/chromium --version 2>/dev/null)"
exit 0
