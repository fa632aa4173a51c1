// Reused buffers for request bodies (src/traces/receiver.ts): a body read and an enriched body
// written per request would otherwise each be a new allocation of hundreds of KiB outside the V8
// heap, given back only by a full garbage collection (and counted against the heap's external
// memory, which brings those collections sooner).

/** Free ArrayBuffers of power-of-two sizes; bounded in count and bytes. */
export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  private freeBytes = 0;
  /** the ArrayBuffers this pool made: only those come back */
  private readonly own = new WeakSet<ArrayBufferLike>();

  constructor(
    /** sizes below this are not pooled (Node's own allocator pools small buffers) */
    private readonly minBytes = 64 * 1024,
    /** nor above this */
    private readonly maxBytes = 4 * 1024 * 1024,
    /** at most this many bytes wait in the free list */
    private readonly maxFreeBytes = 16 * 1024 * 1024,
  ) {}

  /** A buffer of exactly `size` bytes, contents undefined; give it back with give() when nothing uses it any more. */
  take(size: number): Buffer {
    if (size < this.minBytes || size > this.maxBytes) return Buffer.allocUnsafe(size);
    // the smallest that fits, of those the last given back: its memory is the likeliest to be in
    // the CPU's caches (a request's body is written into it and read from it at once)
    let best = -1;
    for (let i = this.free.length - 1; i >= 0; i--) {
      const l = this.free[i]!.byteLength;
      if (l >= size && (best < 0 || l < this.free[best]!.byteLength)) best = i;
    }
    if (best >= 0) {
      const ab = this.free[best]!;
      this.free.splice(best, 1);
      this.freeBytes -= ab.byteLength;
      return Buffer.from(ab, 0, size);
    }
    const ab = new ArrayBuffer(2 ** Math.ceil(Math.log2(size)));
    this.own.add(ab);
    return Buffer.from(ab, 0, size);
  }

  /** Gives back a buffer from take() (others are ignored). The caller must not use it afterwards. */
  give(b: Buffer | undefined): void {
    if (!b) return;
    const ab = b.buffer;
    if (!this.own.has(ab) || this.freeBytes + ab.byteLength > this.maxFreeBytes || this.free.includes(ab as ArrayBuffer)) return;
    this.free.push(ab as ArrayBuffer);
    this.freeBytes += ab.byteLength;
  }

  /** bytes waiting in the free list */
  get idleBytes(): number {
    return this.freeBytes;
  }
}
