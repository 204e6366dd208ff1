// Which upstream narinfos are trusted, and the start-up warnings that say when that will bite.
//
// This ncps serves an upstream narinfo only when a configured public key signed it (Nix's own
// rule). The Go ncps instead ties keys to upstreams by name — a key belongs to an upstream when
// it is called `<upstream host>-<n>` — and passes the narinfos of an upstream without such a key
// through unverified. A Go deployment with a private upstream that does not sign therefore loses
// every path on switching, unless told at start. Two things follow:
//
// - a start-up warning for every upstream no configured key is named after (by the Go rule). It
//   names the upstream; it cannot be sure (key names are free: a key `mycache-1` may well sign
//   for `http://10.0.0.5:5000`), so it says "unless"; the evidence comes with the first narinfo,
//   and the cache core warns then, once per upstream, when it sees none a configured key signed;
// - an explicit, per-upstream opt-in, `?allow-unsigned=true` in that upstream's URL, to accept
//   its narinfos when no configured key signed them. A signature under the name of a configured
//   key that does not verify is refused even then: that narinfo was changed after signing.

import type { PublicKey } from '../nix';
import { ALLOW_UNSIGNED_PARAM, type Upstream } from './pool';

/** Go's rule: the key names that belong to `upstream` are `<host>-<n>` (host with its port, as in the URL). */
export function keyNamedFor(upstream: Upstream, key: PublicKey): boolean {
  const match = /^(.+)-\d+$/.exec(key.name);
  if (!match) return false;
  return match[1] === upstream.baseUrl.host || match[1] === upstream.baseUrl.hostname;
}

/** The warnings to log at start about upstreams and their keys (empty when all is well). */
export function upstreamTrustWarnings(upstreams: readonly Upstream[], keys: readonly PublicKey[]): Array<{ upstream: string; message: string }> {
  const warnings: Array<{ upstream: string; message: string }> = [];
  for (const upstream of upstreams) {
    const url = upstream.baseUrl.href;
    if (upstream.allowUnsigned) {
      warnings.push({
        upstream: url,
        message: `upstream ${url}: ${ALLOW_UNSIGNED_PARAM} is set, so its narinfos are served even when no configured public key signed them (only its address vouches for them)`,
      });
      continue;
    }
    if (keys.some((key) => keyNamedFor(upstream, key))) continue;
    const host = upstream.baseUrl.host;
    warnings.push({
      upstream: url,
      message:
        `upstream ${url}: no configured --cache-upstream-public-key is named ${host}-<n>. ` +
        `Unless one of the configured keys (${keys.map((k) => k.name).join(', ')}) signs its narinfos, no path can be verified and every one from it is a 404 ` +
        `(the Go ncps passed such an upstream's narinfos through unverified). Add its public key, or append ?${ALLOW_UNSIGNED_PARAM}=true to its URL to accept its unsigned narinfos.`,
    });
  }
  return warnings;
}
