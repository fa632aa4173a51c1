// Agent → gateway tier (otel-collector/fleet/): one agent with the loadbalancing exporter and two
// gateways, all the REAL collector built from builder-config.yaml on loopback ports. Records go
// into the agent over OTLP/HTTP (the sidecar's protocol; the sidecar itself adds nothing to the
// routing question); the gateways write what they keep to files. Checked:
//  - every record arrives, each real client (client.address) at exactly one gateway, both used;
//  - the gateway's filter drops the untrusted records, its transform stamps toa.gateway;
//  - SIGKILL of one gateway: the other keeps receiving its clients' records at once; the dead one's
//    records are retried by the agent (its own log counts the attempts per gateway) and arrive, on the
//    same gateway, when it is back; nothing is lost.
// Skipped (with the reason) when the collector is not built; FAIL under TOA_OTEL_REQUIRE_COLLECTOR=1.
import type { ExecutionContext } from 'ava';
import { freePort, startCollector, type Collector, type FlatLogRecord } from '../helpers/collector.js';
import { collectorGate, gatedTest } from '../helpers/privileged.js';
import { sendConnections, type TestConnection } from '../helpers/otlp-logs.js';

const ctest = gatedTest(collectorGate()).serial;
const CLIENTS = 40;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `n` trusted records spread over CLIENTS real clients, plus `untrusted` records the gateways drop. */
function batch(tag: string, n: number, untrusted: number): TestConnection[] {
  const out: TestConnection[] = [];
  for (let i = 0; i < n; i++) {
    out.push({ id: `${tag}-${i}`, peerPort: 40000 + i, toa: { ip: `198.19.${i % CLIENTS}.7`, port: 50000 + i, trusted: true } });
  }
  for (let i = 0; i < untrusted; i++) {
    out.push({ id: `${tag}-untrusted-${i}`, toa: { ip: `198.19.200.${i}`, port: 1000 + i, trusted: false } });
  }
  return out;
}

async function send(t: ExecutionContext, url: string, conns: TestConnection[]) {
  const r = await sendConnections(conns, { url });
  t.true(r.ok, `export to the agent failed: ${r.error}`);
}

/** Retry attempts the agent logged against one gateway (its exporter's "Will retry" lines). */
function retriesLogged(agent: Collector, endpoint: string): number {
  return agent.logs.split('\n').filter((l) => l.includes('Will retry') && l.includes(`"endpoint": "${endpoint}"`)).length;
}

const idsOf = (recs: FlatLogRecord[]) => new Set(recs.map((r) => String(r.attributes['test.id'])));
const clientsOf = (recs: FlatLogRecord[]) => new Set(recs.map((r) => String(r.attributes['client.address'])));

ctest('agent → two gateways: sticky per client, one gateway killed, its records retried and delivered', async (t) => {
  t.timeout(120_000);
  const gwA = await startCollector(t, { configFile: 'otel-collector/fleet/gateway.yaml', name: 'gateway-a', env: { TOA_OTEL_GATEWAY_NAME: 'a' } });
  const gwB = await startCollector(t, { configFile: 'otel-collector/fleet/gateway.yaml', name: 'gateway-b', env: { TOA_OTEL_GATEWAY_NAME: 'b' } });
  const gw = [gwA, gwB];
  const agent = await startCollector(t, {
    configFile: 'otel-collector/fleet/agent.yaml', name: 'agent',
    env: { TOA_OTEL_GATEWAYS: `[${gw.map((g) => g.grpcEndpoint).join(', ')}]`, TOA_OTEL_AGENT_METRICS_PORT: String(await freePort()) },
  });
  const all = async () => ([] as FlatLogRecord[]).concat(...await Promise.all(gw.map((g) => g.records())));
  const waitIds = async (want: Set<string>, ms: number, what: string) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const got = idsOf(await all());
      const missing = [...want].filter((id) => !got.has(id));
      if (missing.length === 0) return;
      if (Date.now() > deadline) {
        t.fail(`${what}: ${missing.length} of ${want.size} records missing after ${ms} ms (e.g. ${missing.slice(0, 3).join(', ')}); agent:\n${agent.tail(15)}`);
        throw new Error('records missing');
      }
      await sleep(200);
    }
  };

  // Phase 1: both gateways up.
  const first = batch('p1', 200, 10);
  await send(t, agent.logsUrl, first);
  const firstTrusted = new Set(first.filter((c) => c.toa?.trusted).map((c) => c.id));
  await waitIds(firstTrusted, 20_000, 'both gateways up');
  const owner = new Map<string, number>(); // client.address → gateway index
  for (const [i, g] of gw.entries()) {
    for (const r of await g.records()) {
      const client = String(r.attributes['client.address']);
      t.is(owner.get(client) ?? i, i, `client ${client} reached both gateways`);
      owner.set(client, i);
      t.is(r.attributes['toa.gateway'], i === 0 ? 'a' : 'b', 'the gateway transform stamps toa.gateway');
    }
  }
  t.is(owner.size, CLIENTS, 'every client arrived');
  const onB = [...owner.values()].filter((i) => i === 1).length;
  t.true(onB > 0 && onB < CLIENTS, `both gateways own clients (b: ${onB} of ${CLIENTS})`);
  t.false([...idsOf(await all())].some((id) => id.includes('untrusted')), 'the gateway filter dropped untrusted records');

  // Phase 2: gateway b crashes; records keep coming.
  await gwB.kill();
  const retriesBefore = retriesLogged(agent, gwB.grpcEndpoint);
  const second = batch('p2', 200, 0);
  await send(t, agent.logsUrl, second); // the agent accepts: its queues hold b's share
  const forA = new Set(second.filter((c) => owner.get(c.toa!.ip) === 0).map((c) => c.id));
  const forB = new Set(second.filter((c) => owner.get(c.toa!.ip) === 1).map((c) => c.id));
  await waitIds(forA, 20_000, 'gateway a while b is down');
  await sleep(3_000); // a few retry rounds against the dead gateway
  const gotDuring = idsOf(await gwA.records());
  t.false([...forB].some((id) => gotDuring.has(id)), "b's clients were not moved to a (static resolver)");
  const retries = retriesLogged(agent, gwB.grpcEndpoint) - retriesBefore;
  t.true(retries > 0, `the agent retried against the dead gateway (its log):\n${agent.tail(10)}`);

  // Gateway b is back on the same port: the retries deliver its clients' records there.
  await gwB.start();
  await waitIds(new Set([...forA, ...forB]), 40_000, 'after gateway b restarted');
  const b = await gwB.records();
  const p2OnB = b.filter((r) => forB.has(String(r.attributes['test.id'])));
  t.is(idsOf(p2OnB).size, forB.size, "all of b's phase-2 records arrived at b");
  for (const c of clientsOf(p2OnB)) t.is(owner.get(c), 1, `client ${c} stayed on gateway b`);
  const delivered = (await all()).filter((r) => String(r.attributes['test.id']).startsWith('p2-'));
  const duplicates = delivered.length - idsOf(delivered).size;
  const retriesTotal = retriesLogged(agent, gwB.grpcEndpoint) - retriesBefore;
  t.is(duplicates, 0, 'no record twice (the per-gateway queue retries only what failed)');
  t.log(`phase 2: ${second.length} records; ${forA.size} for gateway a, delivered while b was down;`
    + ` ${forB.size} for b, held in the agent's queue for b and retried (${retries} retry attempts logged while b was down,`
    + ` ${retriesTotal} in all), all delivered to b after its restart; ${idsOf(delivered).size}/${second.length} delivered, ${duplicates} duplicates`);
  const collectors: Collector[] = [agent, ...gw];
  for (const c of collectors) t.is(await c.stop(), 0, `${c.name} exits cleanly`);
});
