// SPDX-License-Identifier: Apache-2.0
// Turns the Kubernetes OpenAPI v3 spec (api/openapi-spec/v3/*.json of the k8s.io/kubernetes module)
// into the standalone, strict JSON schemas kubeconform reads: one file per kind,
// KIND[-GROUP]-VERSION.json (kubeconform's {{ .ResourceKind }}{{ .KindSuffix }} naming), every
// $ref resolved into "definitions" of the same file, and every object with declared properties
// closed (additionalProperties: false), so an unknown or misspelt field is an error, as it is
// for `kubectl apply --validate=strict`.
//   node openapi-to-jsonschema.mjs SPEC_DIR OUT_DIR
import { readdirSync, readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [specDir, outDir] = process.argv.slice(2);
if (!specDir || !outDir) {
  console.error('usage: node openapi-to-jsonschema.mjs SPEC_DIR OUT_DIR');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const REF = '#/components/schemas/';
/** Deep copy of a schema with refs pointed at #/definitions/ and objects closed; collects refs. */
function convert(node, refs) {
  if (Array.isArray(node)) return node.map((n) => convert(n, refs));
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === '$ref' && typeof v === 'string' && v.startsWith(REF)) {
      const name = v.slice(REF.length);
      refs.add(name);
      out.$ref = `#/definitions/${name}`;
    } else if (k === 'nullable') {
      // OpenAPI 3.0's nullable: handled below by widening the type
    } else {
      out[k] = convert(v, refs);
    }
  }
  if (node.nullable === true && typeof out.type === 'string') out.type = [out.type, 'null'];
  if (out.properties && out.additionalProperties === undefined && !out['x-kubernetes-preserve-unknown-fields']) {
    out.additionalProperties = false;
  }
  return out;
}

let files = 0;
for (const f of readdirSync(specDir).filter((n) => /^apis?__.*_openapi\.json$/.test(n))) {
  const schemas = JSON.parse(readFileSync(join(specDir, f), 'utf8')).components?.schemas ?? {};
  for (const [name, schema] of Object.entries(schemas)) {
    const gvks = schema['x-kubernetes-group-version-kind'];
    if (!Array.isArray(gvks) || gvks.length !== 1) continue; // list/option kinds shared by many groups
    const { group, version, kind } = gvks[0];
    const refs = new Set();
    const root = convert(schema, refs);
    const definitions = {};
    for (const queue = [...refs]; queue.length > 0;) {
      const r = queue.pop();
      if (definitions[r]) continue;
      if (!schemas[r]) throw new Error(`${f}: ${name} refers to ${r}, which is not in the spec`);
      const more = new Set();
      definitions[r] = convert(schemas[r], more);
      for (const m of more) if (!definitions[m]) queue.push(m);
    }
    // kubeconform matches apiVersion and kind itself; pin them here too
    const apiVersion = group ? `${group}/${version}` : version;
    root.properties.apiVersion = { type: 'string', enum: [apiVersion] };
    root.properties.kind = { type: 'string', enum: [kind] };
    root.required = [...new Set([...(root.required ?? []), 'apiVersion', 'kind'])];
    root.definitions = definitions;
    root.$schema = 'http://json-schema.org/draft-07/schema#';
    const suffix = (group ? `-${group.split('.')[0]}` : '') + `-${version}`;
    writeFileSync(join(outDir, `${kind.toLowerCase()}${suffix}.json`), JSON.stringify(root));
    files++;
  }
}
if (files === 0) {
  console.error(`no kinds found in ${specDir}`);
  process.exit(1);
}
console.log(`${files} schemas written to ${outDir}`);
