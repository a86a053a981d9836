#!/usr/bin/env bash
# The chat page's libraries (package.json, pinned in package-lock.json): install them with `npm ci`
# and copy their ES module builds into gateway/web/vendor/, which the gateway serves under
# /assets/. No bundler: the page is plain JavaScript modules. Run by `make web` (and so by
# `make run` and `make test`) and by the Dockerfile's web stage.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: install Node.js 20+ (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
vendor=gateway/web/vendor
rm -rf "$vendor"
mkdir -p "$vendor"
cp node_modules/marked/lib/marked.esm.js "$vendor/"
cp node_modules/dompurify/dist/purify.es.mjs "$vendor/"
# Their licenses travel with them (served beside them, listed in the README).
cp node_modules/marked/LICENSE "$vendor/marked.LICENSE.txt"
cp node_modules/dompurify/LICENSE "$vendor/dompurify.LICENSE.txt"
