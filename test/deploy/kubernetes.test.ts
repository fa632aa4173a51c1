// deploy/kubernetes/: every manifest is validated with kubeconform in strict mode against the JSON
// schemas generated from the OpenAPI spec of Kubernetes 1.34.2 (deploy/kubernetes/tools/validate.sh;
// tools cached in .cache/kube/). Broken copies of the real DaemonSet must be rejected, naming the
// problem, which shows the validator is real. The ConfigMap's config.json is checked by the
// sidecar's own configuration loader with the DaemonSet's environment, so its keys are exactly
// the documented ones. Needs Go once (kubeconform and the spec come from the Go module proxy);
// skipped without it, FAIL under TOA_OTEL_REQUIRE_COLLECTOR=1 (CI builds the collector with Go).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DIR = join(ROOT, 'deploy/kubernetes');
const VALIDATE = join(DIR, 'tools/validate.sh');
const hasGo = spawnSync('go', ['version']).status === 0;
const gated = hasGo ? test.serial : (process.env.TOA_OTEL_REQUIRE_COLLECTOR === '1' ? test.serial : test.skip);
if (!hasGo) console.log('# kubernetes manifests: skipped, Go is needed once to build kubeconform and fetch the OpenAPI spec');

function validate(...files: string[]) {
  const r = spawnSync('bash', [VALIDATE, ...files], { encoding: 'utf8', timeout: 590_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}
const manifests = () => readdirSync(DIR).filter((f) => f.endsWith('.yaml')).map((f) => join(DIR, f));
const daemonset = () => readFileSync(join(DIR, 'toa-otel.yaml'), 'utf8');

gated('every manifest in deploy/kubernetes is valid for Kubernetes 1.34 (kubeconform, strict)', (t) => {
  t.timeout(600_000); // first run builds kubeconform and fetches the spec
  const files = manifests();
  t.true(files.length >= 2, `manifests found: ${files.join(', ')}`);
  const r = validate(...files);
  t.is(r.code, 0, r.out);
  const m = /Summary: (\d+) resources? found in (\d+) files? - Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)/.exec(r.out);
  if (!m) return t.fail(`no kubeconform summary in:\n${r.out}`);
  const found = Number(m[1]);
  t.true(found >= 9, `resources found: ${found}`);
  t.is(Number(m[3]), found, r.out);
  t.is(Number(m[4]) + Number(m[5]) + Number(m[6]), 0, 'nothing invalid, nothing skipped for a missing schema');
  t.log(m[0]);
});

// Each broken copy of the DaemonSet file, and what kubeconform must say about it.
const broken: Array<[string, (s: string) => string, RegExp]> = [
  ['unknown field (hostPid)', (s) => s.replace('hostPID: true', 'hostPid: true'), /additional properties 'hostPid' not allowed/],
  ['wrong type (periodSeconds as a string)', (s) => s.replace('periodSeconds: 30', 'periodSeconds: "30"'), /periodSeconds.*(expected integer|got string)/s],
  ['missing required field (container name)', (s) => s.replace(/^ {8}- name: toa-otel$/m, '        - image2: x'), /missing propert(y|ies) 'name'|additional properties 'image2'/],
  ['misspelt capability list (adds)', (s) => s.replace('add: ["BPF"', 'adds: ["BPF"'), /additional properties 'adds' not allowed/],
  ['wrong apiVersion for DaemonSet (v1)', (s) => s.replace('apiVersion: apps/v1\nkind: DaemonSet', 'apiVersion: v1\nkind: DaemonSet'), /could not find schema for DaemonSet|DaemonSet.*(invalid|failed)/i],
];
for (const [name, mangle, expect] of broken) {
  gated(`a broken DaemonSet is rejected: ${name}`, (t) => {
    t.timeout(600_000);
    const original = daemonset();
    const text = mangle(original);
    t.not(text, original, 'the mangling changed the manifest');
    const dir = mkdtempSync(join(tmpdir(), 'toa-kube-'));
    try {
      const f = join(dir, 'broken.yaml');
      writeFileSync(f, text);
      const r = validate(f);
      t.not(r.code, 0, `kubeconform accepted the broken manifest:\n${r.out}`);
      t.regex(r.out, expect);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/** The literal block under `KEY: |` (indented by 4 spaces) of a manifest. */
function literalBlock(text: string, key: string): string | undefined {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === `${key}: |`);
  if (start < 0) return undefined;
  const block: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (l.startsWith('    ')) block.push(l.slice(4)); else if (l.trim() === '') block.push(''); else break;
  }
  while (block.length > 0 && block[block.length - 1] === '') block.pop();
  return block.join('\n') + '\n';
}

test('the collectors ConfigMaps hold otel-collector/fleet/*.yaml verbatim', (t) => {
  const text = readFileSync(join(DIR, 'collectors.yaml'), 'utf8');
  for (const name of ['agent.yaml', 'gateway.yaml']) {
    t.is(literalBlock(text, name), readFileSync(join(ROOT, 'otel-collector/fleet', name), 'utf8'), `${name} in collectors.yaml differs from otel-collector/fleet/${name}`);
  }
});

test('the ConfigMap config.json is accepted by the sidecar with the DaemonSet environment', (t) => {
  const text = daemonset();
  const json = literalBlock(text, 'config.json');
  if (json === undefined) return t.fail('no config.json block in toa-otel.yaml');
  const cfg = JSON.parse(json) as { probe: { cgroupPath: string } };
  t.regex(cfg.probe.cgroupPath, /^\/host\/cgroup\/kubepods(\.slice)?$/, 'probe.cgroupPath is the kubepods slice under the cgroup mount');
  t.true(text.includes('mountPath: /host/cgroup'), 'the cgroup mount is where probe.cgroupPath points');
  const dir = mkdtempSync(join(tmpdir(), 'toa-kube-cfg-'));
  try {
    const f = join(dir, 'config.json');
    writeFileSync(f, json);
    const r = spawnSync(process.execPath, [join(ROOT, 'bin/toa-otel.js'), 'config', '--print', '--config', f], {
      encoding: 'utf8', timeout: 60_000,
      env: { ...process.env, TOA_OTEL_OTLP_ENDPOINT: 'http://198.18.0.1:4318', TOA_OTEL_EXPORT_SPOOL_DIR: '/var/lib/toa-otel/spool', OTEL_RESOURCE_ATTRIBUTES: 'k8s.node.name=n1' },
    });
    t.is(r.status, 0, `toa-otel config --print refused the ConfigMap's config:\n${r.stdout}${r.stderr}`);
    const eff = JSON.parse(r.stdout) as { exporter: string; otlp: { endpoint: string }; toa: { trustedPeers: string[] }; export: { spoolDir: string } };
    t.is(eff.exporter, 'otlp');
    t.is(eff.otlp.endpoint, 'http://198.18.0.1:4318');
    t.true(eff.toa.trustedPeers.length > 0, 'trusted peers set (otlp refuses an empty list)');
    t.is(eff.export.spoolDir, '/var/lib/toa-otel/spool');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
