// An application server instrumented the standard way (@opentelemetry/instrumentation-http,
// stable HTTP semconv), exporting traces (protobuf), logs (JSON) and metrics (protobuf) to
// OTEL_EXPORTER_OTLP_ENDPOINT, which the trace-enrichment lab test points at the sidecar.
// With OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc the traces go through the OTLP/gRPC exporter instead
// (to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); TRACED_APP_NAME sets service.name (default traced-app).
// CommonJS so the instrumentation can hook require('http'). Usage: node traced-app.cjs HOST PORT
// Prints READY when listening; on SIGTERM flushes every provider, prints its counts, exits 0.
'use strict';
const api = require('@opentelemetry/api');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { TracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { OTLPTraceExporter } = process.env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL === 'grpc'
  ? require('@opentelemetry/exporter-trace-otlp-grpc')
  : require('@opentelemetry/exporter-trace-otlp-proto');
const { LoggerProvider, BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { OTLPLogExporter } = require('@opentelemetry/exporter-logs-otlp-http');
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { OTLPMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-proto');
const { resourceFromAttributes } = require('@opentelemetry/resources');

const [host, portText] = process.argv.slice(2);
const resource = resourceFromAttributes({ 'service.name': process.env.TRACED_APP_NAME || 'traced-app', 'process.pid': process.pid });
api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
const tracerProvider = new TracerProvider({
  resource,
  spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter(), scheduledDelayMillis: 300, exportTimeoutMillis: 60000 })],
});
api.trace.setGlobalTracerProvider(tracerProvider);
const loggerProvider = new LoggerProvider({ resource, processors: [new BatchLogRecordProcessor({ exporter: new OTLPLogExporter(), scheduledDelayMillis: 300, exportTimeoutMillis: 60000 })] });
const meterProvider = new MeterProvider({
  resource,
  readers: [new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter(), exportIntervalMillis: 1000, exportTimeoutMillis: 900 })],
});
registerInstrumentations({
  tracerProvider,
  instrumentations: [
    new HttpInstrumentation({
      headersToSpanAttributes: { server: { requestHeaders: ['x-test-client', 'x-test-seq'] } },
      ignoreOutgoingRequestHook: () => true, // the exporters' own requests
    }),
  ],
});

const http = require('node:http');
const logger = loggerProvider.getLogger('traced-app');
const requests = meterProvider.getMeter('traced-app').createCounter('traced_app.requests');
let served = 0;
const server = http.createServer((req, res) => {
  const seq = String(req.headers['x-test-seq'] ?? '');
  served++;
  requests.add(1);
  logger.emit({ severityNumber: 9, body: `served ${seq}`, attributes: { 'test.seq': seq } });
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ seq, peer: req.socket.remoteAddress, peerPort: req.socket.remotePort }));
});
server.keepAliveTimeout = 10000;
server.listen(Number(portText), host, () => process.stdout.write('READY\n'));
process.once('SIGTERM', async () => {
  server.close();
  server.closeAllConnections();
  await tracerProvider.shutdown();
  await loggerProvider.shutdown();
  await meterProvider.shutdown();
  process.stdout.write(JSON.stringify({ served }) + '\n');
  process.exit(0);
});
