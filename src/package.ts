// Where this package lives: the one place that finds the package root (the directory holding
// toa-otel's package.json), from src/ under tsx or dist/src/ when compiled.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface PackageJson {
  name?: string;
  version?: string;
}

let cached: { root: string; pkg: PackageJson } | undefined;

function find(): { root: string; pkg: PackageJson } {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const p = join(dir, 'package.json');
    if (existsSync(p)) {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as PackageJson;
      if (pkg.name === 'toa-otel') return (cached = { root: dir, pkg });
    }
    dir = dirname(dir);
  }
  throw new Error('package.json of toa-otel not found above ' + fileURLToPath(import.meta.url));
}

/** Root directory of this package. */
export function packageRoot(): string {
  return find().root;
}

/** A path inside this package, e.g. `packagePath('config', 'default.json')`. */
export function packagePath(...parts: string[]): string {
  return join(packageRoot(), ...parts);
}

/** This package's version from package.json. */
export function packageVersion(): string {
  return find().pkg.version ?? '0.0.0';
}
