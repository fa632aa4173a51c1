// On-disk spool of unexported records (export.spoolDir), so that a planned restart (SIGTERM, then a
// new process) loses nothing while the collector is down or slow:
// - at shutdown, what the retrying exporter still holds when shutdown.timeoutMs runs out (the
//   batch processor's queue is flushed into it first) is written to one file, up to
//   export.spoolMaxBytes over all spool files; beyond that the newest records are counted as lost;
// - at the next start those files are read and their records re-sent FIRST (ahead of new records,
//   through the same retry/backoff path); a file is deleted once all its records left the exporter
//   (delivered, or dropped and counted), or when the next shutdown spooled what was left of it;
// - a state file, rewritten every few seconds while running and marked clean at a normal stop,
//   lets the next start count what a killed (SIGKILL, OOM, power loss) run had in memory.
// Why files of JSON lines written once at shutdown, not a write-ahead log of every record: the
// collector's persistent queue (file_storage) and Fluent Bit's filesystem buffering write every
// batch as it is queued, which costs a disk write per batch even when the collector is healthy;
// here the in-memory path stays as fast as before and the disk is touched only when records would
// otherwise be lost at a stop. The price: records in memory at a SIGKILL are lost (and counted).
// Like both references, delivery is at least once: a kill between a delivery and the deletion of
// its file re-sends those records at the next start.
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { Attributes } from '@opentelemetry/api';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const FILE_RE = /^spool-(\d+)-(\d+)\.jsonl$/;
const STATE = 'state.json';
const LOCK = 'lock';

/** One spool file read at start. */
export interface SpoolFile {
  path: string;
  bytes: number;
  /** records of the file, as batches of at most `batchSize` */
  batches: ReadableLogRecord[][];
  records: number;
  /** lines that could not be read (torn or corrupt), skipped and counted */
  badLines: number;
}

/** What the state file says about the previous run. */
export interface PreviousRun {
  pid: number;
  /** when the state was written (epoch ms) */
  at: number;
  clean: boolean;
  /** records the run held in memory (queued, retained, in flight) at `at` */
  inMemory: number;
}

/** Serialized record: times, severity, event name, attributes (the resource/scope come from the header line). */
interface Line {
  t: [number, number];
  o: [number, number];
  n?: number;
  x?: string;
  e?: string;
  a: Attributes;
}

interface Header {
  resource: Attributes;
  scope: { name: string; version?: string };
}

function isHeader(j: unknown): j is Header {
  return typeof j === 'object' && j !== null && 'resource' in j && 'scope' in j;
}

/** The spool directory; see the file comment. */
export class Spool {
  private constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {}

  /**
   * Opens (creates, mode 0700) the directory and takes its lock: two sidecars must not share a
   * spool. Throws with a message naming export.spoolDir when that fails.
   */
  static open(dir: string, maxBytes: number): Spool {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new Error(`export.spoolDir ${dir} cannot be created: ${(e as Error).message}`, { cause: e });
    }
    const lock = join(dir, LOCK);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(lock, 'wx', 0o600);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        return new Spool(dir, maxBytes);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`export.spoolDir ${dir} is not writable: ${(e as Error).message}`, { cause: e });
        const owner = Number(readFileSync(lock, 'utf8').trim());
        if (owner > 0 && owner !== process.pid && alive(owner)) throw new Error(`export.spoolDir ${dir} is in use by pid ${owner}`, { cause: e });
        rmSync(lock, { force: true }); // left by a killed run
      }
    }
    throw new Error(`export.spoolDir ${dir}: cannot take the lock`);
  }

  /** Releases the lock (at exit). */
  close(): void {
    rmSync(join(this.dir, LOCK), { force: true });
  }

  /** Spool files, oldest first. */
  files(): string[] {
    return readdirSync(this.dir)
      .filter((f) => FILE_RE.test(f))
      .sort((a, b) => {
        const ma = FILE_RE.exec(a)!;
        const mb = FILE_RE.exec(b)!;
        return Number(ma[1]) - Number(mb[1]) || Number(ma[2]) - Number(mb[2]);
      })
      .map((f) => join(this.dir, f));
  }

  /** Reads every spool file (records rebuilt as ReadableLogRecords), in batches of `batchSize`. */
  load(batchSize: number): SpoolFile[] {
    const out: SpoolFile[] = [];
    for (const path of this.files()) {
      const text = readFileSync(path, 'utf8');
      const batches: ReadableLogRecord[][] = [];
      let batch: ReadableLogRecord[] = [];
      let resource: Resource | undefined;
      let scope: { name: string; version?: string } | undefined;
      let records = 0;
      let badLines = 0;
      for (const raw of text.split('\n')) {
        if (raw === '') continue;
        let j: unknown;
        try {
          j = JSON.parse(raw);
        } catch {
          badLines++;
          continue;
        }
        if (isHeader(j)) {
          resource = resourceFromAttributes(j.resource);
          scope = j.scope;
          continue;
        }
        const l = j as Line;
        if (!resource || !scope || !Array.isArray(l.t) || !Array.isArray(l.o) || typeof l.a !== 'object') {
          badLines++;
          continue;
        }
        batch.push(toRecord(l, resource, scope));
        records++;
        if (batch.length >= batchSize) {
          batches.push(batch);
          batch = [];
        }
      }
      if (batch.length > 0) batches.push(batch);
      out.push({ path, bytes: text.length, batches, records, badLines });
    }
    return out;
  }

  /** Bytes of the spool files, except those in `except`. */
  usedBytes(except: ReadonlySet<string> = new Set()): number {
    let n = 0;
    for (const f of this.files()) {
      if (except.has(f)) continue;
      try {
        n += statSync(f).size;
      } catch {
        /* deleted meanwhile */
      }
    }
    return n;
  }

  /**
   * Writes records (oldest first) into a new spool file, atomically (temp file, fsync, rename), until
   * the spool would exceed maxBytes (files in `replacing` are about to be deleted and do not count).
   * Returns how many were written; the rest did not fit.
   */
  write(records: ReadableLogRecord[], replacing: ReadonlySet<string> = new Set()): { written: number; path?: string; bytes: number } {
    if (records.length === 0) return { written: 0, bytes: 0 };
    const budget = this.maxBytes - this.usedBytes(replacing);
    const name = `spool-${Date.now()}-${process.pid}.jsonl`;
    const tmp = join(this.dir, `.${name}.tmp`);
    const parts: string[] = [];
    let bytes = 0;
    let written = 0;
    let resource: Resource | undefined;
    let scope: ReadableLogRecord['instrumentationScope'] | undefined;
    for (const r of records) {
      let chunk = '';
      if (r.resource !== resource || r.instrumentationScope !== scope) {
        resource = r.resource;
        scope = r.instrumentationScope;
        const h: Header = { resource: r.resource.attributes, scope: { name: scope.name, ...(scope.version ? { version: scope.version } : {}) } };
        chunk += JSON.stringify(h) + '\n';
      }
      chunk += JSON.stringify(fromRecord(r)) + '\n';
      const size = Buffer.byteLength(chunk);
      if (bytes + size > budget) break;
      parts.push(chunk);
      bytes += size;
      written++;
    }
    if (written === 0) return { written: 0, bytes: 0 };
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, parts.join(''));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    const path = join(this.dir, name);
    renameSync(tmp, path);
    return { written, path, bytes };
  }

  /** Deletes a spool file (its records left the process, or are in a newer file). */
  remove(path: string): void {
    rmSync(path, { force: true });
  }

  /** The state the previous run left, or undefined when there is none (first run) or it is unreadable. */
  previousRun(): PreviousRun | undefined {
    try {
      const j = JSON.parse(readFileSync(join(this.dir, STATE), 'utf8')) as PreviousRun;
      return typeof j.pid === 'number' && typeof j.inMemory === 'number' ? j : undefined;
    } catch {
      return undefined;
    }
  }

  /** Rewrites the state file atomically. */
  writeState(s: PreviousRun): void {
    const tmp = join(this.dir, `.${STATE}.tmp`);
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(s) + '\n');
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, join(this.dir, STATE));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function fromRecord(r: ReadableLogRecord): Line {
  const l: Line = { t: [r.hrTime[0], r.hrTime[1]], o: [r.hrTimeObserved[0], r.hrTimeObserved[1]], a: r.attributes };
  if (r.severityNumber !== undefined) l.n = r.severityNumber;
  if (r.severityText) l.x = r.severityText;
  if (r.eventName) l.e = r.eventName;
  return l;
}

function toRecord(l: Line, resource: Resource, scope: { name: string; version?: string }): ReadableLogRecord {
  return {
    hrTime: l.t,
    hrTimeObserved: l.o,
    severityNumber: l.n,
    severityText: l.x,
    body: undefined,
    attributes: l.a,
    droppedAttributesCount: 0,
    eventName: l.e,
    resource,
    instrumentationScope: scope,
    spanContext: undefined,
  };
}
