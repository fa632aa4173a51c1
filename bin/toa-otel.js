#!/usr/bin/env node
// Launcher for `toa-otel` / `npx toa-otel`. Runs the compiled dist/src/cli.js when it is at least
// as new as every src/*.ts; otherwise (a fresh checkout, or sources edited since `npm run build:ts`)
// runs the TypeScript sources through tsx, so a checkout never runs stale code.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 15)) {
  // An older system Node (Debian ships 18): hand over to the Node 24 that comes with the project
  // (node_modules in a checkout, node/ in the release tarball and packages). It runs as a child
  // because process.execve is missing before 22.15: forward the stop signals, exit with its code.
  const { runBundledNode } = await import('./bundled-node.js');
  process.exit(await runBundledNode());
}

// Restart once in place with the sidecar's V8 flags (bin/node-flags.js) unless they were given
// (on the command line or in NODE_OPTIONS, which also overrides them): process.execve keeps the
// PID, stdio and signal handling, so nothing wraps the real process. TOA_OTEL_REEXEC=0 skips it.
const { missingNodeFlags } = await import('./node-flags.js');
const missing = missingNodeFlags();
if (missing.length > 0 && typeof process.execve === 'function' && process.env.TOA_OTEL_REEXEC !== '0') {
  try {
    process.execve(process.execPath, [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)], process.env);
  } catch {
    // cannot exec (unusual sandbox): run on with V8's defaults, which only cost memory
  }
}

const root = new URL('../', import.meta.url);
const dist = new URL('dist/src/cli.js', root);
const srcDir = new URL('src/', root);

function newestSourceMtime() {
  let newest = 0;
  for (const f of readdirSync(srcDir)) if (f.endsWith('.ts')) newest = Math.max(newest, statSync(new URL(f, srcDir)).mtimeMs);
  return newest;
}

let cli;
const haveSrc = existsSync(fileURLToPath(srcDir));
if (existsSync(fileURLToPath(dist)) && (!haveSrc || statSync(dist).mtimeMs >= newestSourceMtime())) {
  cli = await import(dist.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  cli = await import(new URL('src/cli.ts', root).href);
}
const code = await cli.main(process.argv.slice(2));
// exit explicitly: keep-alive sockets of the exporters must not hold a finished process open
process.exit(code);
