#!/usr/bin/env bash
# Install what the headless-browser test (tests/test_web_browser.py) needs: Debian's Chromium (apt)
# and Playwright for Python (pip, into the venv). Idempotent; never fails the caller: without a
# browser the test skips itself with the reason. Playwright's own browser download is NOT used.
#   bash scripts/install_browser.sh [VENV]        (default VENV: .venv)
set -u
VENV=${1:-${VENV:-.venv}}
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
  fi
  if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 \
      && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
      || echo "install_browser.sh: could not install chromium with apt-get; the browser test will be skipped" >&2
  else
    echo "install_browser.sh: no root/apt-get; install chromium yourself or the browser test will be skipped" >&2
  fi
fi
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c "import playwright" 2>/dev/null; then
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install "playwright>=1.40" \
    || echo "install_browser.sh: could not install playwright; the browser test will be skipped" >&2
fi
exit 0
