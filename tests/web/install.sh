#!/usr/bin/env bash
# Installs the pinned puppeteer-core into tests/web/node_modules when missing
# (it drives Debian's chromium, which make deps installs; no browser download).
set -euo pipefail
cd "$(dirname "$0")"
[ -f node_modules/puppeteer-core/package.json ] || npm install --no-audit --no-fund --silent >/dev/null
