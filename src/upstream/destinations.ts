// Where ncps may fetch from. An upstream decides the URL of every NAR (the narinfo's `URL:` is not
// covered by its signature) and may redirect anywhere, so without a rule it could make ncps fetch
// internal services (a metadata endpoint, an admin port, ncps itself) and hand their answers to
// clients. The rule:
//
// - the configured upstreams themselves are always allowed, wherever they live;
// - any other host is allowed when the address it resolves to is public (so a 307 to object
//   storage or a CDN keeps working);
// - loopback, link-local, private, shared, multicast and reserved addresses, and ncps's own
//   listening port on this machine, are refused, unless --cache-upstream-allowed-host lists them.
//
// The check is made on the address actually connected to, after DNS resolution (a public-looking
// name can point anywhere), for every connection, redirects included.

import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import os from 'node:os';
import type { buildConnector } from 'undici';

/** Ranges that are not reachable public internet: refused unless allowed explicitly. */
const NON_PUBLIC: Array<[string, number, 'ipv4' | 'ipv6', string]> = [
  ['0.0.0.0', 8, 'ipv4', 'a "this network" address'],
  ['10.0.0.0', 8, 'ipv4', 'a private address'],
  ['100.64.0.0', 10, 'ipv4', 'a shared (carrier-grade NAT) address'],
  ['127.0.0.0', 8, 'ipv4', 'a loopback address'],
  ['169.254.0.0', 16, 'ipv4', 'a link-local address'],
  ['172.16.0.0', 12, 'ipv4', 'a private address'],
  ['192.0.0.0', 24, 'ipv4', 'a reserved address'],
  ['192.168.0.0', 16, 'ipv4', 'a private address'],
  ['198.18.0.0', 15, 'ipv4', 'a benchmarking address'],
  ['224.0.0.0', 4, 'ipv4', 'a multicast address'],
  ['240.0.0.0', 4, 'ipv4', 'a reserved address'],
  ['::', 128, 'ipv6', 'the unspecified address'],
  ['::1', 128, 'ipv6', 'a loopback address'],
  ['64:ff9b:1::', 48, 'ipv6', 'a local translation address'],
  ['fc00::', 7, 'ipv6', 'a private (unique local) address'],
  ['fe80::', 10, 'ipv6', 'a link-local address'],
  ['fec0::', 10, 'ipv6', 'a site-local address'],
  ['ff00::', 8, 'ipv6', 'a multicast address'],
];

const nonPublic = NON_PUBLIC.map(([network, prefix, family, what]) => {
  const list = new BlockList();
  list.addSubnet(network, prefix, family);
  return { list, what };
});

function familyOf(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 6 ? 'ipv6' : 'ipv4';
}

/** Why an address is not public (e.g. "a loopback address"), or undefined when it is. */
export function nonPublicReason(address: string): string | undefined {
  const family = familyOf(address);
  // IPv4-mapped IPv6 (::ffff:127.0.0.1) is checked as the IPv4 address it carries.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  for (const { list, what } of nonPublic) {
    if (mapped ? list.check(mapped, 'ipv4') : list.check(address, family)) return what;
  }
  return undefined;
}

/** `[::1]` → `::1`; names lower-cased. */
function bareHost(host: string): string {
  return host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
}

function defaultPort(protocol: string): number {
  return protocol === 'https:' ? 443 : 80;
}

interface AllowedHost {
  host?: string;
  subnet?: BlockList;
  port?: number;
}

/** Parses one --cache-upstream-allowed-host entry: `host`, `host:port`, `[v6]:port` or a CIDR range. */
export function parseAllowedHost(text: string): AllowedHost {
  const entry = text.trim();
  const cidr = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(entry);
  if (cidr) {
    const family = familyOf(cidr[1]!);
    const prefix = Number(cidr[2]);
    if (isIP(cidr[1]!) === 0 || prefix > (family === 'ipv4' ? 32 : 128)) throw new Error(`invalid address range "${text}"`);
    const subnet = new BlockList();
    subnet.addSubnet(cidr[1]!, prefix, family);
    return { subnet };
  }
  const withPort = /^(\[[^\]]+\]|[^:\s/]+):(\d{1,5})$/.exec(entry);
  const host = bareHost(withPort ? withPort[1]! : entry);
  if (host === '' || /[\s/]/.test(host) || (host.includes(':') && isIP(host) !== 6)) {
    throw new Error(`invalid host "${text}": expected host, host:port or a CIDR range such as 10.0.0.0/8`);
  }
  return { host, ...(withPort ? { port: Number(withPort[2]) } : {}) };
}

export class DestinationRefused extends Error {
  readonly code = 'NCPS_DESTINATION_REFUSED';
}

export interface DestinationPolicyOptions {
  /** The configured upstream URLs: their host and port are always allowed. */
  upstreams: readonly URL[];
  /** --cache-upstream-allowed-host entries. */
  allowedHosts?: readonly string[];
  /** Ports ncps itself listens on: refused on this machine's addresses. */
  ownPorts?: readonly number[];
}

type Resolve = (host: string) => Promise<string[]>;

const resolveAll: Resolve = async (host) => (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

export class DestinationPolicy {
  private readonly upstreams: Array<{ host: string; port: number }>;
  private readonly allowed: AllowedHost[];
  private readonly ownPorts: Set<number>;
  private readonly ownAddresses: Set<string>;

  constructor(
    options: DestinationPolicyOptions,
    private readonly resolve: Resolve = resolveAll,
  ) {
    this.upstreams = options.upstreams.map((u) => ({ host: bareHost(u.hostname), port: Number(u.port) || defaultPort(u.protocol) }));
    this.allowed = (options.allowedHosts ?? []).map(parseAllowedHost);
    this.ownPorts = new Set(options.ownPorts ?? []);
    this.ownAddresses = new Set(
      Object.values(os.networkInterfaces())
        .flat()
        .map((i) => i?.address)
        .filter((a): a is string => Boolean(a)),
    );
  }

  private isUpstream(host: string, port: number): boolean {
    return this.upstreams.some((u) => u.host === host && u.port === port);
  }

  private isListed(host: string, address: string, port: number): boolean {
    return this.allowed.some((a) => {
      if (a.port !== undefined && a.port !== port) return false;
      if (a.subnet) return a.subnet.check(address, familyOf(address));
      return a.host === host || a.host === address;
    });
  }

  /** Why connecting to `address` (which `host` resolved to) on `port` is refused, or undefined. */
  refusal(host: string, address: string, port: number): string | undefined {
    if (this.isUpstream(host, port) || this.isUpstream(address, port)) return undefined;
    if (this.isListed(host, address, port)) return undefined;
    if (this.ownPorts.has(port) && (this.ownAddresses.has(address) || nonPublicReason(address) !== undefined)) {
      return `${address}:${port} is ncps's own port`;
    }
    const why = nonPublicReason(address);
    return why ? `${address} is ${why}` : undefined;
  }

  /**
   * The address to connect to for `host:port`: the first one it resolves to that may be reached.
   * Rejects with DestinationRefused (saying why and how to allow it) when none may.
   */
  async addressFor(hostname: string, port: number): Promise<string> {
    const host = bareHost(hostname);
    const addresses = isIP(host) ? [host] : await this.resolve(host);
    let reason = `${host} resolves to no address`;
    for (const address of addresses) {
      const refused = this.refusal(host, address, port);
      if (!refused) return address;
      reason = refused;
    }
    throw new DestinationRefused(
      `refused to fetch from ${host}:${port}: ${reason}; only the configured upstreams and public hosts may be fetched from (allow it with --cache-upstream-allowed-host)`,
    );
  }

  /** Checks a URL before it is fetched: scheme, then the address its host resolves to. */
  async check(url: URL): Promise<void> {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new DestinationRefused(`refused to fetch ${url.protocol} URL: only http and https`);
    }
    await this.addressFor(url.hostname, Number(url.port) || defaultPort(url.protocol));
  }

  /** An undici `connect` wrapper: resolves, checks, then connects to the checked address. */
  connector(connect: buildConnector.connector): buildConnector.connector {
    return (options, callback) => {
      const port = Number(options.port) || defaultPort(options.protocol);
      this.addressFor(options.hostname, port).then(
        (address) => {
          const name = bareHost(options.hostname);
          // TLS still checks the certificate against the name, not the address.
          const servername = options.servername ?? (isIP(name) ? undefined : name);
          connect({ ...options, hostname: address, ...(servername ? { servername } : {}) }, callback);
        },
        (error: Error) => callback(error, null),
      );
    };
  }
}
