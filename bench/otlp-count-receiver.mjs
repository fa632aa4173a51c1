// SPDX-License-Identifier: Apache-2.0
// Minimal OTLP/HTTP logs receiver for benchmarks, run as its own process so it does
// not share the sidecar's CPU time: counts LogRecords in protobuf (optionally gzip)
// ExportLogsServiceRequests by walking the wire format, answers 200 with an empty
// response. Prints {"port":N} when listening; on SIGTERM/stdin "count" prints
// {"records":N,"requests":N,"bytes":N}.
import http from 'node:http';
import zlib from 'node:zlib';
import readline from 'node:readline';

let records = 0, requests = 0, bytes = 0;

function varint(b, p) {
  let v = 0, s = 0, c;
  do { c = b[p.i++]; v += (c & 0x7f) * 2 ** s; s += 7; } while (c & 0x80);
  return v;
}
// count occurrences of field `want` (length-delimited) in message b[start,end); descend via path
function walk(b, start, end, path) {
  const p = { i: start };
  let n = 0;
  while (p.i < end) {
    const key = varint(b, p), field = Math.floor(key / 8), wire = key & 7;
    if (wire === 2) {
      const len = varint(b, p);
      if (field === path[0]) n += path.length === 1 ? 1 : walk(b, p.i, p.i + len, path.slice(1));
      p.i += len;
    } else if (wire === 0) varint(b, p);
    else if (wire === 1) p.i += 8;
    else if (wire === 5) p.i += 4;
    else throw new Error('bad wire type ' + wire);
  }
  return n;
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body = Buffer.concat(chunks);
    bytes += body.length;
    if (req.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
    // ExportLogsServiceRequest.resource_logs(1).scope_logs(2).log_records(2)
    records += walk(body, 0, body.length, [1, 2, 2]);
    requests++;
    res.writeHead(200, { 'content-type': 'application/x-protobuf' });
    res.end();
  });
});
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
const report = () => console.log(JSON.stringify({ records, requests, bytes }));
readline.createInterface({ input: process.stdin }).on('line', (l) => l.trim() === 'count' && report());
process.on('SIGTERM', () => { report(); process.exit(0); });
