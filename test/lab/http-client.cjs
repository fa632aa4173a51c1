// HTTP client for the trace-enrichment lab test: per source address, `keepalive` requests over one
// kept-alive connection, then `fresh` requests on new connections. Prints one JSON line per request
// {seq, client, localPort, status}. Usage:
//   node http-client.cjs URL SEQ_BASE KEEPALIVE FRESH ADDR[,ADDR...] [XFF_ADDR_INDEX XFF_VALUE]
'use strict';
const http = require('node:http');
const [url, seqBase, keepalive, fresh, addrs, xffIndex, xffValue] = process.argv.slice(2);

function get(agent, localAddress, seq, extra) {
  return new Promise((resolve) => {
    const opts = { agent, headers: { 'x-test-client': localAddress, 'x-test-seq': String(seq), ...extra }, timeout: 5000 };
    if (!agent) opts.localAddress = localAddress;
    const req = http.get(url, opts, (res) => {
      const localPort = res.socket.localPort;
      res.resume();
      res.on('end', () => resolve({ seq, client: localAddress, localPort, status: res.statusCode }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ seq, client: localAddress, error: e.message }));
  });
}

(async () => {
  let seq = Number(seqBase);
  const list = addrs.split(',');
  for (let i = 0; i < list.length; i++) {
    const a = list[i];
    const extra = xffIndex !== undefined && Number(xffIndex) === i ? { 'x-forwarded-for': xffValue } : {};
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: a });
    for (let k = 0; k < Number(keepalive); k++) process.stdout.write(JSON.stringify(await get(agent, a, seq++, extra)) + '\n');
    agent.destroy();
    for (let k = 0; k < Number(fresh); k++) process.stdout.write(JSON.stringify(await get(undefined, a, seq++, extra)) + '\n');
  }
})();
