// SPDX-License-Identifier: Apache-2.0
// Small pieces the benchmarks share.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/package.js';

/** The middle value (the upper one of an even count): what the tables print per column. */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A temporary worktree of REF (for --against) sharing this checkout's node_modules, and
 * `linked` other directories of this checkout (e.g. build/, so only the TypeScript differs);
 * removed by the returned function. */
export function worktreeOf(ref: string, linked: string[] = []): { dir: string; commit: string; remove: () => void } {
  const root = packageRoot();
  const git = (...a: string[]) => execFileSync('git', ['-C', root, ...a], { encoding: 'utf8' }).trim();
  const commit = git('rev-parse', '--short', ref);
  const dir = mkdtempSync(join(tmpdir(), 'toa-otel-against-'));
  rmdirSync(dir);
  git('worktree', 'add', '--detach', dir, commit);
  const remove = () => git('worktree', 'remove', '--force', dir);
  try {
    for (const name of ['node_modules', ...linked]) symlinkSync(join(root, name), join(dir, name));
  } catch (e) {
    remove();
    throw e;
  }
  return { dir, commit, remove };
}
