// SPDX-License-Identifier: Apache-2.0
// Signals through the wrappers a user starts the sidecar with (README: `npm start`; also npx and an
// old system Node that hands over to the bundled Node 24): SIGTERM to the wrapper stops the sidecar
// cleanly — final sweep, flush, exit 0 — and SIGKILL of the wrapper makes the sidecar notice and
// stop the same way. Records of real loopback connections prove that nothing was lost on the way.
// Needs root (the probe attaches to the real kernel).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The sidecar attaches the real probe: root and the built addon. */
const test = gatedTest(privilegedGate(), nativeGate());
const SIDECAR_FLAGS = ['--exporter', 'stdout', '--probe-include-loopback', '--merge-window-sec', '0', '--status-interval-sec', '0', '--enrich-enabled=false'];
const CONNECTIONS = 25;

interface Started {
  wrapper: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** pid of the sidecar itself (from its "running" line) */
  sidecarPid: Promise<number>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(cmd: string, args: string[]): Started {
  const wrapper = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TOA_OTEL_LOG_LEVEL: 'info' } });
  let out = '';
  let err = '';
  wrapper.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const sidecarPid = new Promise<number>((resolve, reject) => {
    wrapper.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      const m = /"msg":"running".*?"pid":(\d+)/.exec(err);
      if (m) resolve(Number(m[1]));
    });
    wrapper.once('exit', (code) => reject(new Error(`${cmd} exited with ${code} before the sidecar ran:\n${err}`)));
    setTimeout(() => reject(new Error(`sidecar not running after 60 s:\n${err}`)), 60_000).unref();
  });
  const exit = once(wrapper, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  return { wrapper, stdout: () => out, stderr: () => err, sidecarPid, exit };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function waitGone(pid: number, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !alive(pid);
}

/** A loopback server that accepts and closes; `connectMany` makes sequential connections to it. */
async function loopbackServer(): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.end());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

async function connectMany(port: number, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const s = connect(port, '127.0.0.1');
    await once(s, 'connect');
    s.resume();
    await once(s, 'close');
  }
}

/** Records of the stdout exporter whose local port is `port`. */
function recordsFor(stdout: string, port: number): number {
  let n = 0;
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const r = JSON.parse(line) as { attributes?: Record<string, unknown> };
    if (r.attributes?.['network.local.port'] === port) n += 1 + Number(r.attributes['lvs.merge.suppressed_count'] ?? 0);
  }
  return n;
}

function stoppedLine(stderr: string): Record<string, unknown> | undefined {
  const line = stderr.split('\n').find((l) => l.includes('"msg":"stopped"'));
  return line ? (JSON.parse(line) as Record<string, unknown>) : undefined;
}

/** Starts through a wrapper, makes connections, then `stop(wrapper)`; checks a clean, complete stop. */
async function scenario(t: import('ava').ExecutionContext, cmd: string, args: string[], stop: (s: Started) => void) {
  const { server, port } = await loopbackServer();
  const s = start(cmd, args);
  try {
    const pid = await s.sidecarPid;
    await connectMany(port, CONNECTIONS);
    stop(s);
    const gone = await waitGone(pid, 20_000);
    const exit = await Promise.race([s.exit, new Promise<undefined>((r) => setTimeout(r, 20_000))]);
    t.true(gone, `the sidecar (pid ${pid}) is gone after the wrapper was stopped`);
    const stopped = stoppedLine(s.stderr());
    t.truthy(stopped, `"stopped" summary on stderr:\n${s.stderr()}`);
    t.is(stopped?.lostAtShutdown, 0);
    t.is(stopped?.timedOut, false);
    t.is(recordsFor(s.stdout(), port), CONNECTIONS, 'every connection was flushed as a record');
    return { exit, pid };
  } finally {
    if (s.wrapper.exitCode === null) s.wrapper.kill('SIGKILL');
    server.close();
  }
}

test.serial('SIGTERM to `npm start`: the sidecar stops cleanly, npm exits 0', async (t) => {
  const { exit } = await scenario(t, 'npm', ['start', '--silent', '--', ...SIDECAR_FLAGS], (s) => s.wrapper.kill('SIGTERM'));
  t.deepEqual(exit, { code: 0, signal: null });
});

test.serial('SIGINT to `npm start` (Ctrl-C sent to npm alone): clean stop, exit 0', async (t) => {
  const { exit } = await scenario(t, 'npm', ['start', '--silent', '--', ...SIDECAR_FLAGS], (s) => s.wrapper.kill('SIGINT'));
  t.deepEqual(exit, { code: 0, signal: null });
});

test.serial('SIGKILL of npm: the orphaned sidecar notices its parent is gone and stops cleanly', async (t) => {
  await scenario(t, 'npm', ['start', '--silent', '--', ...SIDECAR_FLAGS], (s) => s.wrapper.kill('SIGKILL'));
});

test.serial('SIGTERM to npx: npm forwards it to a shell that does not pass it on; the sidecar still stops cleanly', async (t) => {
  // `npm exec` runs the bin behind `sh -c`; the shell dies, the sidecar sees itself orphaned
  await scenario(t, 'npm', ['exec', '--offline', '--', 'toa-otel', ...SIDECAR_FLAGS], (s) => s.wrapper.kill('SIGTERM'));
});

// The system Node of this machine, when it is older than the launcher accepts itself (Debian ships 18)
function oldSystemNode(): string | undefined {
  for (const node of ['/usr/bin/node', '/usr/local/bin/node']) {
    try {
      const v = execFileSync(node, ['-p', 'process.versions.node'], { encoding: 'utf8' }).trim();
      const [maj, min] = v.split('.').map(Number);
      if (maj! < 22 || (maj === 22 && min! < 15)) return node;
    } catch {
      /* not there */
    }
  }
  return undefined;
}
const OLD_NODE = oldSystemNode();
const oldNode = { reason: OLD_NODE ? null : 'no system Node older than 22.15 here: nothing to hand over' };

gatedTest(oldNode).serial('an old system Node hands over to the bundled Node 24: --version works', (t) => {
  const v = execFileSync(OLD_NODE!, [fileURLToPath(new URL('bin/toa-otel.js', `file://${ROOT}`)), '--version'], { encoding: 'utf8' });
  t.regex(v, /^\d+\.\d+\.\d+\n$/);
});

gatedTest(privilegedGate(), nativeGate(), oldNode).serial('an old system Node: SIGTERM to the launcher reaches the sidecar (clean stop, exit 0)', async (t) => {
  const { exit, pid } = await scenario(t, OLD_NODE!, ['bin/toa-otel.js', ...SIDECAR_FLAGS], (s) => s.wrapper.kill('SIGTERM'));
  t.not(pid, undefined);
  t.deepEqual(exit, { code: 0, signal: null });
});
