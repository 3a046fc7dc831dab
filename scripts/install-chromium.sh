#!/usr/bin/env bash
# Install Debian's headless-capable chromium for the report's browser test (tests/e2e/test_report_browser.py).
# Idempotent: does nothing when a chromium is already on PATH, or when this is not a root shell on a
# Debian-like system with apt-get (the browser test then skips and says why). Never fails the caller.
set -u
for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no chromium, and not root with apt-get: the browser test will be skipped" >&2
  exit 0
fi
echo "install-chromium: apt-get install chromium (for the report's browser test)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }; then
  echo "install-chromium: apt-get could not install chromium: the browser test will be skipped" >&2
fi
exit 0
