// Loads the native addon (build/Release/toa_otel.node) with a clear error when it is missing.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProbeError } from './errors.js';
import type { NativeAddon } from './native-types.js';

/** Addon with the optional members a newer addon may add. */
export type LoadedAddon = NativeAddon & {
  /** CLOCK_REALTIME - CLOCK_BOOTTIME in ns, read in C (preferred over the /proc/uptime method). */
  clockOffsetNs?: () => bigint | number;
};

/** Root of this package (the directory holding its package.json), from src/ or dist/src/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const p = join(dir, 'package.json');
    if (existsSync(p) && (JSON.parse(readFileSync(p, 'utf8')) as { name?: string }).name === 'toa-otel') return dir;
    dir = dirname(dir);
  }
  throw new Error('package.json of toa-otel not found above ' + fileURLToPath(import.meta.url));
}

/** Default addon path: `<package>/build/Release/toa_otel.node`, or env TOA_OTEL_ADDON. */
export function addonPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.TOA_OTEL_ADDON && env.TOA_OTEL_ADDON !== '' ? env.TOA_OTEL_ADDON : join(packageRoot(), 'build', 'Release', 'toa_otel.node');
}

/** Loads the addon; throws ProbeError(ENOADDON) telling the user to run `npm run build`. */
export function loadAddon(path: string = addonPath()): LoadedAddon {
  if (!existsSync(path)) {
    throw new ProbeError('ENOADDON', `native addon not built: ${path} is missing; run \`npm run build\``);
  }
  try {
    return createRequire(import.meta.url)(path) as LoadedAddon;
  } catch (e) {
    throw new ProbeError('ENOADDON', `failed to load native addon ${path}: ${(e as Error).message}; rebuild it with \`npm run build\``, { cause: e });
  }
}
