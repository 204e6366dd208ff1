#!/usr/bin/env bash
# Offline checks of the Nix side of ncps (nothing here builds or downloads anything):
#   1. every .nix file in the repository parses (nix-instantiate --parse);
#   2. nix/npm-deps.json belongs to the current package-lock.json (else: nix/update-npm-deps.sh);
#   3. with a copy of nixpkgs' lib: nix/module.nix evaluated with stand-ins for the NixOS options it
#      sets (nix/tests/eval-module.nix) for SQLite, Redis, S3 and HA configurations and for the
#      configurations its assertions must refuse;
#   4. with the same lib: the VM tests' definitions evaluated with a stub package set
#      (nix/tests/eval-vm-tests.nix): the ncps part of every test node passes the module's
#      assertions, and every test script compiles as Python and, where mypy and pyflakes are
#      installed, type-checks and lints clean against nix/tests/driver_prelude.py (as the NixOS
#      test driver would check it before booting anything).
#
# usage: scripts/check-nix.sh [--json] [NIXPKGS_LIB]
#   NIXPKGS_LIB  a nixpkgs or nixpkgs.lib checkout, or its lib/ directory (default: $NCPS_NIXPKGS_LIB);
#                without it step 3 is skipped.
#   --json       print only the evaluation result as JSON (for test/integration/nix-files.test.ts).
set -euo pipefail
cd "$(dirname "$0")/.."

json=0
if [ "${1:-}" = "--json" ]; then
  json=1
  shift
fi
lib_arg="${1:-${NCPS_NIXPKGS_LIB:-}}"

if ! command -v nix-instantiate > /dev/null; then
  echo "check-nix: nix-instantiate not found (apt-get install nix-bin)" >&2
  exit 2
fi

say() { if [ "$json" = 0 ]; then echo "$@"; fi; }

# 1. Syntax of every Nix file (tracked or new, not ignored).
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.nix' | sort -u)
else
  mapfile -t files < <(find . -name '*.nix' -not -path './node_modules/*' -not -path './.git/*' | sort)
fi
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  if ! nix-instantiate --parse "$f" > /dev/null; then
    echo "check-nix: $f does not parse" >&2
    exit 1
  fi
done
say "nix files: ${#files[@]} parse"

# 2. The npm dependency hash matches the lock file.
if [ "$json" = 0 ]; then
  bash nix/update-npm-deps.sh --check
else
  bash nix/update-npm-deps.sh --check > /dev/null
fi

# 3. The module, evaluated against nixpkgs' lib.
if [ -z "$lib_arg" ]; then
  say "module evaluation: skipped (give a nixpkgs lib checkout as argument or in NCPS_NIXPKGS_LIB)"
  exit 0
fi
if [ -f "$lib_arg/lib/default.nix" ]; then
  lib_dir="$lib_arg/lib"
elif [ -f "$lib_arg/default.nix" ]; then
  lib_dir="$lib_arg"
else
  echo "check-nix: $lib_arg is neither nixpkgs' lib/ nor a tree containing it" >&2
  exit 2
fi
lib_dir=$(cd "$lib_dir" && pwd)

# 4 first (it prints nothing in --json mode unless something is wrong).
vm=$(nix-instantiate --eval --strict --json nix/tests/eval-vm-tests.nix --argstr libPath "$lib_dir")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node -e '
  const fs = require("fs");
  const [vmJson, dir] = process.argv.slice(1);
  const vm = JSON.parse(vmJson);
  let bad = 0;
  for (const [name, t] of Object.entries(vm)) {
    fs.writeFileSync(`${dir}/${name.replace(/-/g, "_")}.py`, t.script);
    for (const [node, c] of Object.entries(t.ncps)) {
      if (c.failedAssertions.length > 0) {
        console.error(`check-nix: ${name}, node ${node}: ${c.failedAssertions.join(" / ")}`);
        bad++;
      }
    }
  }
  process.exit(bad === 0 ? 0 : 1);
' "$vm" "$work"
tests=$(ls "$work" | wc -l)
if command -v python3 > /dev/null; then
  for script in "$work"/*.py; do
    checked="$work/checked_$(basename "$script")"
    { cat nix/tests/driver_prelude.py; echo; cat "$script"; } > "$checked"
    python3 -m py_compile "$checked"
    if command -v mypy > /dev/null; then
      mypy --no-error-summary --cache-dir "$work/.mypy" "$checked" >&2 || { echo "check-nix: mypy: $(basename "$script")" >&2; exit 1; }
    fi
    if command -v pyflakes3 > /dev/null || command -v pyflakes > /dev/null; then
      "$(command -v pyflakes3 || command -v pyflakes)" "$checked" >&2 || { echo "check-nix: pyflakes: $(basename "$script")" >&2; exit 1; }
    fi
  done
  say "VM tests: $tests defined; their nodes pass the module assertions; scripts compile$(command -v mypy > /dev/null && echo ', type-check')$( (command -v pyflakes3 || command -v pyflakes) > /dev/null && echo ' and lint clean')"
else
  say "VM tests: $tests defined; their nodes pass the module assertions (python3 missing: scripts not compiled)"
fi

result=$(nix-instantiate --eval --strict --json nix/tests/eval-module.nix --argstr libPath "$lib_dir")
if [ "$json" = 1 ]; then
  printf '%s\n' "$result"
fi
node -e '
  const r = JSON.parse(process.argv[1]);
  const quiet = process.argv[2] === "1";
  if (!quiet) {
    console.log(`module evaluation: ${r.passed} of ${r.total} checks hold`);
    for (const [name, messages] of Object.entries(r.refusals)) console.log(`  refused ${name}: ${messages.join(" / ")}`);
  }
  if (r.failed.length > 0) {
    console.error(`check-nix: module checks that do not hold: ${r.failed.join(", ")}`);
    process.exit(1);
  }
' "$result" "$json"
