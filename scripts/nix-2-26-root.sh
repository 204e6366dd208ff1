# Sourced by .ci/run: a Debian 13 (trixie) root with Nix 2.26, so that the substitution, upload and
# listing tests also run with a recent Nix client (through `chroot`; the host's Debian 12 has Nix 2.8).
# Made once with debootstrap into a cache outside the repository, from the Debian mirror this
# machine's apt sources name (no mirror is written here); nix-bin is installed in a second step
# (debootstrap's --include cannot resolve its perl dependency). Exports NCPS_NIX_ROOT_2_26.
# Already set (a machine with a ready root): used as it is.

nix_root_cache="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/ncps-ci"

# The first archive URI of this machine's own release in its apt sources (deb822 or one-line form).
nix_root_mirror() {
  local codename uris f
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  uris="$({
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      awk -v c="$codename" '
        function flush() { if (ok && uri != "") print uri; uri = ""; ok = 0 }
        /^[[:space:]]*$/ { flush(); next }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) ok = 1 }
        END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      sed -E 's/\[[^]]*\]//' "$f" | awk -v c="$codename" '$1 == "deb" && $3 == c { print $2 }'
    done
  } 2>/dev/null || true)"
  printf '%s\n' "${uris%%$'\n'*}"
}

nix_root_prepare() {
  local root="$nix_root_cache/trixie" mirror
  if [ ! -x "$root/usr/bin/nix-store" ]; then
    mirror="$(nix_root_mirror)"
    if [ -z "$mirror" ]; then
      echo "nix 2.26 root: no Debian mirror found in /etc/apt/sources*; tests with Nix 2.26 are skipped" >&2
      return 0
    fi
    command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap
    rm -rf "$root.partial" && mkdir -p "$nix_root_cache"
    debootstrap --variant=minbase trixie "$root.partial" "$mirror" >/dev/null
    cp /etc/resolv.conf "$root.partial/etc/resolv.conf"
    mount -t proc proc "$root.partial/proc"
    chroot "$root.partial" apt-get update -qq
    chroot "$root.partial" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nix-bin xz-utils zstd >/dev/null
    chroot "$root.partial" apt-get clean
    umount "$root.partial/proc"
    mv "$root.partial" "$root"
  fi
  # What the tests need of the root each time: proc, and the host's name resolution.
  mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  export NCPS_NIX_ROOT_2_26="$root"
  chroot "$root" nix-store --version
}

if [ -z "${NCPS_NIX_ROOT_2_26:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    nix_root_prepare
  else
    echo "nix 2.26 root: debootstrap and chroot need root; tests with Nix 2.26 are skipped" >&2
  fi
fi
