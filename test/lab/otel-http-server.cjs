// SPDX-License-Identifier: Apache-2.0
// An application instrumented with OpenTelemetry, as users run one: Node's http server with
// @opentelemetry/instrumentation-http (stable HTTP semconv), spans exported over OTLP/HTTP.
// Used by test/kernel/rewrite-peer.test.ts inside the lab's RS namespace.
//   OTLP_TRACES_URL=http://127.0.0.1:4318/v1/traces node otel-http-server.cjs BIND PORT
// Prints READY when listening; on SIGTERM flushes the spans and exits 0.
'use strict';
process.env.OTEL_SEMCONV_STABILITY_OPT_IN ??= 'http';
const { trace } = require('@opentelemetry/api');
const { TracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');

const provider = new TracerProvider({
  spanProcessors: [new SimpleSpanProcessor({ exporter: new OTLPTraceExporter({ url: process.env.OTLP_TRACES_URL }) })],
});
trace.setGlobalTracerProvider(provider);
registerInstrumentations({ tracerProvider: provider, instrumentations: [new HttpInstrumentation()] });
const http = require('http'); // after registration: the instrumentation patches it on require

const [bind, port] = process.argv.slice(2);
const server = http.createServer((req, res) => {
  res.end(`hello ${req.socket.remoteAddress} ${req.socket.remotePort}\n`);
});
server.listen(Number(port), bind, () => console.log('READY'));
process.on('SIGTERM', () => {
  server.close();
  provider.forceFlush().then(() => provider.shutdown()).then(() => process.exit(0), (e) => {
    console.error(e);
    process.exit(1);
  });
});
