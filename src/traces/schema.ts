// OTLP messages, decoded and encoded by protobufjs (reflection) from the official .proto files
// of opentelemetry-proto (src/traces/proto, version in proto/VERSION). Why protobufjs: it is the
// protobuf runtime the OpenTelemetry JS project itself used for OTLP (before hand-writing its
// encoders), maintained, pure JS, and it reads the official schema as is, so nothing here
// restates the wire format. @opentelemetry/otlp-transformer 0.301 has serializers for requests
// but decodes responses only.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { packageRoot } from '../package.js';

export type Signal = 'traces' | 'logs' | 'metrics';

export interface OtlpSchema {
  /** ExportTraceServiceRequest / ExportLogsServiceRequest / ExportMetricsServiceRequest */
  request: Record<Signal, protobuf.Type>;
  /** google.rpc.Status, the body of OTLP/HTTP error answers */
  status: protobuf.Type;
}

const FILES: Record<Signal, string> = {
  traces: 'opentelemetry/proto/collector/trace/v1/trace_service.proto',
  logs: 'opentelemetry/proto/collector/logs/v1/logs_service.proto',
  metrics: 'opentelemetry/proto/collector/metrics/v1/metrics_service.proto',
};

/** The proto directory beside this module (src/ under tsx), else in the package's src/. */
function protoDir(): string {
  const here = join(dirname(fileURLToPath(import.meta.url)), 'proto');
  return existsSync(here) ? here : join(packageRoot(), 'src', 'traces', 'proto');
}

let cached: OtlpSchema | undefined;

export function otlpSchema(): OtlpSchema {
  if (cached) return cached;
  const dir = protoDir();
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => join(dir, target);
  root.loadSync(Object.values(FILES), { keepCase: false });
  // google/rpc/status.proto (not part of opentelemetry-proto): the OTLP spec names this message
  // as the error body; `details` (repeated google.protobuf.Any) is never sent by us.
  const rpc = protobuf.Root.fromJSON({
    nested: {
      google: {
        nested: {
          rpc: {
            nested: {
              Status: { fields: { code: { type: 'int32', id: 1 }, message: { type: 'string', id: 2 } } },
            },
          },
        },
      },
    },
  });
  cached = {
    request: {
      traces: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
      logs: root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest'),
      metrics: root.lookupType('opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest'),
    },
    status: rpc.lookupType('google.rpc.Status'),
  };
  return cached;
}
