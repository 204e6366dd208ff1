// OpenTelemetry export over OTLP/gRPC, received by a stand-in collector: an HTTP/2 server that
// answers every gRPC call with an empty OK message and keeps the request bodies. Protobuf keeps
// strings as UTF-8, so span and metric names can be found in the raw bodies.

import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { request } from '../helpers/http';
import { writeSyntheticLegacyNarInfos } from '../helpers/legacy';
import { runNcps, startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';

interface Call {
  path: string;
  body: Buffer;
}

async function startCollector(): Promise<{ url: string; calls: Call[]; close(): Promise<void> }> {
  const calls: Call[] = [];
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      calls.push({ path: String(headers[':path']), body: Buffer.concat(chunks) });
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0])); // an uncompressed, empty protobuf message
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, calls, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('OpenTelemetry export', { timeout: 60_000 }, () => {
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let ncps: NcpsProcess;

  before(async () => {
    collector = await startCollector();
    ncps = await startNcps({
      upstreams: ['http://127.0.0.1:9'],
      publicKeys: ['test-1:Zz8UoMw3ADmHtIaF4dp1kXJj5xHCn2D8bnEJnqC0lKM='],
      extraArgs: ['--otel-enabled', `--otel-grpc-url=${collector.url}`],
      env: { OTEL_METRIC_EXPORT_INTERVAL: '500' },
    });
  });

  after(async () => {
    await ncps?.stop();
    await collector?.close();
    await cleanupTempDirs();
  });

  it('exports request spans and the ncps metrics', async () => {
    assert.equal((await request(ncps.url, '/nix-cache-info')).status, 200);
    assert.equal((await request(ncps.url, '/00000000000000000000000000000000.narinfo')).status, 404);
    await waitFor(
      () =>
        collector.calls.some((c) => c.path.includes('TraceService/Export')) &&
        collector.calls.some((c) => c.path.includes('MetricsService/Export') && c.body.includes('ncps_narinfo_served_total')),
      20_000,
    );
    const traces = Buffer.concat(collector.calls.filter((c) => c.path.includes('TraceService')).map((c) => c.body));
    assert.ok(traces.includes('GET /nix-cache-info'), 'a span per request, named after the route');
    assert.ok(traces.includes('upstream narinfo'), 'a span for the upstream lookup');
    const metrics = Buffer.concat(collector.calls.filter((c) => c.path.includes('MetricsService')).map((c) => c.body));
    assert.ok(metrics.includes('ncps_nar_served_total'));
    assert.ok(metrics.includes('service.name') && metrics.includes('ncps'));
  });
});

it('exports the migrate-narinfo metrics when the command ends', { timeout: 60_000 }, async () => {
  const collector = await startCollector();
  try {
    const dataDir = await makeTempDir('otel-migrate');
    await writeSyntheticLegacyNarInfos(dataDir, 3);
    const result = await runNcps([
      'migrate-narinfo',
      '--create-database',
      `--cache-storage-local=${dataDir}`,
      '--otel-enabled',
      `--otel-grpc-url=${collector.url}`,
    ]);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.match(result.stdout, /migrated 3/);
    const metrics = Buffer.concat(collector.calls.filter((c) => c.path.includes('MetricsService')).map((c) => c.body));
    assert.ok(metrics.includes('ncps_migration_objects_total'), 'the counter was exported before the command exited');
    assert.ok(metrics.includes('narinfo-to-db'), 'with the Go ncps labels');
  } finally {
    await collector.close();
  }
});
