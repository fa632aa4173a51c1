// V8 flags the sidecar runs with, shared by the launcher (bin/toa-otel.js) and the pipeline
// benchmark (bench/pipeline.ts) so the benchmark measures what users run.
//
// Why: V8 sizes the young generation from the machine's memory (two 64 MiB semi-spaces on a
// 24 GiB host). Records wait ~0.1-0.3 s in the export queue, survive a scavenge and make V8 grow
// it to that maximum: at 100k records/s the heap alone reached ~175 MiB and RSS ~260 MiB.
// 8 MiB semi-spaces keep peak RSS below 200 MiB at the same CPU per record (bench/pipeline.ts).
//
// --disable-sigusr1: Node's SIGUSR1 inspector thread blocks every signal, so it would keep the
// capabilities the sidecar drops after attach (probe.dropCapabilities signals each thread), and
// SIGUSR1 would open an inspector in a privileged process.
export const NODE_FLAGS = ['--max-semi-space-size=8', '--disable-sigusr1'];

/** Flags of NODE_FLAGS whose option the user has not set (command line or NODE_OPTIONS). */
export function missingNodeFlags(execArgv = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? '') {
  const given = [...execArgv, ...nodeOptions.split(/\s+/)].map((a) => a.split('=')[0].replace(/_/g, '-'));
  return NODE_FLAGS.filter((f) => !given.includes(f.split('=')[0]));
}
