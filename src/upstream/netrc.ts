// Reads netrc files (the format curl and Nix use) for upstream credentials. Only `machine`,
// `default`, `login` and `password` matter here; `account` and `macdef` are skipped.

export interface NetrcEntry {
  login: string;
  password: string;
}

export interface Netrc {
  machines: Map<string, NetrcEntry>;
  fallback?: NetrcEntry;
}

export function parseNetrc(text: string): Netrc {
  const tokens = text
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join('\n')
    .split(/\s+/)
    .filter((t) => t !== '');
  const netrc: Netrc = { machines: new Map() };
  let current: Partial<NetrcEntry> | undefined;
  let host: string | undefined;
  const flush = () => {
    if (current?.login !== undefined || current?.password !== undefined) {
      const entry = { login: current.login ?? '', password: current.password ?? '' };
      if (host === undefined) netrc.fallback ??= entry;
      else if (!netrc.machines.has(host)) netrc.machines.set(host, entry);
    }
  };
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    switch (token) {
      case 'machine':
        flush();
        host = tokens[++i];
        current = {};
        break;
      case 'default':
        flush();
        host = undefined;
        current = {};
        break;
      case 'login':
        if (current) current.login = tokens[++i] ?? '';
        break;
      case 'password':
        if (current) current.password = tokens[++i] ?? '';
        break;
      case 'account':
        i++;
        break;
      case 'macdef':
        // A macro runs to the next blank line, which this token stream has lost; stop here.
        flush();
        return netrc;
    }
  }
  flush();
  return netrc;
}

/** The Authorization header for a host, if the netrc has credentials for it. */
export function basicAuthFor(netrc: Netrc | undefined, host: string): string | undefined {
  const entry = netrc?.machines.get(host) ?? netrc?.fallback;
  if (!entry) return undefined;
  return `Basic ${Buffer.from(`${entry.login}:${entry.password}`).toString('base64')}`;
}
