// The tracer the rest of ncps uses. Only the OpenTelemetry API is loaded here: it is a no-op until
// --otel-enabled registers the SDK (src/telemetry/otel.ts, loaded on demand).

import { trace } from '@opentelemetry/api';

export const tracer = () => trace.getTracer('ncps');
