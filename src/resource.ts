// The Resource of records and metrics: service.name (config / OTEL_SERVICE_NAME, default toa-otel),
// service.version, host.name, plus OTEL_RESOURCE_ATTRIBUTES.
import { detectResources, resourceAttributesEnvDetector, resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { hostname } from 'node:os';
import { packageVersion } from './package.js';
import { ATTR_HOST_NAME, ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from './semconv.js';

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
