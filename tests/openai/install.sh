#!/usr/bin/env bash
# Installs the pinned official OpenAI Node SDK into tests/openai/node_modules when missing.
set -euo pipefail
cd "$(dirname "$0")"
[ -f node_modules/openai/package.json ] || npm install --no-audit --no-fund --silent >/dev/null
