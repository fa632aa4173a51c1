// Reads the guest collector's file output (JSON lines of ExportLogsServiceRequest) and checks the
// records of connections to PORT: Σ(1 + suppressed_count) = N, every client is the TOA address the
// writer put on that connection (198.19.x.y), trusted, seen by fexit, with the acceptor's pid.
import { readFileSync } from 'node:fs';

const [file, portArg, nArg, pidArg] = process.argv.slice(2);
const port = Number(portArg);
const want = Number(nArg);
const value = (v) => v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.boolValue);
const records = [];
for (const line of readFileSync(file, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  for (const rl of JSON.parse(line).resourceLogs ?? [])
    for (const sl of rl.scopeLogs ?? [])
      for (const lr of sl.logRecords ?? []) {
        const a = Object.fromEntries((lr.attributes ?? []).map((kv) => [kv.key, value(kv.value)]));
        const res = Object.fromEntries((rl.resource?.attributes ?? []).map((kv) => [kv.key, value(kv.value)]));
        if (a['network.local.port'] === port) records.push({ a, res, event: lr.eventName });
      }
}
const total = records.reduce((s, r) => s + 1 + (r.a['lvs.merge.suppressed_count'] ?? 0), 0);
const problems = [];
if (total !== want) problems.push(`connections counted ${total}, made ${want}`);
for (const { a, res, event } of records) {
  if (event !== 'lvs.tcp.accept') problems.push(`event ${event}`);
  if (!/^198\.19\.\d+\.\d+$/.test(a['client.address'])) problems.push(`client.address ${a['client.address']}`);
  if (a['lvs.toa.trusted'] !== true) problems.push(`untrusted TOA from ${a['network.peer.address']}`);
  if (a['lvs.probe.mode'] !== 'fexit') problems.push(`mode ${a['lvs.probe.mode']}`);
  // fexit reports the acceptor from the kernel; its name comes from /proc later (may be absent on the first records)
  if (a['process.pid'] !== Number(pidArg)) problems.push(`process.pid ${a['process.pid']}, the server was ${pidArg}`);
  if (res['service.name'] !== 'rs-guest') problems.push(`service.name ${res['service.name']}`);
}
console.log(`records ${records.length}, connections ${total} of ${want}, clients ${new Set(records.map((r) => r.a['client.address'])).size}`);
if (problems.length) {
  console.log([...new Set(problems)].slice(0, 5).join('; '));
  process.exit(1);
}
