#!/usr/bin/env bash
# Build the browser call page (web/) into web/dist/ with esbuild, from the npm packages pinned
# in web/package-lock.json. Reruns only what changed:
#   - npm ci when node_modules is missing or was installed from another package-lock.json;
#   - node build.mjs when the lock file, web/package.json, web/build.mjs or anything under
#     web/src/ changed since the last build (the sha256 of all of them is kept in dist/.stamp).
#   usage: bash testbed/build/web.sh
set -Eeuo pipefail
trap 'printf "ERROR: web.sh: command failed (exit %s): %s\n" "$?" "$BASH_COMMAND" >&2' ERR

here=$(cd "$(dirname "$0")" && pwd)
web=$(cd "$here/../../web" && pwd)

for tool in node npm; do
  command -v "$tool" >/dev/null || {
    echo "ERROR: $tool not found; the call page needs Node.js 18+ and npm (Debian: apt-get install nodejs npm)" >&2
    exit 1
  }
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 18)); then
  echo "ERROR: Node.js $(node --version) is too old; esbuild needs 18+ (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi

cd "$web"
sha() { sha256sum | cut -d' ' -f1; }

# npm ci wipes node_modules, so the stamp written after it always belongs to that install.
lock_sum=$(sha <package-lock.json)
deps_stamp=node_modules/.voicefleet-lock.sha256
if [[ ! -f node_modules/.package-lock.json || "$(cat "$deps_stamp" 2>/dev/null)" != "$lock_sum" ]]; then
  echo "==> npm ci (web/)"
  npm ci --no-audit --no-fund --prefer-offline
  echo "$lock_sum" >"$deps_stamp"
fi

# One hash over the names and contents of every build input.
inputs_sum=$(
  {
    printf '%s\0' package-lock.json package.json build.mjs
    find src -type f -print0 | LC_ALL=C sort -z
  } | xargs -0 sha256sum | sha
)
if [[ -f dist/index.html && -f dist/app.js && -f dist/app.css &&
  "$(cat dist/.stamp 2>/dev/null)" == "$inputs_sum" ]]; then
  echo "web page: up to date in web/dist"
  exit 0
fi

start=$(date +%s%N)
node build.mjs
echo "$inputs_sum" >dist/.stamp
printf 'web page: built into web/dist (%s s)\n' "$(awk -v ns=$(($(date +%s%N) - start)) 'BEGIN { printf "%.1f", ns / 1e9 }')"
