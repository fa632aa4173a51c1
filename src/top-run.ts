// `toa-otel top`, the terminal side. It attaches its own probe: a Pipeline whose log processor is
// the TopAggregator (src/top.ts) instead of an exporter, so it needs no collector and works next to
// a running sidecar (each has its own BPF programs, ring buffer and merge map; the sidecar's
// records are not touched).
//
// Drawing: hand-written ANSI sequences (alternate screen, cursor home, erase line, hide/show
// cursor), ~10 of them, for one full-screen table redrawn once a second; keys through Node's
// readline keypress events. A terminal library would add a dependency tree for no gain here.
import { emitKeypressEvents } from 'node:readline';
import type { LoadedConfig, ToaConfig } from './config.js';
import { ExitCode, ProbeError } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { Pipeline, type PipelineDeps } from './pipeline.js';
import { renderPlain, renderScreen, SORT_KEYS, TopAggregator, type SortKey, type TopCounters, type ViewInfo } from './top.js';

const CSI = '\x1b[';
const ENTER_ALT = `${CSI}?1049h${CSI}?25l`; // alternate screen, cursor hidden
const LEAVE_ALT = `${CSI}?1049l${CSI}?25h`; // main screen back, cursor visible
const HOME = `${CSI}H`;
const ERASE_EOL = `${CSI}K`;
const ERASE_DOWN = `${CSI}J`;

/** Seconds between plain reports when stdout is not a terminal. */
const PLAIN_INTERVAL_SEC = 5;

/** The config top runs with: no export, no status lines; a 1 s sweep unless the user chose one. */
export function topConfig(loaded: LoadedConfig): ToaConfig {
  const c = loaded.config;
  const sweepSet = loaded.origin['merge.sweepIntervalSec'] !== 'default';
  return {
    ...c,
    exporter: 'none',
    status: { ...c.status, intervalSec: 0 },
    telemetry: { ...c.telemetry, metrics: false },
    // merged connections reach the view at the next sweep: sweep every second
    merge: { ...c.merge, sweepIntervalSec: sweepSet ? c.merge.sweepIntervalSec : 1 },
  };
}

export interface TopIo {
  stdout: NodeJS.WriteStream;
  stdin: NodeJS.ReadStream;
  stderr: (s: string) => void;
  env: NodeJS.ProcessEnv;
  /** Test hook: extra pipeline dependencies. */
  deps?: PipelineDeps;
}

/** Runs the view until q, Ctrl-C, SIGINT/SIGTERM/SIGHUP or a probe failure; resolves to the exit code. */
export async function runTop(loaded: LoadedConfig, io: TopIo): Promise<number> {
  const config = topConfig(loaded);
  const tty = io.stdout.isTTY === true;
  // full screen: the pipeline's log lines would scroll the table, keep the last warning for the footer
  let lastLog: string | undefined;
  const screenLog = (line: string) => {
    try {
      const j = JSON.parse(line) as { level?: string; msg?: string };
      if (j.level === 'warn' || j.level === 'error') lastLog = `${j.level}: ${j.msg ?? ''}`;
    } catch {
      lastLog = line.trim();
    }
  };
  const log: Logger = tty ? createLogger('warn', screenLog) : createLogger(config.log.level, io.stderr);
  const agg = new TopAggregator();
  const pipeline = new Pipeline(config, { log, env: io.env, ...io.deps, processor: () => agg });
  try {
    await pipeline.start();
  } catch (e) {
    const plainLog = createLogger('info', io.stderr);
    if (e instanceof ProbeError) {
      plainLog.error(e.message, { code: e.code, hint: e.hint });
      return ExitCode.PROBE;
    }
    plainLog.error('failed to start', { err: e as Error });
    return ExitCode.RUNTIME;
  }

  let sort: SortKey = 'rate';
  const mode = pipeline.probeStats()?.mode ?? '?';
  const info = (): ViewInfo => ({
    mode,
    now: new Date(),
    sort,
    trustedPeers: config.toa.trustedPeers,
    trustAll: config.toa.trustAll,
    mergeWindowSec: config.merge.windowSec,
    counters: counters(pipeline),
    lastLog,
  });
  const draw = () => {
    if (tty) {
      const rows = renderScreen(agg, info(), io.stdout.columns || 80, io.stdout.rows || 24);
      io.stdout.write(HOME + rows.join(`${ERASE_EOL}\n`) + ERASE_EOL + ERASE_DOWN);
    }
  };

  return new Promise<number>((resolve) => {
    let ticks = 0;
    const timer = setInterval(() => {
      agg.tick(1);
      ticks++;
      if (tty) draw();
      else if (ticks % PLAIN_INTERVAL_SEC === 0) io.stdout.write(renderPlain(agg, info()).join('\n') + '\n\n');
    }, 1000);
    let finished = false;
    const finish = (code: number) => {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      restore();
      pipeline.stop().then(
        () => resolve(code),
        () => resolve(ExitCode.RUNTIME),
      );
    };
    const onKey = (_s: string | undefined, key: { name?: string; ctrl?: boolean; sequence?: string } | undefined) => {
      const name = key?.name ?? _s ?? '';
      if (name === 'q' || (key?.ctrl && (name === 'c' || name === 'd'))) return finish(ExitCode.OK);
      const s = SORT_KEYS[name];
      if (s) {
        sort = s;
        draw();
      }
    };
    const onSignal = () => finish(ExitCode.OK);
    const onResize = () => draw();
    let restored = false;
    const restore = () => {
      if (restored) return;
      restored = true;
      process.off('SIGINT', onSignal).off('SIGTERM', onSignal).off('SIGHUP', onSignal);
      if (tty) {
        io.stdout.off('resize', onResize);
        io.stdout.write(LEAVE_ALT);
      }
      if (io.stdin.isTTY) {
        io.stdin.off('keypress', onKey);
        io.stdin.setRawMode(false);
        io.stdin.pause();
      }
    };
    // a closed terminal (SIGHUP) fails writes with EIO: stop the probe anyway instead of crashing
    io.stdout.on('error', () => {});
    // an exception anywhere must not leave the terminal in the alternate screen without a cursor
    process.once('exit', restore);
    process.on('SIGINT', onSignal).on('SIGTERM', onSignal).on('SIGHUP', onSignal);
    void pipeline.failure.then((e) => {
      restore();
      io.stderr(`toa-otel top: ${e.message}\n`);
      finish(ExitCode.RUNTIME);
    });
    if (tty) {
      io.stdout.write(ENTER_ALT);
      io.stdout.on('resize', onResize);
      draw();
    }
    if (io.stdin.isTTY) {
      emitKeypressEvents(io.stdin);
      io.stdin.setRawMode(true);
      io.stdin.on('keypress', onKey);
      io.stdin.resume();
    }
  });
}

/** Loss and option counters of the running pipeline. */
function counters(p: Pipeline): TopCounters {
  const t = p.totals();
  const k = p.probeStats()?.counters ?? {};
  const n = (name: string) => k[name] ?? 0;
  return {
    kernelLost: t.kernelLost,
    lostConnections: n('lost_connections'),
    droppedEvents: t.droppedEvents,
    droppedBatches: t.droppedBatches,
    decodeErrors: t.decodeErrors,
    pipelineErrors: t.pipelineErrors,
    pendingMiss: n('pending_miss'),
    optionsMalformed: n('options_malformed'),
    toaBadLength: n('toa_bad_length'),
    noSavedSyn: n('no_saved_syn'),
    moduleInvalid: n('module_invalid'),
  };
}
