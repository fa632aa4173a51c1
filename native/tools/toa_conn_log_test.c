// SPDX-License-Identifier: Apache-2.0
/*
 * toa-conn-log-test: the reader of the connection table's per-CPU logs (native/core/
 * toa_conn_log.h) against a writer that does what bpf/toa_conntab.bpf.h conntab_log_write
 * does (fetch-add on the head, write the slot, publish seq last), in user space:
 *   order     records of two CPUs, applied once each, in order per CPU
 *   nested    a reserved slot not yet published (its writer interrupted by a nested one that
 *             published the next slot): the reader waits there, then reads both in order
 *   lapped    a reader a log and more behind: the overwritten records counted lost, the rest
 *             read, applied + lost = written
 *   stalled   a reserved slot never published, then lapped: counted lost, the reader goes on
 *   race      a writer thread and a reader thread on a log of 8 slots: every record applied
 *             is whole (no torn copy), numbers increase, applied + lost = written
 * Prints one line per case and exits 1 on the first failure (test/unit/conn-log.test.ts).
 *
 *   toa-conn-log-test [--race-ms 500]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "toa_conn_log.h"

static int failed;

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "FAIL %s:%d: ", __func__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                        \
			fprintf(stderr, "\n");                               \
			failed = 1;                                          \
			return;                                              \
		}                                                            \
	} while (0)

struct log {
	struct toa_conn_log_head *heads;
	struct toa_conn_log_slot *slots;
	struct toa_conn_log r;
};

static void log_init(struct log *l, uint32_t ncpu, uint32_t shift)
{
	l->heads = calloc(ncpu, sizeof(*l->heads));
	l->slots = calloc((size_t)ncpu << shift, sizeof(*l->slots));
	l->r = (struct toa_conn_log){ .heads = l->heads, .slots = l->slots, .cursor = calloc(ncpu, sizeof(uint64_t)),
				      .ncpu = ncpu, .shift = shift };
}

static void log_free(struct log *l)
{
	free(l->heads);
	free(l->slots);
	free(l->r.cursor);
}

/* The record of number n on a CPU: byte 0 the CPU, bytes 40..47 (accept_boot_ns) n, every
 * other byte derived from both, so that a copy mixing two records is seen. */
#define N_OFF 40
static uint8_t pattern(uint32_t cpu, uint64_t n, size_t i)
{
	return (uint8_t)(n * 131 + cpu * 17 + i * 7 + (n >> 8) * 3);
}

/* The writer's three steps (bpf/toa_conntab.bpf.h conntab_log_write) */
static uint64_t w_reserve(struct log *l, uint32_t cpu)
{
	return __atomic_fetch_add(&l->heads[cpu].head, 1, __ATOMIC_SEQ_CST);
}

static struct toa_conn_log_slot *w_slot(struct log *l, uint32_t cpu, uint64_t n)
{
	return &l->slots[((size_t)cpu << l->r.shift) | (n & ((1ULL << l->r.shift) - 1))];
}

static void w_fill(struct log *l, uint32_t cpu, uint64_t n)
{
	volatile uint8_t *b = (volatile uint8_t *)&w_slot(l, cpu, n)->rec;

	/* byte by byte: a copy in between is torn */
	b[0] = (uint8_t)cpu;
	for (size_t i = 0; i < 8; i++)
		b[N_OFF + i] = (uint8_t)(n >> (8 * i));
	for (size_t i = 1; i < sizeof(struct toa_conn_slot); i++)
		if (i < N_OFF || i >= N_OFF + 8)
			b[i] = pattern(cpu, n, i);
}

static void w_publish(struct log *l, uint32_t cpu, uint64_t n)
{
	__atomic_store_n(&w_slot(l, cpu, n)->seq, n + 1, __ATOMIC_RELEASE);
}

static void w_write(struct log *l, uint32_t cpu)
{
	uint64_t n = w_reserve(l, cpu);

	w_fill(l, cpu, n);
	w_publish(l, cpu, n);
}

/* What the reader applied: (cpu, n) per record, decoded from the bytes, and whether whole. */
struct applied {
	uint64_t count, torn, out_of_order;
	uint64_t last[2];     /* last n + 1 per CPU (0: none) */
	uint64_t got[64][2];  /* the first 64 records: (cpu, n) */
};

static int apply(void *ctx, void *rec, size_t size)
{
	struct applied *a = ctx;
	const uint8_t *b = rec;
	uint32_t cpu;
	uint64_t n = 0;

	int whole = size == sizeof(struct toa_conn_slot) && b[0] < 2;

	for (size_t i = 0; i < 8; i++)
		n |= (uint64_t)b[N_OFF + i] << (8 * i);
	for (size_t i = 1; i < size && whole; i++)
		whole = (i >= N_OFF && i < N_OFF + 8) || pattern(b[0], n, i) == b[i];
	if (!whole) {
		a->torn++;
		return 0;
	}
	cpu = b[0];
	if (a->last[cpu] && n + 1 <= a->last[cpu])
		a->out_of_order++;
	a->last[cpu] = n + 1;
	if (a->count < 64)
		a->got[a->count][0] = cpu, a->got[a->count][1] = n;
	a->count++;
	return 0;
}

static void test_order(void)
{
	struct log l;
	struct applied a = {};
	uint64_t lost = 0;

	log_init(&l, 2, 3);
	w_write(&l, 0);
	w_write(&l, 1);
	w_write(&l, 0);
	CHECK(toa_conn_log_read(&l.r, apply, &a, &lost) == 3, "applied %llu", (unsigned long long)a.count);
	CHECK(a.torn == 0 && lost == 0, "torn %llu lost %llu", (unsigned long long)a.torn, (unsigned long long)lost);
	CHECK(a.got[0][0] == 0 && a.got[0][1] == 0 && a.got[1][0] == 0 && a.got[1][1] == 1 && a.got[2][0] == 1 &&
		      a.got[2][1] == 0,
	      "order per CPU");
	CHECK(toa_conn_log_read(&l.r, apply, &a, &lost) == 0, "read twice");
	w_write(&l, 1);
	CHECK(toa_conn_log_read(&l.r, apply, &a, &lost) == 1 && a.got[3][0] == 1 && a.got[3][1] == 1, "the next one");
	log_free(&l);
	printf("order: ok\n");
}

static void test_nested(void)
{
	struct log l;
	struct applied a = {};
	uint64_t lost = 0, outer;

	log_init(&l, 1, 3);
	w_write(&l, 0);
	outer = w_reserve(&l, 0); /* the outer program reserved 1 ... */
	w_fill(&l, 0, outer);
	w_write(&l, 0);           /* ... a nested one wrote 2 */
	CHECK(toa_conn_log_read(&l.r, apply, &a, &lost) == 1 && a.got[0][1] == 0, "only 0 before 1 is published");
	CHECK(toa_conn_log_read(&l.r, apply, &a, &lost) == 0 && lost == 0, "waits at 1");
	w_publish(&l, 0, outer);
	CHECK(toa_conn_log_read(&l.r, apply, &a, &lost) == 2, "1 and 2 once 1 is published");
	CHECK(a.got[1][1] == 1 && a.got[2][1] == 2 && lost == 0 && a.torn == 0, "in order, none lost");
	log_free(&l);
	printf("nested: ok\n");
}

static void test_lapped(void)
{
	struct log l;
	struct applied a = {};
	uint64_t lost = 0, size = 8, written = 3 * size + 3;

	log_init(&l, 2, 3);
	for (uint64_t i = 0; i < written; i++)
		w_write(&l, 1);
	w_write(&l, 0);
	CHECK(toa_conn_log_read(&l.r, apply, &a, &lost) == size + 1, "applied %llu", (unsigned long long)a.count);
	CHECK(lost == written - size, "lost %llu", (unsigned long long)lost);
	CHECK(a.torn == 0 && a.out_of_order == 0, "whole and in order");
	CHECK(a.got[1][0] == 1 && a.got[1][1] == written - size && a.last[1] == written, "the last log of CPU 1");
	log_free(&l);
	printf("lapped: ok\n");
}

static void test_stalled(void)
{
	struct log l;
	struct applied a = {};
	uint64_t lost = 0, size = 8;

	log_init(&l, 1, 3);
	w_reserve(&l, 0); /* 0: reserved, never published */
	for (uint64_t i = 0; i < size + 1; i++)
		w_write(&l, 0); /* 1 .. size + 1: number size overwrote slot 0, size + 1 slot 1 */
	CHECK(toa_conn_log_read(&l.r, apply, &a, &lost) == size, "applied %llu", (unsigned long long)a.count);
	CHECK(lost == 2, "lost %llu (0 never published, 1 overwritten)", (unsigned long long)lost);
	CHECK(a.got[0][1] == 2 && a.last[0] == size + 2 && a.torn == 0, "2 .. size + 1 read");
	log_free(&l);
	printf("stalled: ok\n");
}

struct race {
	struct log l;
	volatile int stop;
	uint64_t written;
};

static void *race_writer(void *arg)
{
	struct race *r = arg;

	while (!r->stop) {
		w_write(&r->l, 0);
		r->written++;
	}
	return NULL;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_race(int ms)
{
	struct race r = {};
	struct applied a = {};
	uint64_t lost = 0, reads = 0;
	pthread_t w;
	double end;

	log_init(&r.l, 1, 3);
	pthread_create(&w, NULL, race_writer, &r);
	end = now_ms() + ms;
	while (now_ms() < end) {
		toa_conn_log_read(&r.l.r, apply, &a, &lost);
		reads++;
	}
	r.stop = 1;
	pthread_join(w, NULL);
	toa_conn_log_read(&r.l.r, apply, &a, &lost);
	printf("race: %llu written, %llu applied, %llu lost, %llu reads\n", (unsigned long long)r.written,
	       (unsigned long long)a.count, (unsigned long long)lost, (unsigned long long)reads);
	CHECK(a.torn == 0, "%llu torn records applied", (unsigned long long)a.torn);
	CHECK(a.out_of_order == 0, "%llu out of order", (unsigned long long)a.out_of_order);
	CHECK(a.count + lost == r.written, "applied + lost = %llu, written %llu", (unsigned long long)(a.count + lost),
	      (unsigned long long)r.written);
	CHECK(a.count > 0 && lost > 0, "the race was real: some read, some lapped");
	log_free(&r.l);
	printf("race: ok\n");
}

int main(int argc, char **argv)
{
	int race_ms = 500;

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--race-ms") && i + 1 < argc)
			race_ms = atoi(argv[++i]);
	test_order();
	test_nested();
	test_lapped();
	test_stalled();
	test_race(race_ms);
	return failed;
}
