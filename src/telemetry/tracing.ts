// The tracer the rest of ncps uses. Only the OpenTelemetry API is loaded here: it is a no-op until
// --otel-enabled registers the SDK (src/telemetry/otel.ts, loaded on demand).

import { trace } from '@opentelemetry/api';

export const tracer = () => trace.getTracer('ncps');

let tracing = false;

/** Whether spans are recorded; paths that skip span creation (server/hot-path.ts) check this. */
export const tracingEnabled = (): boolean => tracing;

/** Called by otel.ts once it has registered a tracer provider. */
export function markTracingEnabled(): void {
  tracing = true;
}
