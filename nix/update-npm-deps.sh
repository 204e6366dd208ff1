#!/usr/bin/env bash
# Refreshes nix/npm-deps.json after package-lock.json changed: the fixed-output hash of the npm
# tarballs that the Nix build fetches (npmDeps in nix/package.nix), and the fingerprint of the
# lock it belongs to (test/integration/nix-files.test.ts fails while the two disagree).
#
# It does here what that derivation does in the Nix sandbox: `npm pack` every package the lock
# lists for the supported platforms, check each tarball against the lock's integrity, and hash the
# directory of tarballs the way Nix hashes a recursive fixed output (sha256 of its NAR
# serialisation). The tarballs are the registry's bytes, so any npm version gives the same hash.
#
# Needs node and npm (with access to an npm registry) and nix (`nix hash path`, Nix >= 2.4).
#   bash nix/update-npm-deps.sh           # rewrite nix/npm-deps.json
#   bash nix/update-npm-deps.sh --check   # only say whether it is current (no network)
set -euo pipefail
cd "$(dirname "$0")/.."

fingerprint=$(node nix/npm-deps.mjs fingerprint package-lock.json)
recorded=$(node -e 'process.stdout.write(require("./nix/npm-deps.json").lockFingerprint)')

if [ "${1:-}" = "--check" ]; then
  if [ "$fingerprint" = "$recorded" ]; then
    echo "nix/npm-deps.json is current ($fingerprint)"
    exit 0
  fi
  echo "nix/npm-deps.json is stale: package-lock.json is $fingerprint, the hash is for $recorded" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/pack" "$work/npm-deps"
export npm_config_cache="$work/npm-cache" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

mapfile -t specs < <(node nix/npm-deps.mjs specs package-lock.json | cut -f1)
echo "fetching ${#specs[@]} npm packages ..."
npm pack --ignore-scripts --json --pack-destination "$work/pack" "${specs[@]}" > "$work/pack.json"
node nix/npm-deps.mjs collect package-lock.json "$work/pack.json" "$work/pack" "$work/npm-deps"
node nix/npm-deps.mjs verify package-lock.json "$work/npm-deps"
chmod -R a-w,a+rX "$work/npm-deps"

hash=$(nix --extra-experimental-features nix-command hash path --type sha256 --sri "$work/npm-deps")
chmod -R u+w "$work/npm-deps"

node -e '
  const fs = require("fs");
  const [hash, lockFingerprint] = process.argv.slice(1);
  fs.writeFileSync("nix/npm-deps.json", JSON.stringify({ hash, lockFingerprint }, null, 2) + "\n");
' "$hash" "$fingerprint"
echo "nix/npm-deps.json: hash $hash for $fingerprint"
