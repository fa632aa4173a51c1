// SPDX-License-Identifier: Apache-2.0
// toa.rewritePeer in the real kernel with real TOA packets through the FullNAT lab:
// applications in the RS namespace (lab-server in C: accept4() and getpeername();
// a Python socket.accept()) see the trusted TOA client with the mode on, and the
// balancer with the mode off, for an untrusted peer, a malformed option, a port
// out of scope or an IPv6 TOA on an AF_INET socket. The echo byte coming back to
// the client shows that replies still go through the balancer. The last test kills
// the real sidecar with SIGKILL and checks that the rewrite is gone at once.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { cgroup2Mount, createLab, type Lab } from '../lab/lab.js';
import { collectorGate, gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { startProbe, type RunningProbe } from '../helpers/probe.js';
import type { NativeStats } from '../../src/native-types.js';
import { COLLECTOR_BIN } from '../helpers/collector.js';

const APP = fileURLToPath(new URL('../lab/otel-http-server.cjs', import.meta.url));

const test = gatedTest(privilegedGate(['bpftool', 'python3']), nativeGate());
/** nginx from Debian (nginx-light) and curl as its client */
const nginxTest = gatedTest(privilegedGate(['bpftool', 'nginx', 'curl']), nativeGate());
const collectorTest = gatedTest(privilegedGate(['bpftool', 'curl']), nativeGate(), collectorGate());

let lab: Lab | undefined;
let nextPort = 18700;
const port = () => nextPort++;

/** The balancers of the lab (its SNAT addresses), trusted for the rewrite. */
const TRUSTED = ['198.18.2.0/24', '2001:2:0:2::/64'];

/** The scope of every test here: servers start in this cgroup and the probe attaches to it,
 * so applications of other tests running on the host are never rewritten. */
let CG = '';

test.before(async () => {
  lab = await createLab();
  CG = `${cgroup2Mount()}/toa-rewrite-test-${process.pid}`;
  mkdirSync(CG);
});

test.after.always(async () => {
  await lab?.teardown();
  if (CG) rmdirSync(CG);
});

const hostOf = (ipPort: string) => ipPort.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');

interface Seen {
  /** accept4() address, getpeername() address, as lab-server printed them */
  accepts: { peer: string; getpeername: string; local: string }[];
  /** the client's own address:port of each connection */
  clients: string[];
  ok: number;
  stats: NativeStats;
  rewrittenFlags: boolean[];
}

/** Probe (rewritePeer on unless overridden) + lab-server on a fresh port + `count` connections. */
async function run(
  opts: Parameters<typeof startProbe>[0],
  conn: Omit<Parameters<Lab['connect']>[0], 'vipPort'>,
  server: { bind?: string; v6only?: boolean; cgroup?: string } = {},
): Promise<Seen> {
  const p = port();
  const probe: RunningProbe = startProbe({ mergeWindowSec: 0, trustedPeers: TRUSTED, rewritePeer: true, cgroupPath: CG, ...opts });
  try {
    const srv = await lab!.startServer({ port: p, cgroup: CG, ...server });
    let r: Awaited<ReturnType<Lab['connect']>>;
    try {
      r = await lab!.connect({ vipPort: p, ...conn });
      await new Promise((res) => setTimeout(res, 150)); // records leave on the reader's poll timer
    } finally {
      await srv.stop();
    }
    const stats = await probe.stop();
    const clients = r.conns.map((c) => c.local);
    return { accepts: srv.accepts, clients, ok: r.client.ok, stats, rewrittenFlags: probe.eventsFor(p).map((e) => e.rewritten) };
  } finally {
    await probe.stop();
  }
}

test.serial('IPv4: accept4() and getpeername() return the TOA client; the echo reply reaches the client', async (t) => {
  const s = await run({}, { count: 3, toa: { mode: 'real', place: 'ack' } });
  t.is(s.ok, 3, 'every echo came back: replies still go through the balancer');
  t.is(s.accepts.length, 3);
  t.deepEqual(s.accepts.map((a) => a.peer).sort(), [...s.clients].sort(), 'accept4() address = the client (address and port)');
  t.deepEqual(s.accepts.map((a) => a.getpeername).sort(), [...s.clients].sort(), 'getpeername() = the client');
  t.is(s.stats.counters['rewritten'], 3);
  t.deepEqual(s.rewrittenFlags, [true, true, true], 'records carry the rewritten flag');
});

test.serial('mode off: the application sees the balancer', async (t) => {
  const s = await run({ rewritePeer: false }, { toa: { mode: 'real' } });
  t.is(s.ok, 1);
  t.is(hostOf(s.accepts[0]!.peer), lab!.lvsLocal4);
  t.is(hostOf(s.accepts[0]!.getpeername), lab!.lvsLocal4);
  t.is(s.stats.counters['rewritten'], 0);
  t.deepEqual(s.rewrittenFlags, [false]);
});

test.serial('untrusted peer: the TOA is not used, the application sees the balancer', async (t) => {
  const s = await run({ trustedPeers: ['198.51.100.0/24'] }, { toa: { mode: 'real' } });
  t.is(s.ok, 1);
  t.is(hostOf(s.accepts[0]!.peer), lab!.lvsLocal4);
  t.is(hostOf(s.accepts[0]!.getpeername), lab!.lvsLocal4);
  t.is(s.stats.counters['rewritten'], 0);
  t.is(s.stats.counters['rewrite_skipped_untrusted'], 1);
});

test.serial('trust-all (no trusted ranges) never rewrites', async (t) => {
  const s = await run({ trustedPeers: [] }, { toa: { mode: 'real' } });
  t.is(hostOf(s.accepts[0]!.getpeername), lab!.lvsLocal4);
  t.is(s.stats.counters['rewrite_skipped_untrusted'], 1);
});

test.serial('malformed option (length 6 on a 254 option): the application sees the balancer', async (t) => {
  await lab!.mangle('len6');
  try {
    const s = await run({ toaSources: ['packet'], parseSyn: false }, { toa: { mode: 'real', place: 'ack' } });
    t.is(s.ok, 1);
    t.is(hostOf(s.accepts[0]!.peer), lab!.lvsLocal4);
    t.is(hostOf(s.accepts[0]!.getpeername), lab!.lvsLocal4);
    t.is(s.stats.counters['rewritten'], 0);
    t.is(s.stats.counters['rewrite_skipped_no_toa'], 1);
  } finally {
    await lab!.mangle(null);
  }
});

test.serial('no TOA: unchanged and counted', async (t) => {
  const s = await run({}, {});
  t.is(s.ok, 1);
  t.is(hostOf(s.accepts[0]!.getpeername), lab!.lvsLocal4);
  t.is(s.stats.counters['rewrite_skipped_no_toa'], 1);
});

test.serial('IPv6 listener: the 20-byte TOA client', async (t) => {
  const s = await run({}, { family: 6, count: 2, toa: { mode: 'real' } }, { bind: lab!.rsAddr6, v6only: true });
  t.is(s.ok, 2);
  t.deepEqual(s.accepts.map((a) => a.peer).sort(), [...s.clients].sort());
  t.deepEqual(s.accepts.map((a) => a.getpeername).sort(), [...s.clients].sort());
  t.true(s.accepts.every((a) => hostOf(a.peer) === lab!.clientAddr6));
  t.is(s.stats.counters['rewritten'], 2);
});

test.serial('dual-stack listener: an IPv4 client appears v4-mapped (::ffff:client)', async (t) => {
  const s = await run({}, { count: 2, toa: { mode: 'real' } }, { bind: '::' });
  t.is(s.ok, 2);
  const mapped = s.clients.map((c) => `[::ffff:${hostOf(c)}]:${c.split(':').pop()}`).sort();
  t.deepEqual(s.accepts.map((a) => a.peer).sort(), mapped);
  t.deepEqual(s.accepts.map((a) => a.getpeername).sort(), mapped);
  t.is(s.stats.counters['rewritten'], 2);
});

test.serial('IPv6 TOA on an AF_INET socket cannot be represented: unchanged and counted', async (t) => {
  const s = await run({}, { toa: { mode: 'real6' } });
  t.is(s.ok, 1);
  t.is(hostOf(s.accepts[0]!.getpeername), lab!.lvsLocal4);
  t.is(s.stats.counters['rewritten'], 0);
  t.is(s.stats.counters['rewrite_skipped_family'], 1);
});

test.serial('IPv6 TOA (20 bytes) on a dual-stack socket with an IPv4 balancer: the IPv6 form is returned', async (t) => {
  const s = await run({}, { toa: { mode: 'real6' } }, { bind: '::' });
  t.is(s.ok, 1);
  const c = s.clients[0]!;
  const want = `[::ffff:${hostOf(c)}]:${c.split(':').pop()}`; // real6 carries ::ffff:client on IPv4
  t.is(s.accepts[0]!.peer, want);
  t.is(s.accepts[0]!.getpeername, want);
  t.is(s.stats.counters['rewritten'], 1);
});

test.serial('toa.rewritePorts: a port outside the list is left alone (and not counted)', async (t) => {
  const s = await run({ rewritePorts: [1] }, { toa: { mode: 'real' } });
  t.is(hostOf(s.accepts[0]!.getpeername), lab!.lvsLocal4);
  t.is(s.stats.counters['rewritten'], 0);
  t.is(s.stats.counters['rewrite_skipped_no_toa'], 0);
  t.is(s.stats.counters['rewrite_skipped_untrusted'], 0);
  const inList = nextPort; // run() takes this port next
  const s2 = await run({ rewritePorts: [inList] }, { toa: { mode: 'real' } });
  t.is(s2.accepts[0]!.getpeername, s2.clients[0]!);
});

test.serial('scope: a listener outside probe.cgroupPath is left alone', async (t) => {
  const s = await run({}, { toa: { mode: 'real' } }, { cgroup: cgroup2Mount() });
  t.is(s.ok, 1);
  t.is(hostOf(s.accepts[0]!.getpeername), lab!.lvsLocal4);
  t.is(s.stats.counters['rewritten'], 0);
});

test.serial('without packet TOA the mode is refused with ENOREWRITE (no silent no-op)', (t) => {
  const e = t.throws(() => startProbe({ mode: 'sockops', toaSources: ['module'], rewritePeer: true, trustedPeers: TRUSTED, cgroupPath: CG }));
  t.is((e as { code?: string }).code, 'ENOREWRITE');
  t.regex(e.message, /toa.rewritePeer needs packet TOA/);
});

/** A Python server in the RS namespace: prints the address socket.accept() returned. */
async function pythonAccept(bind: string, p: number, connect: () => Promise<unknown>): Promise<string> {
  const code = [
    'import socket, sys',
    'fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET',
    's = socket.socket(fam, socket.SOCK_STREAM)',
    's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
    'fam == socket.AF_INET6 and s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)',
    's.bind((sys.argv[1], int(sys.argv[2])))',
    's.listen(8)',
    's.settimeout(10)',
    'print("READY", flush=True)',
    'c, a = s.accept()',
    'c.settimeout(5)',
    'c.sendall(c.recv(1))',
    'print("%s %d" % (a[0], a[1]), flush=True)',
  ].join('\n');
  // in the test's cgroup: the shell moves itself there, then execs python
  const py = lab!.spawnIn('rs', ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', CG, 'python3', '-c', code, bind, String(p)]);
  let out = '';
  let err = '';
  py.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const readyP = new Promise<void>((res, rej) => {
    py.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('READY')) res();
    });
    py.once('close', () => rej(new Error(`python exited: ${err}`)));
    setTimeout(() => rej(new Error(`python not ready: ${err}`)), 10000).unref();
  });
  await readyP;
  await connect();
  await new Promise<void>((res) => (py.exitCode !== null ? res() : py.once('close', () => res())));
  const line = out.split('\n').find((l) => l && l !== 'READY');
  if (!line) throw new Error(`python printed no address: ${out} ${err}`);
  return line.trim();
}

test.serial('Python socket.accept() returns the TOA client (IPv4 and dual-stack)', async (t) => {
  const probe = startProbe({ mergeWindowSec: 0, trustedPeers: TRUSTED, rewritePeer: true, cgroupPath: CG });
  try {
    const p4 = port();
    let client = '';
    const a4 = await pythonAccept(lab!.rsAddr4, p4, async () => {
      const r = await lab!.connect({ vipPort: p4, toa: { mode: 'real' } });
      t.is(r.client.ok, 1, r.stderr);
      client = r.conns[0]!.local;
    });
    t.is(a4, client.replace(':', ' '));
    const p6 = port();
    const a6 = await pythonAccept('::', p6, async () => {
      const r = await lab!.connect({ vipPort: p6, toa: { mode: 'real' } });
      t.is(r.client.ok, 1, r.stderr);
      client = r.conns[0]!.local;
    });
    t.is(a6, `::ffff:${client.replace(':', ' ')}`);
  } finally {
    await probe.stop();
  }
});

/** nginx from Debian in the RS namespace and the test's cgroup, access log `$remote_addr:$remote_port`. */
async function startNginx(dir: string, p: number): Promise<{ stop: () => Promise<void>; log: () => string[] }> {
  const conf = `${dir}/nginx.conf`;
  writeFileSync(
    conf,
    [
      'daemon off;',
      'worker_processes 1;',
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log info;`,
      'events { worker_connections 64; }',
      'http {',
      "  log_format peer '$remote_addr:$remote_port';",
      `  access_log ${dir}/access.log peer;`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/${k};`),
      '  server {',
      `    listen ${lab!.rsAddr4}:${p};`,
      `    listen [::]:${p} ipv6only=on;`,
      '    location / { return 200 "hello $remote_addr\\n"; }',
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  const ng = lab!.spawnIn('rs', ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', CG, 'nginx', '-c', conf, '-e', `${dir}/error.log`]);
  let err = '';
  ng.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  // nginx prints nothing when it is up: wait for its pid file
  for (let i = 0; i < 100 && !existsSync(`${dir}/nginx.pid`); i++) {
    if (ng.exitCode !== null) throw new Error(`nginx exited: ${err} ${readFileSync(`${dir}/error.log`, 'utf8')}`);
    await new Promise((res) => setTimeout(res, 50));
  }
  if (!existsSync(`${dir}/nginx.pid`)) throw new Error(`nginx did not start: ${err}`);
  return {
    stop: async () => {
      ng.kill('SIGQUIT');
      await new Promise<void>((res) => (ng.exitCode !== null || ng.signalCode !== null ? res() : ng.once('close', () => res())));
    },
    log: () => readFileSync(`${dir}/access.log`, 'utf8').split('\n').filter((l) => l !== ''),
  };
}

/** curl through the VIP; returns the body and the client's own ip:port. */
async function curl(family: 4 | 6, p: number, toa: boolean) {
  const url = family === 4 ? `http://${lab!.vip4}:${p}/` : `http://[${lab!.vip6}]:${p}/`;
  const r = await lab!.clientExec(['curl', '-sS', '--max-time', '5', '-w', '\n%{local_ip} %{local_port}\n', url], {
    vipPort: p,
    ...(toa ? { toa: { mode: 'real' as const } } : {}),
  });
  const lines = r.stdout.split('\n').filter((l) => l !== '' && !l.startsWith('{'));
  const [ip, port] = (lines[lines.length - 1] ?? '').split(' ');
  return { code: r.code, body: lines[0] ?? '', client: family === 4 ? `${ip}:${port}` : `${ip}:${port}`, ip: ip ?? '', port: port ?? '', stderr: r.stderr };
}

nginxTest.serial('nginx (Debian): $remote_addr:$remote_port in the access log is the TOA client; the HTTP request completes', async (t) => {
  const dir = mkdtempSync(`${tmpdir()}/toa-nginx-`);
  const p = port();
  const probe = startProbe({ mergeWindowSec: 0, trustedPeers: TRUSTED, rewritePeer: true, cgroupPath: CG });
  const ng = await startNginx(dir, p);
  try {
    const v4 = await curl(4, p, true);
    t.is(v4.code, 0, v4.stderr);
    t.is(v4.body, `hello ${v4.ip}`, 'the HTTP reply reached the client; nginx saw it as $remote_addr');
    const v6 = await curl(6, p, true);
    t.is(v6.code, 0, v6.stderr);
    t.is(v6.body, `hello ${v6.ip}`);
    const plain = await curl(4, p, false);
    t.is(plain.code, 0, plain.stderr);
    t.is(plain.body, `hello ${lab!.lvsLocal4}`, 'no TOA: nginx sees the balancer');
    await probe.stop();
    const after = await curl(4, p, true);
    t.is(after.body, `hello ${lab!.lvsLocal4}`, 'sidecar stopped: the balancer again');
    const log = ng.log();
    t.deepEqual(log, [`${v4.ip}:${v4.port}`, `${v6.ip}:${v6.port}`, `${lab!.lvsLocal4}:${log[2]?.split(':').pop()}`, `${lab!.lvsLocal4}:${log[3]?.split(':').pop()}`]);
    t.is(v4.ip, lab!.clientAddr4);
    t.is(v6.ip, lab!.clientAddr6);
  } finally {
    await probe.stop();
    await ng.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A real collector inside the RS namespace (the app exports to its loopback): traces to a JSON file. */
async function startRsCollector(dir: string): Promise<{ stop: () => Promise<void>; spans: () => FlatSpan[] }> {
  const out = `${dir}/traces.jsonl`;
  writeFileSync(
    `${dir}/collector.yaml`,
    [
      'receivers:',
      '  otlp:',
      '    protocols:',
      '      http:',
      '        endpoint: 127.0.0.1:4318',
      'exporters:',
      '  file:',
      `    path: ${out}`,
      '    format: json',
      '    flush_interval: 100ms',
      'service:',
      '  telemetry:',
      '    metrics:',
      '      level: none',
      '  pipelines:',
      '    traces:',
      '      receivers: [otlp]',
      '      exporters: [file]',
      '',
    ].join('\n'),
  );
  const col = lab!.spawnIn('rs', [COLLECTOR_BIN, '--config', `${dir}/collector.yaml`]);
  let err = '';
  await new Promise<void>((res, rej) => {
    col.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      if (/Everything is ready/.test(err)) res();
    });
    col.once('close', (code) => rej(new Error(`collector exited (${code}): ${err}`)));
    setTimeout(() => rej(new Error(`collector not ready: ${err}`)), 20000).unref();
  });
  return {
    stop: async () => {
      col.kill('SIGTERM');
      await new Promise<void>((res) => (col.exitCode !== null || col.signalCode !== null ? res() : col.once('close', () => res())));
    },
    spans: () => {
      if (!existsSync(out)) return [];
      const spans: FlatSpan[] = [];
      const text = readFileSync(out, 'utf8');
      // the file exporter may be writing the last line right now: only complete lines count
      for (const line of text.slice(0, text.lastIndexOf('\n') + 1).split('\n')) {
        if (!line.trim()) continue;
        const j = JSON.parse(line) as { resourceSpans?: { scopeSpans?: { spans?: OtlpSpan[] }[] }[] };
        for (const rs of j.resourceSpans ?? [])
          for (const ss of rs.scopeSpans ?? [])
            for (const sp of ss.spans ?? []) {
              const attrs: Record<string, unknown> = {};
              for (const a of sp.attributes ?? []) attrs[a.key] = a.value.stringValue ?? (a.value.intValue !== undefined ? Number(a.value.intValue) : a.value.boolValue);
              spans.push({ kind: sp.kind, attributes: attrs });
            }
      }
      return spans;
    },
  };
}

interface OtlpSpan {
  kind: number;
  attributes?: { key: string; value: { stringValue?: string; intValue?: string | number; boolValue?: boolean } }[];
}
interface FlatSpan {
  kind: number;
  attributes: Record<string, unknown>;
}

collectorTest.serial('Node @opentelemetry/instrumentation-http: the server span reports the TOA client (network.peer.address, client.address) to the real collector', async (t) => {
  const dir = mkdtempSync(`${tmpdir()}/toa-otelapp-`);
  const p = port();
  const probe = startProbe({ mergeWindowSec: 0, trustedPeers: TRUSTED, rewritePeer: true, cgroupPath: CG });
  const col = await startRsCollector(dir);
  const app = lab!.spawnIn('rs', ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', CG, process.execPath, APP, '::', String(p)], {
    env: { ...process.env, OTLP_TRACES_URL: 'http://127.0.0.1:4318/v1/traces' },
  });
  try {
    let out = '';
    let err = '';
    app.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    await new Promise<void>((res, rej) => {
      app.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.includes('READY')) res();
      });
      app.once('close', (code) => rej(new Error(`app exited (${code}): ${err}`)));
      setTimeout(() => rej(new Error(`app not ready: ${err}`)), 20000).unref();
    });
    const v4 = await curl(4, p, true);
    t.is(v4.code, 0, v4.stderr);
    t.is(v4.body, `hello ::ffff:${lab!.clientAddr4} ${v4.port}`, 'the app saw the client (dual-stack socket)');
    const v6 = await curl(6, p, true);
    t.is(v6.body, `hello ${lab!.clientAddr6} ${v6.port}`);
    app.kill('SIGTERM');
    await new Promise<void>((res) => (app.exitCode !== null ? res() : app.once('close', () => res())));
    let server: FlatSpan[] = [];
    for (let i = 0; i < 100 && server.length < 2; i++) {
      server = col.spans().filter((s) => s.kind === 2);
      if (server.length < 2) await new Promise((res) => setTimeout(res, 100));
    }
    t.is(server.length, 2, `two SERVER spans reached the collector (app stderr: ${err}; spans: ${JSON.stringify(col.spans()).slice(0, 400)})`);
    // the collector may write the two spans in either order
    const byAddress = (a: unknown[], b: unknown[]) => String(a[0]).localeCompare(String(b[0]));
    const peers = server.map((s) => [s.attributes['network.peer.address'], s.attributes['network.peer.port'], s.attributes['client.address']]);
    t.deepEqual(peers.sort(byAddress), [
      [`::ffff:${lab!.clientAddr4}`, Number(v4.port), `::ffff:${lab!.clientAddr4}`],
      [lab!.clientAddr6, Number(v6.port), lab!.clientAddr6],
    ].sort(byAddress));
  } finally {
    if (app.exitCode === null) app.kill('SIGKILL');
    await col.stop();
    await probe.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

const BIN = fileURLToPath(new URL('../../bin/toa-otel.js', import.meta.url));

/** Names of loaded BPF programs (bpftool), to see that none of ours stays. */
function loadedPrograms(): string[] {
  const out = execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' });
  return (JSON.parse(out) as { name?: string }[]).map((p) => p.name ?? '');
}

test.serial('SIGKILL of the sidecar: new connections see the balancer again, no getpeername program stays', async (t) => {
  const p = port();
  const srv = await lab!.startServer({ port: p, cgroup: CG });
  let child: ChildProcess | undefined;
  try {
    child = spawn(process.execPath, [BIN, 'run'], {
      env: {
        ...process.env,
        TOA_OTEL_EXPORTER: 'none',
        TOA_OTEL_TOA_REWRITE_PEER: 'true',
        TOA_OTEL_TOA_TRUSTED_PEERS: TRUSTED.join(','),
        TOA_OTEL_PROBE_CGROUP_PATH: CG,
        TOA_OTEL_TELEMETRY_METRICS: 'false',
        TOA_OTEL_LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    await new Promise<void>((res, rej) => {
      child!.stderr!.setEncoding('utf8').on('data', (d: string) => {
        err += d;
        if (/"msg":"running"/.test(err)) res();
      });
      child!.once('exit', (code) => rej(new Error(`toa-otel exited with ${code}:\n${err}`)));
      setTimeout(() => rej(new Error(`toa-otel not running after 30 s:\n${err}`)), 30000).unref();
    });
    t.true(loadedPrograms().some((n) => n.startsWith('rewrite_getpe')), 'the getpeername programs are loaded while it runs');
    const before = await lab!.connect({ vipPort: p, toa: { mode: 'real' } });
    t.is(before.client.ok, 1);
    child.kill('SIGKILL');
    await new Promise<void>((res) => (child!.exitCode !== null || child!.signalCode !== null ? res() : child!.once('exit', () => res())));
    const after = await lab!.connect({ vipPort: p, toa: { mode: 'real' } });
    t.is(after.client.ok, 1);
    await new Promise((res) => setTimeout(res, 100));
    t.is(srv.accepts.length, 2);
    t.is(srv.accepts[0]!.getpeername, before.conns[0]!.local, 'while running: the client');
    t.is(hostOf(srv.accepts[1]!.peer), lab!.lvsLocal4, 'after SIGKILL: the balancer');
    t.is(hostOf(srv.accepts[1]!.getpeername), lab!.lvsLocal4);
    // links die with the process; the kernel frees the programs right after (RCU)
    let left: string[] = [];
    for (let i = 0; i < 50; i++) {
      left = loadedPrograms().filter((n) => n.startsWith('rewrite_getpe'));
      if (left.length === 0) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    t.deepEqual(left, [], 'no getpeername program left');
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await srv.stop();
  }
});
