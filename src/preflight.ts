// Start-up checks that need more than the config values: the file system (probe.cgroupPath) and
// the exporter the config resolves to (trust). Problems are ConfigIssues, reported like any invalid
// value (exit 2), before the probe is loaded.
import { statfsSync, statSync } from 'node:fs';
import type { ToaConfig } from './config.js';
import type { ConfigIssue } from './errors.js';
import { privacyIssues } from './privacy.js';

/** statfs f_type of a cgroup v2 file system (linux/magic.h). */
const CGROUP2_SUPER_MAGIC = 0x63677270;

const CGROUP_ALLOWED = 'empty or an absolute path to a cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/nginx.service)';

/** probe.cgroupPath must name an existing directory of a cgroup2 mount (the kernel says only EBADF otherwise). */
export function cgroupPathIssue(path: string): ConfigIssue | undefined {
  if (path === '') return undefined;
  const issue = (message: string): ConfigIssue => ({ key: 'probe.cgroupPath', value: path, allowed: CGROUP_ALLOWED, message });
  try {
    if (!statSync(path).isDirectory()) return issue('not a cgroup v2 directory (not a directory):');
    if (statfsSync(path).type !== CGROUP2_SUPER_MAGIC) return issue('not a cgroup v2 directory (not on a cgroup2 mount):');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return issue(code === 'ENOENT' ? 'no such directory:' : `cannot be read (${code ?? (e as Error).message}):`);
  }
  return undefined;
}

/** True when the probe will trust the TOA of every peer (an empty toa.trustedPeers). */
export function trustsEveryPeer(config: ToaConfig): boolean {
  return config.toa.trustedPeers.length === 0;
}

/**
 * Fail closed where records matter: the otlp exporter with an empty toa.trustedPeers (any client
 * could forge its address) needs toa.trustAll=true. stdout and none run with a warning: they are
 * the first-run and debugging paths (`sudo npx toa-otel` without any configuration).
 */
export function trustIssue(config: ToaConfig, exporter: 'otlp' | 'stdout' | 'none'): ConfigIssue | undefined {
  if (exporter !== 'otlp' || !trustsEveryPeer(config) || config.toa.trustAll) return undefined;
  return {
    key: 'toa.trustedPeers',
    value: config.toa.trustedPeers,
    allowed: "the load balancers' local address ranges (e.g. 198.18.0.0/15), or toa.trustAll=true (--toa-trust-all) to trust every peer",
    message: 'empty with the otlp exporter: every peer would be trusted and any client could forge its address:',
  };
}

/** Every start-up problem of `toa-otel run` beyond loadConfig's. */
export function preflightIssues(config: ToaConfig, exporter: 'otlp' | 'stdout' | 'none'): ConfigIssue[] {
  return [cgroupPathIssue(config.probe.cgroupPath), trustIssue(config, exporter), ...privacyIssues(config)].filter((i): i is ConfigIssue => i !== undefined);
}
