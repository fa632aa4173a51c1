// SPDX-License-Identifier: Apache-2.0
// The listener-owner lookup of toa-otel 0.1 (src/enrich.ts before the owner came from the kernel),
// kept here only as the "before" side of bench/owner-enrich.ts: /proc/net/tcp{,6} of our namespace
// and of one process per other namespace (O(sockets, TIME_WAIT included)), then one pass over
// /proc/PID/fd. 0.1 ran it per listener every 60 s (10 s while not found).
import { readdir, readFile, readlink } from 'node:fs/promises';
import { formatIPv6 } from '../src/decode.js';
import { listenerMatch, parseProcNetTcp, type ListenSocket } from '../test/helpers/proc-net-tcp.js';

async function readListeners(base: string): Promise<ListenSocket[]> {
  const socks: ListenSocket[] = [];
  for (const f of ['tcp', 'tcp6']) {
    try {
      socks.push(...parseProcNetTcp(await readFile(`${base}/net/${f}`, 'utf8')));
    } catch {
      /* no IPv6, or the process is gone */
    }
  }
  return socks;
}

async function readLocalAddrs(base: string): Promise<Set<string>> {
  const out = new Set<string>();
  try {
    const trie = await readFile(`${base}/net/fib_trie`, 'utf8');
    for (const m of trie.matchAll(/\|-- (\d+\.\d+\.\d+\.\d+)\n\s+\/32 host LOCAL/g)) out.add(m[1]!);
  } catch {
    /* no IPv4 */
  }
  try {
    for (const line of (await readFile(`${base}/net/if_inet6`, 'utf8')).split('\n')) {
      const hex = line.split(' ')[0];
      if (hex && /^[0-9a-f]{32}$/.test(hex)) out.add(formatIPv6(Buffer.from(hex, 'hex'), 0));
    }
  } catch {
    /* no IPv6 */
  }
  return out;
}

async function onePidPerOtherNetns(proc: string): Promise<string[]> {
  const own = await readlink(`${proc}/self/ns/net`);
  const seen = new Set([own]);
  const out: string[] = [];
  for (const p of (await readdir(proc)).filter((d) => /^\d+$/.test(d))) {
    try {
      const ns = await readlink(`${proc}/${p}/ns/net`);
      if (!seen.has(ns)) {
        seen.add(ns);
        out.push(p);
      }
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Owner pid of the listener of each wanted (addr, port), as 0.1 found it. */
export async function legacyResolveListeners(wanted: Map<string, { addr: string; port: number }>, proc = '/proc'): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  const inodeToKeys = new Map<number, string[]>();
  const spaces = [proc];
  for (const pid of await onePidPerOtherNetns(proc)) spaces.push(`${proc}/${pid}`);
  const listeners = await Promise.all(spaces.map((b) => readListeners(b)));
  const localAddrs = new Map<string, Promise<Set<string>>>();
  for (const [key, { addr, port }] of wanted) {
    let bestScore = 0;
    let cands: { space: string; sock: ListenSocket }[] = [];
    spaces.forEach((space, i) => {
      for (const sock of listeners[i]!) {
        const sc = listenerMatch(sock, addr, port);
        if (sc > bestScore) {
          bestScore = sc;
          cands = [];
        }
        if (sc > 0 && sc === bestScore) cands.push({ space, sock });
      }
    });
    if (new Set(cands.map((c) => c.space)).size > 1) {
      const keep: typeof cands = [];
      for (const c of cands) {
        if (!localAddrs.has(c.space)) localAddrs.set(c.space, readLocalAddrs(c.space));
        if ((await localAddrs.get(c.space)!).has(addr)) keep.push(c);
      }
      cands = new Set(keep.map((c) => c.space)).size === 1 ? keep : [];
    }
    const best = cands.find((c) => c.sock.inode !== 0);
    if (best) inodeToKeys.set(best.sock.inode, [...(inodeToKeys.get(best.sock.inode) ?? []), key]);
  }
  if (inodeToKeys.size > 0) {
    const pids = (await readdir(proc)).filter((d) => /^\d+$/.test(d));
    const remaining = new Set(inodeToKeys.keys());
    const CHUNK = 32;
    for (let i = 0; i < pids.length && remaining.size > 0; i += CHUNK) {
      await Promise.all(
        pids.slice(i, i + CHUNK).map(async (p) => {
          let fds: string[];
          try {
            fds = await readdir(`${proc}/${p}/fd`);
          } catch {
            return;
          }
          for (const fd of fds) {
            if (remaining.size === 0) return;
            const link = await readlink(`${proc}/${p}/fd/${fd}`).catch(() => '');
            if (!link.startsWith('socket:[')) continue;
            const inode = Number(link.slice(8, -1));
            if (!remaining.has(inode)) continue;
            remaining.delete(inode);
            for (const key of inodeToKeys.get(inode)!) result.set(key, Number(p));
          }
        }),
      );
    }
  }
  return result;
}
