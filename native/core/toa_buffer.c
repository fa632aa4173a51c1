// SPDX-License-Identifier: Apache-2.0
/* The event buffer object: see toa_buffer.h. */
#include <errno.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "toa_buffer.h"

bool toa_buffer_ring_available(void)
{
	return libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) == 1;
}

void toa_buffer_setup(struct toa_buffer *b, struct bpf_map *events, bool ring, uint32_t ring_bytes)
{
	b->ring = ring;
	if (ring) {
		bpf_map__set_max_entries(events, ring_bytes);
		return;
	}
	/* kernels < 5.8: one perf buffer per CPU instead */
	bpf_map__set_type(events, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	bpf_map__set_key_size(events, 4);
	bpf_map__set_value_size(events, 4);
	bpf_map__set_max_entries(events, libbpf_num_possible_cpus());
}

static int on_ring_sample(void *ctx, void *data, size_t size)
{
	struct toa_buffer *b = ctx;
	int stop = b->sample(b->ctx, data, size);

	b->stopped = b->stopped || stop;
	return stop;
}

static void on_perf_sample(void *ctx, int cpu, void *data, __u32 size)
{
	struct toa_buffer *b = ctx;

	(void)cpu;
	b->sample(b->ctx, data, size); /* a perf buffer cannot stop mid-poll */
}

static void on_perf_lost(void *ctx, int cpu, __u64 count)
{
	struct toa_buffer *b = ctx;

	if (b->lost)
		b->lost(b->ctx, cpu, count);
}

int toa_buffer_open(struct toa_buffer *b, struct bpf_map *events, toa_buffer_sample_fn sample,
		    toa_buffer_lost_fn lost, void *ctx)
{
	int fd = bpf_map__fd(events);

	b->sample = sample;
	b->lost = lost;
	b->ctx = ctx;
	if (b->ring)
		b->rb = ring_buffer__new(fd, on_ring_sample, b, NULL);
	else
		b->pb = perf_buffer__new(fd, 64, on_perf_sample, on_perf_lost, b, NULL);
	if (!b->rb && !b->pb)
		return errno ? -errno : -EINVAL;
	return 0;
}

int toa_buffer_poll(struct toa_buffer *b, int timeout_ms)
{
	int n;

	b->stopped = false;
	if (b->rb) {
		/* records are written without a wakeup below the fill level, so epoll may
		 * time out with data waiting: always consume after the wait */
		n = ring_buffer__poll(b->rb, timeout_ms);
		if (n >= 0 && !b->stopped) {
			int m = ring_buffer__consume(b->rb);

			n = m < 0 ? m : n + m;
		}
	} else if (b->pb) {
		n = perf_buffer__poll(b->pb, timeout_ms);
	} else {
		n = -EINVAL;
	}
	return n == -EINTR ? 0 : n;
}

int toa_buffer_consume(struct toa_buffer *b)
{
	if (b->rb)
		return ring_buffer__consume(b->rb);
	if (b->pb)
		return perf_buffer__consume(b->pb);
	return -EINVAL;
}

int toa_buffer_epoll_fd(const struct toa_buffer *b)
{
	if (b->rb)
		return ring_buffer__epoll_fd(b->rb);
	if (b->pb)
		return perf_buffer__epoll_fd(b->pb);
	return -EINVAL;
}

void toa_buffer_free(struct toa_buffer *b)
{
	ring_buffer__free(b->rb);
	b->rb = NULL;
	perf_buffer__free(b->pb);
	b->pb = NULL;
}

const char *toa_buffer_kind(const struct toa_buffer *b)
{
	return b->ring ? "ringbuf" : "perfbuf";
}
