// Reads the guest collector's file output (JSON lines of ExportLogsServiceRequest) and checks the
// records of connections to PORT: Σ(1 + suppressed_count) = N, every client is the TOA address the
// writer put on that connection (198.19.x.y), trusted, seen by fexit, with the acceptor's pid.
import { readFileSync } from 'node:fs';

const [file, portArg, nArg, pidArg, metricsFile] = process.argv.slice(2);
const port = Number(portArg);
const want = Number(nArg);
const value = (v) => v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.boolValue);
// complete lines only: the collector's file exporter may be writing the last one
const lines = (path) => {
  const text = readFileSync(path, 'utf8');
  return text.slice(0, text.lastIndexOf('\n') + 1).split('\n');
};
const records = [];
for (const line of lines(file)) {
  if (!line.trim()) continue;
  for (const rl of JSON.parse(line).resourceLogs ?? [])
    for (const sl of rl.scopeLogs ?? [])
      for (const lr of sl.logRecords ?? []) {
        const a = Object.fromEntries((lr.attributes ?? []).map((kv) => [kv.key, value(kv.value)]));
        const res = Object.fromEntries((rl.resource?.attributes ?? []).map((kv) => [kv.key, value(kv.value)]));
        if (a['network.local.port'] === port) records.push({ a, res, event: lr.eventName });
      }
}
// fexit takes the packet TOA from the sock_ops callback of the handshake ACK; on this 2-CPU guest
// accept() often returns the socket before that callback ran. Such accepts wait for it (kernel
// counter accept_early, exported as toa_otel.probe.counter{counter=accept_early}): every record
// must carry its TOA.
function counterMax(name) {
  let max = 0;
  if (!metricsFile) return 0;
  for (const line of lines(metricsFile)) {
    if (!line.trim()) continue;
    for (const rm of JSON.parse(line).resourceMetrics ?? [])
      for (const sm of rm.scopeMetrics ?? [])
        for (const m of sm.metrics ?? []) {
          if (m.name !== 'toa_otel.probe.counter') continue;
          for (const dp of m.sum?.dataPoints ?? m.gauge?.dataPoints ?? []) {
            const attrs = Object.fromEntries((dp.attributes ?? []).map((kv) => [kv.key, value(kv.value)]));
            if (attrs.counter === name) max = Math.max(max, Number(dp.asInt ?? dp.asDouble ?? 0));
          }
        }
  }
  return max;
}
const early = counterMax('accept_early');
const misses = counterMax('pending_miss');
const total = records.reduce((s, r) => s + 1 + (r.a['lvs.merge.suppressed_count'] ?? 0), 0);
const problems = [];
if (total !== want) problems.push(`connections counted ${total}, made ${want}`);
let withoutToa = 0;
for (const { a, res, event } of records) {
  if (event !== 'lvs.tcp.accept') problems.push(`event ${event}`);
  if (a['lvs.toa.source'] === undefined) {
    withoutToa += 1;
    if (a['client.address'] !== a['network.peer.address']) problems.push(`no TOA but client.address ${a['client.address']}`);
  } else {
    if (!/^198\.19\.\d+\.\d+$/.test(a['client.address'])) problems.push(`client.address ${a['client.address']} (${JSON.stringify(a)})`);
    if (a['lvs.toa.trusted'] !== true) problems.push(`untrusted TOA from ${a['network.peer.address']} (${JSON.stringify(a)})`);
  }
  if (a['lvs.probe.mode'] !== 'fexit') problems.push(`mode ${a['lvs.probe.mode']}`);
  // fexit reports the acceptor from the kernel; its name comes from /proc later (may be absent on the first records)
  if (a['process.pid'] !== Number(pidArg)) problems.push(`process.pid ${a['process.pid']}, the server was ${pidArg}`);
  if (res['service.name'] !== 'rs-guest') problems.push(`service.name ${res['service.name']}`);
}
if (withoutToa > 0) problems.push(`${withoutToa} records without TOA (pending_miss ${misses})`);
console.log(`records ${records.length}, connections ${total} of ${want}, clients ${new Set(records.map((r) => r.a['client.address'])).size}, without TOA ${withoutToa} (accept_early ${early}, pending_miss ${misses})`);
if (problems.length) {
  console.log([...new Set(problems)].slice(0, 5).join('; '));
  process.exit(1);
}
