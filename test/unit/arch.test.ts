// The build's target arch: scripts/arch.sh names it for the build, package and kernel-matrix
// scripts, and the kretprobe's bytecode follows it (bpf/vmlinux_min.h: x86 pt_regs->ax, arm64
// user_pt_regs.regs[0]). Needs bash and clang (scripts/setup.sh installs clang for every build).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function resolveArch(name: string) {
  const r = spawnSync('bash', ['-c', '. scripts/arch.sh && resolve_arch "$1" && echo "$ARCH $RPM_ARCH $NODE_ARCH $TRIPLET cross=$CROSS qemu=$QEMU_USER"', 'x', name], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  return { status: r.status, out: r.stdout.trim(), err: r.stderr.trim() };
}

test('resolve_arch names each arch for Debian, rpm, Node and GNU, and cross-builds only a foreign one', (t) => {
  const host = process.arch === 'arm64' ? 'arm64' : 'amd64';
  const amd64 = host === 'amd64' ? 'cross= qemu=' : 'cross=x86_64-linux-gnu qemu=qemu-x86_64-static';
  const arm64 = host === 'arm64' ? 'cross= qemu=' : 'cross=aarch64-linux-gnu qemu=qemu-aarch64-static';
  for (const name of ['amd64', 'x64', 'x86_64']) t.is(resolveArch(name).out, `amd64 x86_64 x64 x86_64-linux-gnu ${amd64}`, name);
  for (const name of ['arm64', 'aarch64']) t.is(resolveArch(name).out, `arm64 aarch64 arm64 aarch64-linux-gnu ${arm64}`, name);
  t.true(resolveArch('host').out.startsWith(`${host} `));
  t.true(resolveArch('host').out.includes('cross= '));
});

test('resolve_arch refuses an unknown arch and names the allowed ones', (t) => {
  const r = resolveArch('riscv64');
  t.not(r.status, 0);
  t.is(r.err, "unsupported architecture 'riscv64' (allowed: host, amd64, arm64)");
  const b = spawnSync('bash', ['scripts/build-native.sh', '--arch', 'mips'], { cwd: ROOT, encoding: 'utf8' });
  t.is(b.status, 2);
  t.regex(b.stderr, /unsupported architecture 'mips'/);
});

/** The 8-byte instructions of one ELF64 little-endian section, by name. */
function sectionInsns(elf: Buffer, name: string): Buffer {
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  const sh = (i: number) => {
    const o = shoff + i * shentsize;
    return { name: elf.readUInt32LE(o), off: Number(elf.readBigUInt64LE(o + 0x18)), size: Number(elf.readBigUInt64LE(o + 0x20)) };
  };
  const strtab = sh(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const s = sh(i);
    const start = strtab.off + s.name;
    if (elf.toString('latin1', start, elf.indexOf(0, start)) === name) return elf.subarray(s.off, s.off + s.size);
  }
  throw new Error(`no section ${name}`);
}

// The loads (BPF_LDX | BPF_MEM | BPF_DW) from the context in the program's first straight-line
// block: r1 holds the context on entry, `rX = r1` copies it, any other write to a register drops
// it; the block ends at the first jump or helper call. That is where BPF_KRETPROBE reads the
// return value.
function ctxLoadOffsets(insns: Buffer): number[] {
  const offs: number[] = [];
  const ctx = new Set([1]);
  for (let i = 0; i + 8 <= insns.length; i += 8) {
    const code = insns.readUInt8(i);
    const dst = insns.readUInt8(i + 1) & 0xf;
    const src = insns.readUInt8(i + 1) >> 4;
    const cls = code & 7;
    if (cls === 5 || cls === 6) break; // BPF_JMP, BPF_JMP32 (calls too)
    if (code === 0x79 && ctx.has(src)) offs.push(insns.readInt16LE(i + 2));
    if (code === 0xbf && ctx.has(src)) ctx.add(dst); // BPF_ALU64 | BPF_MOV | BPF_X
    else if ([0, 1, 4, 7].includes(cls)) ctx.delete(dst); // BPF_LD, BPF_LDX, BPF_ALU, BPF_ALU64
  }
  return offs;
}

test('the kretprobe reads the return value from the target arch registers (x86 ax, arm64 regs[0])', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'toa-arch-'));
  try {
    const got: Record<string, number[]> = {};
    for (const arch of ['x86', 'arm64']) {
      const obj = join(dir, `${arch}.o`);
      // asm/types.h of the build machine: vmlinux_min.h needs only the fixed-size integer types
      const multiarch = spawnSync('gcc', ['-print-multiarch'], { encoding: 'utf8' }).stdout.trim() || 'x86_64-linux-gnu';
      const r = spawnSync('clang', ['-g', '-O2', '-target', 'bpf', `-D__TARGET_ARCH_${arch}`, `-I/usr/include/${multiarch}`, '-Ibpf', '-c', 'bpf/toa.bpf.c', '-o', obj], {
        cwd: ROOT,
        encoding: 'utf8',
      });
      t.is(r.status, 0, r.stderr);
      got[arch] = ctxLoadOffsets(sectionInsns(readFileSync(obj), 'kretprobe/inet_csk_accept'));
    }
    // x86 struct pt_regs: ax is the 11th unsigned long; arm64 user_pt_regs: regs[0] first
    t.deepEqual(got, { x86: [80], arm64: [0] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
