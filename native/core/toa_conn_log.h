/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Reader of the connection table's per-CPU logs (bpf/toa_conntab.bpf.h conntab_log_write),
 * mapped into this process (read-only). Pure logic over two arrays, no libbpf: the C core
 * reads the kernel's maps with it, native/tools/toa_conn_log_test.c a simulated writer's.
 *
 * A writer on CPU c reserves record number n with a fetch-add on heads[c].head, writes the
 * slot n mod size of c's log, then publishes slot.seq = n + 1 with an ordered exchange. The
 * reader keeps a cursor per CPU (the next number it wants) and, per slot:
 *   - seq == cursor + 1: copies the record, then (after an acquire fence) reads the head. If
 *     number cursor + size was reserved meanwhile, a writer may have been rewriting the slot
 *     during the copy (it reserves before it writes): the copy is dropped and counted lost.
 *     Otherwise no writer touched the slot since the publication: the copy is whole.
 *   - else, if the head is more than a log ahead of the cursor, the records up to head - size
 *     were overwritten unread (the reader was lapped): counted lost, the cursor jumps.
 *   - else the record is not published yet (its writer is still at work, possibly interrupted
 *     by a nested program that published a later slot): stop there, read it next time.
 * Records of one CPU are applied in their order; every record is applied once or counted lost.
 */
#ifndef TOA_CONN_LOG_H
#define TOA_CONN_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "toa_conntab.h"

struct toa_conn_log {
	const struct toa_conn_log_head *heads; /* [ncpu] */
	const struct toa_conn_log_slot *slots; /* [ncpu << shift] */
	uint64_t *cursor;                      /* [ncpu]: next record number to read per CPU */
	uint32_t ncpu;
	uint32_t shift; /* log2 of the slots per CPU */
};

/* Same shape as libbpf's ring_buffer_sample_fn, so one apply function serves both readers. */
typedef int (*toa_conn_log_fn)(void *ctx, void *rec, size_t size);

/* Apply the records published since the last read, per CPU in order. Returns the records
 * applied; adds the records overwritten before they could be read to *lost. */
static inline uint64_t toa_conn_log_read(struct toa_conn_log *l, toa_conn_log_fn apply, void *ctx, uint64_t *lost)
{
	const uint64_t size = 1ULL << l->shift, mask = size - 1;
	uint64_t applied = 0;

	for (uint32_t cpu = 0; cpu < l->ncpu; cpu++) {
		const struct toa_conn_log_slot *base = l->slots + ((size_t)cpu << l->shift);
		const __u64 *headp = &l->heads[cpu].head;
		uint64_t cur = l->cursor[cpu];

		for (;;) {
			const struct toa_conn_log_slot *s = &base[cur & mask];
			struct toa_conn_slot rec;
			uint64_t head;

			if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) != cur + 1) {
				head = __atomic_load_n(headp, __ATOMIC_ACQUIRE);
				if (head - cur <= size)
					break; /* nothing new, or its writer is not done yet */
				*lost += head - size - cur; /* lapped: overwritten unread */
				cur = head - size;
				continue;
			}
			memcpy(&rec, &s->rec, sizeof(rec));
			__atomic_thread_fence(__ATOMIC_ACQUIRE); /* the copy's loads before the head's */
			head = __atomic_load_n(headp, __ATOMIC_RELAXED);
			if (head - cur > size) { /* cur + size reserved: the copy may be torn */
				(*lost)++;
				cur++;
				continue;
			}
			cur++;
			apply(ctx, &rec, sizeof(rec));
			applied++;
		}
		l->cursor[cpu] = cur;
	}
	return applied;
}

#endif /* TOA_CONN_LOG_H */
