import assert from 'node:assert/strict';
import { it } from 'node:test';
import { AggregatorRegistry, Counter, Histogram, Registry } from 'prom-client';
import { FastCounter, FastHistogram } from '../../src/telemetry/fast-metrics';

const buckets = [0.001, 0.01, 0.1, 1];
const observations: Array<[string, string, number]> = [
  ['GET', '200', 0.0005],
  ['GET', '200', 0.001],
  ['GET', '200', 0.05],
  ['HEAD', '404', 3],
  ['GET', '200', 0.2],
];

interface Countable {
  labels(...v: string[]): { inc(n?: number): void };
  labels(v: Record<string, string>): { inc(n?: number): void };
}

function fill(counter: Countable, histogram: { labels(...v: string[]): { observe(v: number): void } }) {
  for (const [method, status, seconds] of observations) {
    histogram.labels(method, status).observe(seconds);
    counter.labels(method, status).inc();
    counter.labels({ status, method }).inc(2);
  }
  // Some labels left out: absent from the series, as prom-client does it.
  counter.labels({ method: 'PUT' }).inc();
}

it('fast counters and histograms expose exactly what prom-client would', async () => {
  const ours = new Registry();
  const theirs = new Registry();
  fill(
    new FastCounter({ name: 'c_total', help: 'c', labelNames: ['method', 'status'], registers: [ours] }),
    new FastHistogram({ name: 'h_seconds', help: 'h', labelNames: ['method', 'status'], buckets, registers: [ours] }),
  );
  fill(
    new Counter({ name: 'c_total', help: 'c', labelNames: ['method', 'status'], registers: [theirs] }),
    new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['method', 'status'], buckets, registers: [theirs] }),
  );
  assert.equal(await ours.metrics(), await theirs.metrics());
  // The JSON (what the cluster aggregation reads) differs only in prom-client's empty exemplars.
  const withoutExemplars = (json: unknown) => JSON.parse(JSON.stringify(json, (key, value) => (key === 'exemplar' ? undefined : value)));
  assert.deepEqual(withoutExemplars(await ours.getMetricsAsJSON()), withoutExemplars(await theirs.getMetricsAsJSON()));
});

it('fast metrics aggregate across workers like prom-client metrics (summed)', async () => {
  const workers = [new Registry(), new Registry()];
  for (const registry of workers) {
    const c = new FastCounter({ name: 'c_total', help: 'c', labelNames: ['kind'], registers: [registry] });
    c.labels('a').inc(3);
    new FastHistogram({ name: 'h_seconds', help: 'h', buckets, registers: [registry] }).labels().observe(0.05);
  }
  const merged = AggregatorRegistry.aggregate(await Promise.all(workers.map((r) => r.getMetricsAsJSON())));
  const text = await merged.metrics();
  assert.match(text, /^c_total\{kind="a"\} 6$/m);
  assert.match(text, /^h_seconds_bucket\{le="0.1"\} 2$/m);
  assert.match(text, /^h_seconds_count 2$/m);
});

it('a label set is resolved once and its slot reused', () => {
  const c = new FastCounter({ name: 'x_total', help: 'x', labelNames: ['a', 'b'] });
  assert.equal(c.labels('1', '2'), c.labels('1', '2'));
  assert.notEqual(c.labels('1', '2'), c.labels('12', ''));
  assert.equal(c.labels({ b: '2', a: '1' }), c.labels({ a: '1', b: '2' }), 'named in any order');
  assert.notEqual(c.labels({ a: '1' }), c.labels({ a: '1', b: '' }), 'absent is not empty');
  assert.throws(() => c.labels('only-one'), /expected 2 label values/);
  assert.throws(() => c.labels({ z: '1' } as never), /unknown label z/);
});
