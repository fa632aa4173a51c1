// Loads the native addon (build/Release/toa_otel.node) with a clear error when it is missing.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ProbeError } from './errors.js';
import type { NativeAddon } from './native-types.js';
import { packagePath } from './package.js';

/** Default addon path: `<package>/build/Release/toa_otel.node`, or env TOA_OTEL_ADDON. */
export function addonPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.TOA_OTEL_ADDON && env.TOA_OTEL_ADDON !== '' ? env.TOA_OTEL_ADDON : packagePath('build', 'Release', 'toa_otel.node');
}

/** Loads the addon; throws ProbeError(ENOADDON) telling the user to run `npm run build`. */
export function loadAddon(path: string = addonPath()): NativeAddon {
  if (!existsSync(path)) {
    throw new ProbeError('ENOADDON', `native addon not built: ${path} is missing; run \`npm run build\``);
  }
  try {
    return createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    throw new ProbeError('ENOADDON', `failed to load native addon ${path}: ${(e as Error).message}; rebuild it with \`npm run build\``, { cause: e });
  }
}
