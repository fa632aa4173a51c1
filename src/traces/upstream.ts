// Where the pass-through forwards: the sidecar's own OTLP settings (otlp.*), else the
// OTEL_EXPORTER_OTLP_{SIGNAL_,}* variables, resolved the way the OpenTelemetry SDK resolves them
// (a signal endpoint is used as is, the generic one gets /v1/<signal> appended).
import { readFileSync } from 'node:fs';
import { parseHeaderList, type ToaConfig } from '../config.js';
import type { Signal } from './schema.js';

export interface Upstream {
  url: URL;
  /** configured headers (otlp.headers over OTEL_EXPORTER_OTLP_*HEADERS) */
  headers: Record<string, string>;
  /** compress what we re-encode; bodies passed unchanged keep the app's encoding */
  gzip: boolean;
  timeoutMs: number;
  /** TLS client files (https only) */
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

const ENV_SIGNAL: Record<Signal, string> = { traces: 'TRACES', logs: 'LOGS', metrics: 'METRICS' };

function envOf(env: NodeJS.ProcessEnv, signal: Signal, name: string): string | undefined {
  const v = env[`OTEL_EXPORTER_OTLP_${ENV_SIGNAL[signal]}_${name}`]?.trim() || env[`OTEL_EXPORTER_OTLP_${name}`]?.trim();
  return v ? v : undefined;
}

const join = (base: string, path: string) => (base.endsWith('/') ? base + path : `${base}/${path}`);

/** OTEL_EXPORTER_OTLP_HEADERS: k=v pairs, comma separated, values URL-encoded (W3C baggage style) */
function envHeaders(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (s ?? '').split(',')) {
    const i = part.indexOf('=');
    if (i <= 0) continue;
    try {
      out[decodeURIComponent(part.slice(0, i).trim())] = decodeURIComponent(part.slice(i + 1).trim());
    } catch {
      out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
    }
  }
  return out;
}

export function resolveUpstream(signal: Signal, config: ToaConfig, env: NodeJS.ProcessEnv = process.env): Upstream {
  let url: string;
  if (config.otlp.endpoint !== '') url = join(config.otlp.endpoint, `v1/${signal}`);
  else if (env[`OTEL_EXPORTER_OTLP_${ENV_SIGNAL[signal]}_ENDPOINT`]?.trim()) url = env[`OTEL_EXPORTER_OTLP_${ENV_SIGNAL[signal]}_ENDPOINT`]!.trim();
  else if (env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim()) url = join(env.OTEL_EXPORTER_OTLP_ENDPOINT.trim(), `v1/${signal}`);
  else url = `http://localhost:4318/v1/${signal}`;
  const headers = { ...envHeaders(envOf(env, signal, 'HEADERS')), ...parseHeaderList(config.otlp.headers) };
  const compression = config.otlp.compression !== '' ? config.otlp.compression : envOf(env, signal, 'COMPRESSION');
  const timeoutEnv = Number(envOf(env, signal, 'TIMEOUT'));
  const timeoutMs = config.otlp.timeoutMs > 0 ? config.otlp.timeoutMs : Number.isFinite(timeoutEnv) && timeoutEnv > 0 ? timeoutEnv : 10000;
  const u: Upstream = { url: new URL(url), headers, gzip: compression === 'gzip', timeoutMs };
  const file = (name: string) => {
    const p = envOf(env, signal, name);
    return p ? readFileSync(p) : undefined;
  };
  if (u.url.protocol === 'https:') {
    const ca = file('CERTIFICATE');
    const cert = file('CLIENT_CERTIFICATE');
    const key = file('CLIENT_KEY');
    if (ca) u.ca = ca;
    if (cert) u.cert = cert;
    if (key) u.key = key;
  }
  return u;
}
