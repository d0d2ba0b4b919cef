#!/bin/sh
# Install Debian's Chromium for the Playwright browser tests (tests/test_app_browser.py).
# Never `playwright install`: the tests drive /usr/bin/chromium, so nothing is downloaded at test time.
# Idempotent; needs root (CI containers run as root). Run it (do not source it): `sh .ci/install_browser.sh`.
set -eu
if [ -x /usr/bin/chromium ]; then
    echo "install_browser: /usr/bin/chromium already installed"
elif [ "$(id -u)" != 0 ]; then
    echo "install_browser: not root, cannot apt-get install chromium; the browser tests will be skipped" >&2
else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q chromium
    echo "install_browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
fi
