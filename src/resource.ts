// The Resource of records and metrics: service.name (config / OTEL_SERVICE_NAME, default toa-otel),
// service.version, host.name, plus OTEL_RESOURCE_ATTRIBUTES.
import { detectResources, resourceAttributesEnvDetector, resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ATTR_HOST_NAME, ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from './semconv.js';

let cachedVersion: string | undefined;
/** This package's version, read from package.json (works from src/ and dist/src/). */
export function packageVersion(): string {
  if (cachedVersion) return cachedVersion;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const p = join(dir, 'package.json');
    if (existsSync(p)) {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'toa-otel' && pkg.version) return (cachedVersion = pkg.version);
    }
    dir = dirname(dir);
  }
  return (cachedVersion = '0.0.0');
}

/**
 * Builds the Resource. Precedence of service.name: an explicit config value or OTEL_SERVICE_NAME,
 * then service.name in OTEL_RESOURCE_ATTRIBUTES, then the default `toa-otel`.
 */
export function buildResource(serviceName: string, serviceNameIsDefault: boolean): Resource {
  const base = resourceFromAttributes({
    [ATTR_SERVICE_VERSION]: packageVersion(),
    [ATTR_HOST_NAME]: hostname(),
  });
  const fromEnv = detectResources({ detectors: [resourceAttributesEnvDetector] });
  let r = base.merge(fromEnv);
  if (!serviceNameIsDefault || fromEnv.attributes[ATTR_SERVICE_NAME] === undefined) {
    r = r.merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }));
  }
  return r;
}
