#!/usr/bin/env bash
# Sets Lifeboat up on Debian 12 from nothing: system packages, the pinned pnpm, dependencies, build.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests and the agents' sources need from Debian (node-gyp's toolchain builds better-sqlite3).
packages=(g++ make python3 tar sqlite3 postgresql-15 postgresql-client-15 mariadb-server mariadb-client openssl procps util-linux)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "setup: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2; exit 1; fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then echo "setup: Lifeboat needs Node 20 or newer, found $(node --version)" >&2; exit 1; fi

# The pnpm that package.json pins, from the npm registry.
pnpm_version=$(node -p 'require("./package.json").packageManager.split("@")[1]')
if [ "$(pnpm --version 2>/dev/null || true)" != "$pnpm_version" ]; then
  echo "setup: installing pnpm $pnpm_version"
  npm install -g --silent "pnpm@$pnpm_version"
fi

# pnpm's node-gyp ignores npm's nodedir setting and would download Node's headers; Debian ships them.
if [ -d /usr/include/node ]; then export npm_config_nodedir=/usr; fi
pnpm install --frozen-lockfile --reporter=append-only
pnpm run build
echo "setup: done"
