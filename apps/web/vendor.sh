#!/usr/bin/env bash
# Copy the onnxruntime-web files the page needs from node_modules into vendor/ (no CDN, no build
# step). Runs `npm ci` first when node_modules is missing (add --no-install to skip that).
#   bash apps/web/vendor.sh
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/onnxruntime-web ]; then
    if [ "${1:-}" = "--no-install" ]; then
        echo "vendor.sh: node_modules/onnxruntime-web is missing; run 'npm ci' in apps/web first" >&2
        exit 1
    fi
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi
dist=node_modules/onnxruntime-web/dist
mkdir -p vendor
# ort.wasm.min.js: the WASM-only build (global `ort`); it loads the wasm factory (.mjs) and the
# binary (.wasm) from ort.env.wasm.wasmPaths = vendor/ at run time.
for f in ort.wasm.min.js ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm; do
    cp "$dist/$f" "vendor/$f"
done
version=$(node -p "require('./node_modules/onnxruntime-web/package.json').version")
echo "$version" > vendor/VERSION
echo "vendored onnxruntime-web $version into $(pwd)/vendor:"
ls -l vendor
