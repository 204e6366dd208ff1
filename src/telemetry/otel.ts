// OpenTelemetry over OTLP/gRPC (--otel-enabled, --otel-grpc-url). Traces: one span per HTTP
// request and one per upstream fetch. Metrics: the same counters and gauges as /metrics, read from
// the prom-client registry at each export, so both views always agree.

import { metrics as otelMetrics, trace, type Attributes } from '@opentelemetry/api';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-grpc';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { Registry } from 'prom-client';
import type { Logger } from './logger';
import { markTracingEnabled } from './tracing';

export interface OpenTelemetryOptions {
  url: string;
  registry: Registry;
  logger: Logger;
  serviceVersion: string;
  /** How often metrics are pushed. */
  exportIntervalMs?: number;
  /** Tells the workers of one instance apart (service.instance.id), so their series stay separate. */
  instanceId?: string;
}

export interface OpenTelemetryHandle {
  shutdown(): Promise<void>;
}

export async function startOpenTelemetry(options: OpenTelemetryOptions): Promise<OpenTelemetryHandle> {
  const { url, registry, logger } = options;
  const resource = resourceFromAttributes({
    'service.name': 'ncps',
    'service.version': options.serviceVersion,
    ...(options.instanceId ? { 'service.instance.id': options.instanceId } : {}),
  });
  const exporterOptions = url ? { url } : {};

  const tracerProvider = new BasicTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter(exporterOptions), { scheduledDelayMillis: 1000 })],
  });
  trace.setGlobalTracerProvider(tracerProvider);
  markTracingEnabled();

  const meterProvider = new MeterProvider({
    resource,
    readers: [
      new PeriodicExportingMetricReader({
        exporter: new OTLPMetricExporter(exporterOptions),
        exportIntervalMillis: options.exportIntervalMs ?? 15_000,
      }),
    ],
  });
  otelMetrics.setGlobalMeterProvider(meterProvider);
  await bridgePrometheusRegistry(meterProvider, registry);
  logger.info({ url: url || '(OTLP default)' }, 'OpenTelemetry export enabled');

  return {
    async shutdown() {
      await Promise.allSettled([tracerProvider.shutdown(), meterProvider.shutdown()]);
    },
  };
}

/** Exposes every prom-client counter and gauge as an observable OTLP instrument of the same name. */
async function bridgePrometheusRegistry(provider: MeterProvider, registry: Registry): Promise<void> {
  const meter = provider.getMeter('ncps');
  const instruments = new Map<string, ReturnType<typeof meter.createObservableCounter>>();
  for (const { name, help, type } of await registry.getMetricsAsJSON()) {
    if (String(type) === 'counter') instruments.set(name, meter.createObservableCounter(name, { description: help }));
    else if (String(type) === 'gauge') instruments.set(name, meter.createObservableGauge(name, { description: help }));
  }
  meter.addBatchObservableCallback(async (result) => {
    for (const metric of await registry.getMetricsAsJSON()) {
      const instrument = instruments.get(metric.name);
      if (!instrument) continue;
      for (const value of metric.values) {
        result.observe(instrument, value.value, value.labels as Attributes);
      }
    }
  }, [...instruments.values()]);
}

