// What the running sidecar keeps after attach (src/caps.ts), as pure functions; the drop itself
// runs in test/e2e/least-privilege.test.ts with real capabilities.
import test from 'ava';
import { capMask, capNames, runtimeCapabilities } from '../../src/caps.js';

test('capability masks and names match linux/capability.h', (t) => {
  t.is(capMask(['CAP_DAC_READ_SEARCH', 'CAP_SYS_PTRACE']), 0x80004);
  t.is(capMask(['CAP_BPF', 'CAP_PERFMON', 'CAP_NET_ADMIN', 'CAP_SYS_PTRACE', 'CAP_DAC_READ_SEARCH']), 0xc000081004);
  t.deepEqual(capNames(0x8000080004), ['CAP_DAC_READ_SEARCH', 'CAP_SYS_PTRACE', 'CAP_BPF']);
  t.deepEqual(capNames(2 ** 45), ['CAP_45']);
});

test('kept after attach: enrichment needs ptrace + dac_read_search, CAP_BPF only behind the bpf() gate', (t) => {
  t.deepEqual(capNames(runtimeCapabilities({ enrich: true, bpfGate: false, kernelHasCapBpf: true })), ['CAP_DAC_READ_SEARCH', 'CAP_SYS_PTRACE']);
  t.deepEqual(capNames(runtimeCapabilities({ enrich: true, bpfGate: true, kernelHasCapBpf: true })), ['CAP_DAC_READ_SEARCH', 'CAP_SYS_PTRACE', 'CAP_BPF']);
  t.deepEqual(capNames(runtimeCapabilities({ enrich: false, bpfGate: true, kernelHasCapBpf: false })), ['CAP_SYS_ADMIN']);
  t.is(runtimeCapabilities({ enrich: false, bpfGate: false, kernelHasCapBpf: true }), 0, 'nothing at all');
});
