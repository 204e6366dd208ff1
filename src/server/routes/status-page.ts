// GET / : the JSON index for programs ({hostname, publicKey}, as always), and for browsers a status
// page: hit ratio, bytes from the cache and from upstream, storage against its limit, upstream
// health and latency, recent misses, and small plots of the last hours. One self-contained HTML
// document (inline CSS and SVG, no script, no external assets) rendered from the status board,
// whose figures are the ones /metrics exposes. The page needs the read token when one is set.

import type { FastifyInstance } from 'fastify';
import type { ReadinessReport } from '../readiness';
import type { StatusBoard, StatusSample, StatusSnapshot } from '../../telemetry/status';
import type { Access, AccessVerdict } from '../auth';

export interface StatusPageOptions {
  hostname: string;
  publicKey: string | undefined;
  version: string;
  /** The figures; without it `/` answers JSON only. */
  board?: StatusBoard;
  readiness?: { report(): Promise<ReadinessReport> };
  checkAccess: (access: Access, authorization: string | undefined) => AccessVerdict;
}

/** The plot colours (tests look for them in a screenshot). */
export const COLOURS = { cache: '#1f9e4a', upstream: '#e8710a', store: '#2864c8' } as const;

export function registerStatusPage(app: FastifyInstance, options: StatusPageOptions): void {
  app.route({
    method: ['GET', 'HEAD'],
    url: '/',
    config: { access: 'public' },
    handler: async (request, reply) => {
      const index = { hostname: options.hostname, publicKey: options.publicKey ?? '' };
      reply.header('vary', 'Accept');
      if (!options.board || !wantsHtml(request.headers.accept)) return reply.send(index);
      const verdict = options.checkAccess('read', request.headers.authorization);
      if (verdict !== 'allowed') {
        // A browser asks for the token (as the password of Basic auth) and comes back with it.
        return reply
          .code(401)
          .header('www-authenticate', 'Basic realm="ncps", charset="UTF-8"')
          .type('text/plain; charset=utf-8')
          .send(verdict === 'missing' ? 'authentication required\n' : 'invalid token\n');
      }
      const [snapshot, readiness] = await Promise.all([options.board.snapshot(), options.readiness?.report()]);
      return reply
        .header('cache-control', 'no-store')
        .type('text/html; charset=utf-8')
        .send(renderStatusPage({ hostname: options.hostname, publicKey: options.publicKey, version: options.version, snapshot, readiness }));
    },
  });
}

/**
 * Browsers ask for text/html first; curl (`*\/*`), Nix and anything asking for JSON get JSON, as
 * before. HTML only when text/html is named and preferred over application/json.
 */
export function wantsHtml(accept: string | undefined): boolean {
  if (!accept) return false;
  let html = 0;
  let json = 0;
  for (const part of accept.split(',')) {
    const [type = '', ...params] = part.trim().toLowerCase().split(';');
    const q = Number(params.find((p) => p.trim().startsWith('q='))?.trim().slice(2) ?? 1);
    if (type.trim() === 'text/html') html = Number.isFinite(q) ? q : 0;
    else if (type.trim() === 'application/json') json = Number.isFinite(q) ? q : 0;
  }
  return html > 0 && html > json;
}

interface PageData {
  hostname: string;
  publicKey: string | undefined;
  version: string;
  snapshot: StatusSnapshot;
  readiness: ReadinessReport | undefined;
}

export function renderStatusPage({ hostname, publicKey, version, snapshot: s, readiness }: PageData): string {
  const lookups = s.narInfoHits + s.narInfoMisses;
  const served = s.bytesFromCache + s.bytesFromUpstream;
  const healthy = s.upstreams.filter((u) => u.healthy).length;
  const ready = readiness
    ? `<section class="banner ${readiness.ready ? 'ok' : 'bad'}"><strong>${readiness.ready ? 'Ready' : 'Not ready'}</strong> ${Object.entries(readiness.checks)
        .map(([name, check]) => `<span class="${check.ok ? 'ok' : 'bad'}">${check.ok ? '✓' : '✗'} ${esc(name)}${check.ok ? '' : `: ${esc(String(check.error ?? 'failed'))}`}</span>`)
        .join(' ')}</section>`
    : '';
  const storage =
    s.maxSizeBytes > 0
      ? `${bytes(s.storeBytes)} <small>of ${bytes(s.maxSizeBytes)}</small>${bar(s.storeBytes / s.maxSizeBytes)}`
      : `${bytes(s.storeBytes)} <small>no size limit</small>`;
  const intervals = deltas(s.history);
  const minutes = Math.round(s.sampleIntervalMs / 60_000) || 1;
  const span = s.history.length > 1 ? duration(s.history.at(-1)!.at - s.history[0]!.at) : 'just started';

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60">
<title>ncps · ${esc(hostname)}</title>
<style>
:root { color-scheme: light; --muted: #5f6670; --line: #dde1e6; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2127; background: #f6f7f9; }
main { max-width: 960px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.4rem; margin: 0 0 4px; } h1 small { color: var(--muted); font-weight: normal; }
h2 { font-size: 1.05rem; margin: 24px 0 8px; }
.muted, small { color: var(--muted); }
code { font-size: .85em; word-break: break-all; }
.banner { padding: 8px 12px; border-radius: 8px; margin: 12px 0; }
.banner span { margin-right: 10px; white-space: nowrap; } .banner span.bad { white-space: normal; }
.banner.ok { background: #e3f5e9; } .banner.bad { background: #fde7e4; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
.card h3 { margin: 0 0 4px; font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.card .big { font-size: 1.5rem; font-weight: 600; }
.bar { height: 8px; background: #e8ebef; border-radius: 4px; overflow: hidden; margin-top: 6px; }
.bar div { height: 100%; background: ${COLOURS.store}; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 12px; }
.plot { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
.plot svg { display: block; width: 100%; height: 110px; margin-top: 4px; }
.plot small { display: block; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 8px; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); border-radius: 8px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); font-size: .9rem; vertical-align: top; }
td.path { word-break: break-all; }
.ok { color: #16713a; } .bad { color: #b3261e; }
</style>
</head>
<body>
<main>
<header>
<h1>ncps <small>${esc(hostname)}</small></h1>
<div class="muted">version ${esc(version)} · up ${duration(Date.now() - s.startedAt)}${publicKey ? ` · public key <code>${esc(publicKey)}</code>` : ''}</div>
</header>
${ready}
<section class="cards">
<div class="card"><h3>narinfo hit ratio</h3><div class="big">${lookups > 0 ? percent(s.narInfoHits / lookups) : '–'}</div><small>${count(s.narInfoHits)} hits, ${count(s.narInfoMisses)} misses since start</small></div>
<div class="card"><h3>NAR bytes served</h3><div class="big">${served > 0 ? percent(s.bytesFromCache / served) : '–'} <small>from cache</small></div><small><span style="color:${COLOURS.cache}">■</span> ${bytes(s.bytesFromCache)} from cache, <span style="color:${COLOURS.upstream}">■</span> ${bytes(s.bytesFromUpstream)} from upstream</small></div>
<div class="card"><h3>storage</h3><div class="big">${storage}</div><small>${count(s.narInfoCount)} paths, ${count(s.narFileCount)} NAR files</small></div>
<div class="card"><h3>upstreams</h3><div class="big ${healthy > 0 ? 'ok' : 'bad'}">${healthy} / ${s.upstreams.length} healthy</div><small>${bytes(s.upstreamBytesFetched)} downloaded</small></div>
</section>
<h2>Last ${esc(span)} <small>(per ${minutes} min)</small></h2>
<section class="plots">
<div class="plot"><div>narinfo lookups <span class="legend"><i style="background:${COLOURS.cache}"></i>hits<i style="background:${COLOURS.upstream}"></i>misses</span></div>
${stackedBars(intervals.map((d) => [d.narInfoHits, d.narInfoMisses]), count)}</div>
<div class="plot"><div>NAR bytes <span class="legend"><i style="background:${COLOURS.cache}"></i>from cache<i style="background:${COLOURS.upstream}"></i>from upstream</span></div>
${stackedBars(intervals.map((d) => [d.bytesFromCache, d.bytesFromUpstream]), bytes)}</div>
<div class="plot"><div>storage <span class="legend"><i style="background:${COLOURS.store}"></i>size${s.maxSizeBytes > 0 ? ` (limit ${bytes(s.maxSizeBytes)})` : ''}</span></div>
${area(s.history.map((h) => h.storeBytes), s.maxSizeBytes, bytes)}</div>
</section>
<h2>Upstreams</h2>
<table><thead><tr><th>upstream</th><th>health</th><th>last check</th></tr></thead><tbody>
${s.upstreams
  .map(
    (u) =>
      `<tr><td class="path">${esc(u.url)}</td><td class="${u.healthy ? 'ok' : 'bad'}">${u.healthy ? 'healthy' : 'unhealthy'}${u.error ? `<br><small>${esc(u.error)}</small>` : ''}</td><td>${u.latencyMs !== undefined ? `${Math.round(u.latencyMs)} ms` : 'not yet'}</td></tr>`,
  )
  .join('\n')}
</tbody></table>
<h2>Recent misses</h2>
${
  s.recentMisses.length === 0
    ? '<p class="muted">None since start.</p>'
    : `<table><thead><tr><th>when</th><th>path</th><th>answer</th><th>time</th></tr></thead><tbody>
${s.recentMisses
  .map(
    (m) =>
      `<tr><td>${esc(clock(m.at))}</td><td class="path">${esc(m.path)}</td><td>${m.status < 400 ? `from ${esc(m.upstream ?? 'upstream')}` : `<span class="bad">${m.status === 404 ? 'no upstream has it' : m.status}</span>`}</td><td>${Math.round(m.ms)} ms</td></tr>`,
  )
  .join('\n')}
</tbody></table>`
}
<p class="muted"><small>Figures since this instance started, as on <code>/metrics</code>. JSON: <code>curl ${esc('-H "Accept: application/json"')} /</code>. Reloads every minute.</small></p>
</main>
</body>
</html>
`;
}

/** What happened in each interval between two samples. */
function deltas(history: StatusSample[]): StatusSample[] {
  const out: StatusSample[] = [];
  for (let i = 1; i < history.length; i++) {
    const [a, b] = [history[i - 1]!, history[i]!];
    out.push({
      at: b.at,
      narInfoHits: b.narInfoHits - a.narInfoHits,
      narInfoMisses: b.narInfoMisses - a.narInfoMisses,
      narHits: b.narHits - a.narHits,
      narMisses: b.narMisses - a.narMisses,
      bytesFromCache: b.bytesFromCache - a.bytesFromCache,
      bytesFromUpstream: b.bytesFromUpstream - a.bytesFromUpstream,
      upstreamBytesFetched: b.upstreamBytesFetched - a.upstreamBytesFetched,
      storeBytes: b.storeBytes,
    });
  }
  return out;
}

// Drawn in a 600 × 110 box stretched to the card's width (no text inside: it would stretch too).
const W = 600;
const H = 110;

/** One bar per interval: the cache part (green) under the upstream part (orange). */
function stackedBars(values: Array<[number, number]>, format: (n: number) => string): string {
  const max = Math.max(0, ...values.map(([a, b]) => a + b));
  if (values.length === 0 || max === 0) return empty();
  const width = W / Math.max(values.length, 30);
  const rects = values
    .map(([low, high], i) => {
      const x = (i + Math.max(0, 30 - values.length)) * width;
      const lowH = (low / max) * (H - 14);
      const highH = (high / max) * (H - 14);
      return (
        `<rect x="${x.toFixed(1)}" y="${(H - lowH).toFixed(1)}" width="${Math.max(1, width - 1).toFixed(1)}" height="${lowH.toFixed(1)}" fill="${COLOURS.cache}"/>` +
        `<rect x="${x.toFixed(1)}" y="${(H - lowH - highH).toFixed(1)}" width="${Math.max(1, width - 1).toFixed(1)}" height="${highH.toFixed(1)}" fill="${COLOURS.upstream}"/>`
      );
    })
    .join('');
  return `<small>up to ${esc(format(max))} per interval</small>${svg(rects)}`;
}

/** The store size over time, against its limit when there is one. */
function area(values: number[], limit: number, format: (n: number) => string): string {
  const max = Math.max(limit, ...values);
  if (values.length === 0 || max === 0) return empty();
  const step = W / Math.max(values.length - 1, 1);
  const y = (v: number) => (H - (v / max) * (H - 14)).toFixed(1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${y(v)}`);
  if (values.length === 1) points.push(`${W},${y(values[0]!)}`);
  const limitLine = limit > 0 ? `<line x1="0" x2="${W}" y1="${y(limit)}" y2="${y(limit)}" stroke="#b3261e" stroke-dasharray="4 4"/>` : '';
  return (
    `<small>now ${esc(format(values.at(-1)!))}</small>` +
    svg(
      `<polygon points="0,${H} ${points.join(' ')} ${W},${H}" fill="${COLOURS.store}" fill-opacity="0.35"/>` +
        `<polyline points="${points.join(' ')}" fill="none" stroke="${COLOURS.store}" stroke-width="2" vector-effect="non-scaling-stroke"/>${limitLine}`,
    )
  );
}

function empty(): string {
  return `<small>nothing yet</small>${svg('')}`;
}

function svg(body: string): string {
  return `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img"><line x1="0" x2="${W}" y1="${H - 0.5}" y2="${H - 0.5}" stroke="#dde1e6"/>${body}</svg>`;
}

function bar(ratio: number): string {
  return `<div class="bar"><div style="width:${Math.min(100, Math.max(0, ratio * 100)).toFixed(1)}%"></div></div>`;
}

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function percent(ratio: number): string {
  const value = (ratio * 100).toFixed(ratio >= 0.995 || ratio < 0.1 ? 0 : 1);
  return `${value.replace(/\.0$/, '')}%`;
}

function count(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? Math.round(value) : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86_400)} days`;
}

function clock(at: number): string {
  return `${new Date(at).toISOString().slice(11, 19)} UTC`;
}
