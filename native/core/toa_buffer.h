/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The event buffer, ring buffer (>= 5.8) or per-CPU perf buffers (older kernels),
 * behind one object that owns setup, new, poll, consume and free (after bcc
 * libbpf-tools compat.c). Internal to the C core.
 */
#ifndef TOA_BUFFER_H
#define TOA_BUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bpf_map;
struct ring_buffer;
struct perf_buffer;

/* one record; return non-zero to stop the current poll/consume early */
typedef int (*toa_buffer_sample_fn)(void *ctx, const void *data, size_t size);
typedef void (*toa_buffer_lost_fn)(void *ctx, int cpu, uint64_t count);

struct toa_buffer {
	bool ring;
	struct ring_buffer *rb;
	struct perf_buffer *pb;
	toa_buffer_sample_fn sample;
	toa_buffer_lost_fn lost;
	void *ctx;
	bool stopped; /* the sample callback asked to stop (ring buffer only) */
};

/* Whether this kernel has BPF ring buffers. */
bool toa_buffer_ring_available(void);
/* Before load: size `events` as a ring of ring_bytes, or turn it into per-CPU perf buffers. */
void toa_buffer_setup(struct toa_buffer *b, struct bpf_map *events, bool ring, uint32_t ring_bytes);
/* After load: create the reader. Returns 0 or -errno. */
int toa_buffer_open(struct toa_buffer *b, struct bpf_map *events, toa_buffer_sample_fn sample,
		    toa_buffer_lost_fn lost, void *ctx);
/* Wait up to timeout_ms, then deliver what is there; records delivered or -errno (never -EINTR). */
int toa_buffer_poll(struct toa_buffer *b, int timeout_ms);
/* Deliver what is buffered now without waiting; records delivered or -errno. */
int toa_buffer_consume(struct toa_buffer *b);
/* The fd the poll waits on (for tests that break the reader on purpose). */
int toa_buffer_epoll_fd(const struct toa_buffer *b);
void toa_buffer_free(struct toa_buffer *b);
const char *toa_buffer_kind(const struct toa_buffer *b);

#endif
