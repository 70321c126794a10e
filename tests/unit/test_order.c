/*
 * test_order.c - the per-connection in-order hand-off (node/order.c) behind finding 16 of
 * docs/security.md: frames verified out of order still go on in their connection's arrival
 * order; dropped frames, unordered connections, slot reuse and the parking limit.
 */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/order.h"

struct item {
    uint32_t conn;
    uint32_t k; /* the sender's count on its connection */
};

struct sink {
    struct item got[64];
    size_t n;
};

static void collect(void *ctx, void *it)
{
    struct sink *s = ctx;
    assert_true(s->n < 64);
    s->got[s->n++] = *(struct item *)it;
}

static void done(order *o, order_tag t, uint32_t conn, uint32_t k, struct sink *s)
{
    struct item it = {conn, k};
    order_done(o, t, &it, collect, s);
}

/* Verified in reverse, handed on in arrival order; another connection is not held up. */
static void test_order_reverse_completion(void **state)
{
    (void)state;
    order *o = order_new(64, 16, sizeof(struct item));
    assert_non_null(o);
    order_tag a[4], b = order_arrive(o, 9);
    for (uint32_t k = 0; k < 4; k++)
        a[k] = order_arrive(o, 7);
    struct sink s = {.n = 0};
    done(o, a[3], 7, 3, &s);
    done(o, a[2], 7, 2, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(order_parked(o), 2);
    done(o, b, 9, 0, &s); /* connection 9 has nothing earlier: it goes on at once */
    assert_int_equal(s.n, 1);
    assert_int_equal(s.got[0].conn, 9);
    done(o, a[1], 7, 1, &s);
    assert_int_equal(s.n, 1);
    done(o, a[0], 7, 0, &s);
    assert_int_equal(s.n, 5);
    for (uint32_t k = 0; k < 4; k++) {
        assert_int_equal(s.got[1 + k].conn, 7);
        assert_int_equal(s.got[1 + k].k, k);
    }
    assert_int_equal(order_parked(o), 0);
    assert_int_equal(order_overflows(o), 0);
    order_free(o, NULL);
}

/* A dropped frame releases the ones behind it. */
static void test_order_dropped_frame(void **state)
{
    (void)state;
    order *o = order_new(64, 16, sizeof(struct item));
    order_tag t0 = order_arrive(o, 5), t1 = order_arrive(o, 5), t2 = order_arrive(o, 5);
    struct sink s = {.n = 0};
    done(o, t2, 5, 2, &s);
    order_done(o, t1, NULL, collect, &s); /* dropped, but out of order: parked as a gap */
    assert_int_equal(s.n, 0);
    order_done(o, t0, NULL, collect, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.got[0].k, 2);
    assert_int_equal(order_parked(o), 0);
    order_free(o, NULL);
}

/* Connection 0 (unknown) and a connection finding no free slot go on unordered. */
static void test_order_unordered(void **state)
{
    (void)state;
    order *o = order_new(1, 16, sizeof(struct item));
    order_tag z = order_arrive(o, 0);
    assert_int_equal(z.slot, ORDER_NONE);
    order_tag a = order_arrive(o, 1), b = order_arrive(o, 1);
    order_tag c = order_arrive(o, 2); /* the one slot is busy with connection 1 */
    assert_int_equal(c.slot, ORDER_NONE);
    struct sink s = {.n = 0};
    done(o, c, 2, 0, &s);
    done(o, z, 0, 0, &s);
    assert_int_equal(s.n, 2);
    done(o, b, 1, 1, &s);
    assert_int_equal(s.n, 2);
    done(o, a, 1, 0, &s);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.got[2].k, 0);
    assert_int_equal(s.got[3].k, 1);
    /* Idle now: connection 2 takes the slot, and is ordered. */
    order_tag d0 = order_arrive(o, 2), d1 = order_arrive(o, 2);
    assert_int_not_equal(d0.slot, ORDER_NONE);
    done(o, d1, 2, 1, &s);
    assert_int_equal(s.n, 4);
    done(o, d0, 2, 0, &s);
    assert_int_equal(s.n, 6);
    assert_int_equal(s.got[4].k, 0);
    assert_int_equal(s.got[5].k, 1);
    order_free(o, NULL);
}

/* At the parking limit the connection's order is given up up to the new frame; the frame
 * still out goes on late when it finishes, and nothing is lost or repeated. */
static void test_order_parking_limit(void **state)
{
    (void)state;
    order *o = order_new(64, 2, sizeof(struct item));
    order_tag t[6];
    for (uint32_t k = 0; k < 6; k++)
        t[k] = order_arrive(o, 3);
    struct sink s = {.n = 0};
    done(o, t[2], 3, 2, &s);
    done(o, t[1], 3, 1, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(order_parked(o), 2);
    done(o, t[4], 3, 4, &s); /* a third would exceed the limit */
    assert_int_equal(order_overflows(o), 1);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.got[0].k, 1);
    assert_int_equal(s.got[1].k, 2);
    assert_int_equal(s.got[2].k, 4);
    assert_int_equal(order_parked(o), 0);
    done(o, t[0], 3, 0, &s); /* late */
    assert_int_equal(s.n, 4);
    assert_int_equal(s.got[3].k, 0);
    done(o, t[5], 3, 5, &s);
    done(o, t[3], 3, 3, &s); /* late too: its place was given up */
    assert_int_equal(s.n, 6);
    assert_int_equal(s.got[4].k, 5);
    assert_int_equal(s.got[5].k, 3);
    order_free(o, NULL);
}

static int g_released;

static void count_release(void *it)
{
    (void)it;
    g_released++;
}

/* order_free hands back every item still parked (node_close frees their bytes). */
static void test_order_free_releases(void **state)
{
    (void)state;
    order *o = order_new(64, 16, sizeof(struct item));
    order_tag t0 = order_arrive(o, 4), t1 = order_arrive(o, 4), t2 = order_arrive(o, 4);
    (void)t0;
    struct sink s = {.n = 0};
    done(o, t2, 4, 2, &s);
    order_done(o, t1, NULL, collect, &s);
    g_released = 0;
    order_free(o, count_release);
    assert_int_equal(g_released, 1); /* the dropped one held no item */
}

/* Many connections, a random completion order with some frames dropped: each
 * connection's items come out in order and every kept item exactly once. */
enum { R_CONNS = 8, R_PER = 200, R_N = R_CONNS * R_PER };

struct rsink {
    uint32_t next[R_CONNS + 1]; /* per connection: the least k it may emit next */
    uint32_t total;
};

static void check_in_order(void *ctx, void *p)
{
    struct rsink *s = ctx;
    const struct item *it = p;
    assert_true(it->k >= s->next[it->conn]);
    s->next[it->conn] = it->k + 1;
    s->total++;
}

static void test_order_random(void **state)
{
    (void)state;
    order *o = order_new(16, R_N, sizeof(struct item));
    static order_tag tags[R_N];
    static struct item its[R_N];
    static uint32_t perm[R_N];
    for (uint32_t i = 0; i < R_N; i++) {
        uint32_t c = 1 + i % R_CONNS;
        its[i] = (struct item){c, i / R_CONNS};
        tags[i] = order_arrive(o, c);
        assert_int_not_equal(tags[i].slot, ORDER_NONE);
        perm[i] = i;
    }
    srand(42);
    for (uint32_t i = R_N - 1; i > 0; i--) {
        uint32_t j = (uint32_t)rand() % (i + 1), x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    struct rsink s;
    memset(&s, 0, sizeof s);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < R_N; i++) {
        bool drop = perm[i] % 7 == 3;
        kept += !drop;
        order_done(o, tags[perm[i]], drop ? NULL : &its[perm[i]], check_in_order, &s);
    }
    assert_int_equal(s.total, kept);
    assert_int_equal(order_parked(o), 0);
    assert_int_equal(order_overflows(o), 0);
    order_free(o, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_reverse_completion), cmocka_unit_test(test_order_dropped_frame),
        cmocka_unit_test(test_order_unordered),          cmocka_unit_test(test_order_parking_limit),
        cmocka_unit_test(test_order_free_releases),      cmocka_unit_test(test_order_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
