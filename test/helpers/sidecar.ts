// SPDX-License-Identifier: Apache-2.0
// Test helper: run the real `toa-otel` command (bin/toa-otel.js) as a child process, optionally
// under a wrapper (setpriv), and read its stdout records and stderr JSON log lines; plus a FullNAT
// lab with the RS server in its own cgroup, cleaned up on failure.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cgroup2Mount, createLab, type Lab, type LabServer } from '../lab/lab.js';

export const BIN = fileURLToPath(new URL('../../bin/toa-otel.js', import.meta.url));

export interface Sidecar {
  child: ChildProcess;
  /** stdout records of the lab port */
  records: () => Record<string, unknown>[];
  /** JSON log lines read from stderr so far */
  logs: () => Record<string, unknown>[];
  /** first log line with this msg */
  log: (msg: string) => Record<string, unknown> | undefined;
  exit: Promise<number | null>;
}

export interface SidecarOptions {
  /** command and arguments put in front of `node bin/toa-otel.js` (e.g. setpriv ... --) */
  wrapper?: string[];
  env?: NodeJS.ProcessEnv;
}

export function startSidecar(args: string[], port: number, o: SidecarOptions = {}): Sidecar {
  const argv = [...(o.wrapper ?? []), process.execPath, BIN, 'run', ...args];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TOA_OTEL_LOG_LEVEL: undefined, ...o.env } });
  const records: Record<string, unknown>[] = [];
  const logs: Record<string, unknown>[] = [];
  const lines = (stream: NodeJS.ReadableStream, onLine: (l: Record<string, unknown>) => void) => {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.startsWith('{')) onLine(JSON.parse(line) as Record<string, unknown>);
      }
    });
  };
  lines(child.stdout, (r) => {
    if ((r.attributes as Record<string, unknown>)?.['network.local.port'] === port) records.push(r);
  });
  lines(child.stderr, (l) => logs.push(l));
  child.stderr.on('error', () => {});
  const exit = new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  return { child, records: () => records, logs: () => logs, log: (msg) => logs.find((l) => l.msg === msg), exit };
}

export async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits for the `running` line (probe attached); throws with the log when the sidecar exits first. */
export async function running(sc: Sidecar, ms = 30_000): Promise<Record<string, unknown>> {
  const end = Date.now() + ms;
  while (!sc.log('running')) {
    if (sc.child.exitCode !== null || Date.now() > end) throw new Error(`toa-otel did not start (exit ${sc.child.exitCode}): ${JSON.stringify(sc.logs())}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return sc.log('running')!;
}

/** A lab with the RS server on `port` in its own cgroup v2 directory; everything removed afterwards. */
export async function withLab(t: ExecutionContext, port: number, fn: (lab: Lab, cg: string, srv: LabServer) => Promise<void>): Promise<void> {
  const cg = `${cgroup2Mount()}/toa-test-${process.pid}-${port}`;
  let lab: Lab | undefined;
  let srv: LabServer | undefined;
  mkdirSync(cg, { recursive: true });
  try {
    lab = await createLab();
    srv = await lab.startServer({ port, cgroup: cg });
    await fn(lab, cg, srv);
  } finally {
    await srv?.stop().catch(() => undefined);
    await lab?.teardown();
    try {
      rmdirSync(cg);
    } catch (e) {
      t.log(`cannot remove ${cg}: ${(e as Error).message}`);
    }
  }
}

/** Σ (1 + lvs.merge.suppressed_count) over records: the connections they represent. */
export function connectionsOf(records: { attributes: Record<string, unknown> }[]): number {
  return records.reduce((n, r) => n + 1 + Number(r.attributes['lvs.merge.suppressed_count'] ?? 0), 0);
}
