/*
 * test_ledger.c - the ledger application (node/ledger.c) over a real RocksDB store:
 * receipts, a transaction committed twice (a Byzantine primary's re-proposal, or a
 * replayed REQUEST), which must keep its first receipt, and the execution rules
 * docs/protocol.md section 2.2 states for failed, zero-amount and self transfers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "consensus/msg.h"
#include "crypto/keys.h"
#include "node/ledger.h"
#include "storage/store.h"

static uint8_t g_chain[32], g_pk[32], g_sk[64], g_to[32];

static store *open_store(const char *name)
{
    const char *base = getenv("PBFT_TEST_TMPDIR");
    char dir[512], cmd[600];
    snprintf(dir, sizeof dir, "%s/test_ledger_%s", base != NULL ? base : "/tmp", name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    store *s = NULL;
    char err[512];
    if (store_open(dir, g_chain, &s, err, sizeof err) != STORE_OK)
        fail_msg("store_open: %s", err);
    return s;
}

static ledger *open_ledger(store *s)
{
    genesis g;
    memset(&g, 0, sizeof g);
    genesis_account acct;
    memcpy(acct.public_key, g_pk, 32);
    acct.balance = 1000;
    g.accounts = &acct;
    g.n_accounts = 1;
    memset(g.hash, 0x47, 32);
    ledger *l = NULL;
    uint8_t app[32];
    char err[512];
    if (ledger_open(s, &g, &l, app, err, sizeof err) != STORE_OK)
        fail_msg("ledger_open: %s", err);
    return l;
}

/* execute_block commits a block of the given transactions at height h, durably. */
static void execute_block(store *s, ledger *l, uint64_t h, const pbft_span *txs, uint32_t ntx)
{
    uint8_t blk[4096];
    size_t bn = 0;
    assert_int_equal(pbft_block_encode(h, 0, 0, 1700000000000u, txs, ntx, blk, sizeof blk, &bn),
                     PBFT_OK);
    pbft_block b;
    assert_int_equal(pbft_block_decode(blk, bn, &b), PBFT_OK);
    pbft_commit c;
    memset(&c, 0, sizeof c);
    c.seq = h;
    pbft_block_digest(&b, &c.d);
    c.block = (pbft_span){blk, bn};
    store_batch *batch = store_batch_new();
    assert_non_null(batch);
    uint8_t app[32];
    assert_int_equal(ledger_execute(l, &c, batch, app), STORE_OK);
    char err[512];
    assert_int_equal(store_write(s, batch, true, err, sizeof err), STORE_OK);
    ledger_written(l);
    store_batch_free(batch);
}

static void expect_receipt(store *s, const uint8_t *tx, size_t n, uint64_t height, uint32_t index,
                           int code)
{
    pbft_digest h;
    pbft_tx_hash(tx, n, &h);
    uint64_t got_h = 0;
    uint32_t got_i = 0;
    uint8_t got_c = 0xff;
    assert_int_equal(store_get_tx(s, &h, &got_h, &got_i, &got_c), STORE_OK);
    assert_int_equal(got_h, height);
    assert_int_equal(got_i, index);
    assert_int_equal(got_c, code);
}

static void make_tx(uint64_t nonce, uint64_t amount, uint8_t *out, size_t *n)
{
    assert_int_equal(pbft_tx_encode_transfer(g_chain, g_sk, nonce, g_to, amount, out, 512, n),
                     PBFT_OK);
}

/* The same transfer in a later block: the replay fails (bad_nonce, no state change) and the
 * receipt still says where and how it first executed. */
static void test_ledger_duplicate_in_later_block_keeps_first_receipt(void **state)
{
    (void)state;
    store *s = open_store("later");
    ledger *l = open_ledger(s);
    uint8_t t0[512], t1[512];
    size_t n0, n1;
    make_tx(0, 10, t0, &n0);
    make_tx(1, 5, t1, &n1);
    pbft_span b1[1] = {{t0, n0}};
    execute_block(s, l, 1, b1, 1);
    expect_receipt(s, t0, n0, 1, 0, LEDGER_OK);
    pbft_span b2[2] = {{t1, n1}, {t0, n0}}; /* a new transfer, then the replay */
    execute_block(s, l, 2, b2, 2);
    expect_receipt(s, t1, n1, 2, 0, LEDGER_OK);
    expect_receipt(s, t0, n0, 1, 0, LEDGER_OK); /* not height 2, not bad_nonce */
    uint64_t bal = 0, nonce = 0;
    assert_int_equal(ledger_account(l, g_pk, &bal, &nonce), STORE_OK);
    assert_int_equal(bal, 1000 - 10 - 5); /* paid once */
    assert_int_equal(nonce, 2);
    ledger_close(l);
    store_close(s);
}

/* Twice in one block, and in the same loop iteration's batch: the first copy's receipt. */
static void test_ledger_duplicate_in_same_block_keeps_first_receipt(void **state)
{
    (void)state;
    store *s = open_store("same");
    ledger *l = open_ledger(s);
    uint8_t t0[512];
    size_t n0;
    make_tx(0, 10, t0, &n0);
    pbft_span b1[2] = {{t0, n0}, {t0, n0}};
    execute_block(s, l, 1, b1, 2);
    expect_receipt(s, t0, n0, 1, 0, LEDGER_OK);
    uint64_t bal = 0, nonce = 0;
    assert_int_equal(ledger_account(l, g_pk, &bal, &nonce), STORE_OK);
    assert_int_equal(bal, 990);
    assert_int_equal(nonce, 1);
    ledger_close(l);
    store_close(s);
}

/* A transaction that fails for the first time gets its failure receipt (only a replay of an
 * executed one keeps the earlier receipt). */
static void test_ledger_failed_transaction_receipt(void **state)
{
    (void)state;
    store *s = open_store("failed");
    ledger *l = open_ledger(s);
    uint8_t t0[512];
    size_t n0;
    make_tx(0, 5000, t0, &n0); /* more than the balance */
    pbft_span b1[1] = {{t0, n0}};
    execute_block(s, l, 1, b1, 1);
    expect_receipt(s, t0, n0, 1, 0, LEDGER_INSUFFICIENT_FUNDS);
    ledger_close(l);
    store_close(s);
}

/* A transfer that failed bad_nonce (its predecessor had not executed: a reordering primary)
 * and is committed again once the nonce matches takes effect then, and its receipt must say
 * so: keeping the first, failed receipt would report bad_nonce for a transfer that moved
 * money, and a wallet would pay again. */
static void test_ledger_failed_then_executed_reports_ok(void **state)
{
    (void)state;
    store *s = open_store("retry");
    ledger *l = open_ledger(s);
    uint8_t t0[512], t1[512];
    size_t n0, n1;
    make_tx(0, 10, t0, &n0);
    make_tx(1, 5, t1, &n1);
    pbft_span b1[1] = {{t1, n1}}; /* nonce 1 before nonce 0 */
    execute_block(s, l, 1, b1, 1);
    expect_receipt(s, t1, n1, 1, 0, LEDGER_BAD_NONCE);
    pbft_span b2[3] = {{t0, n0}, {t1, n1}, {t1, n1}}; /* now in order, and once more */
    execute_block(s, l, 2, b2, 3);
    expect_receipt(s, t0, n0, 2, 0, LEDGER_OK);
    expect_receipt(s, t1, n1, 2, 1, LEDGER_OK); /* where it took effect */
    uint64_t bal = 0, nonce = 0;
    assert_int_equal(ledger_account(l, g_pk, &bal, &nonce), STORE_OK);
    assert_int_equal(bal, 1000 - 10 - 5);
    assert_int_equal(nonce, 2);
    ledger_close(l);
    store_close(s);
}

/* The same within one block: fails, its predecessor executes, the copy takes effect. */
static void test_ledger_failed_then_executed_same_block(void **state)
{
    (void)state;
    store *s = open_store("retry_same");
    ledger *l = open_ledger(s);
    uint8_t t0[512], t1[512];
    size_t n0, n1;
    make_tx(0, 10, t0, &n0);
    make_tx(1, 5, t1, &n1);
    pbft_span b1[3] = {{t1, n1}, {t0, n0}, {t1, n1}};
    execute_block(s, l, 1, b1, 3);
    expect_receipt(s, t1, n1, 1, 2, LEDGER_OK);
    expect_receipt(s, t0, n0, 1, 1, LEDGER_OK);
    ledger_close(l);
    store_close(s);
}

/* tx_to signs a transfer of amount from g_pk to `to` with the given nonce. */
static void tx_to(uint64_t nonce, const uint8_t to[32], uint64_t amount, uint8_t *out, size_t *n)
{
    assert_int_equal(pbft_tx_encode_transfer(g_chain, g_sk, nonce, to, amount, out, 512, n),
                     PBFT_OK);
}

static void expect_account(ledger *l, const uint8_t pk[32], uint64_t balance, uint64_t nonce)
{
    uint64_t b = 0, n = 0;
    assert_int_equal(ledger_account(l, pk, &b, &n), STORE_OK);
    assert_int_equal(b, balance);
    assert_int_equal(n, nonce);
}

/* As docs/protocol.md section 2.2 says: a failed transfer consumes its nonce (a copy, or
 * another transaction with that nonce, then fails bad_nonce); a zero-amount transfer is ok
 * and writes the recipient's account, balance unchanged; a transfer to the sender itself is
 * ok when the amount is covered and changes no balance, else insufficient_funds; each of
 * these uses the nonce. */
static void test_ledger_failed_zero_and_self_transfers_use_nonce(void **state)
{
    (void)state;
    store *s = open_store("zero_self");
    ledger *l = open_ledger(s);
    uint8_t t[7][512];
    size_t n[7];
    tx_to(0, g_to, 5000, t[0], &n[0]); /* more than the balance of 1000 */
    tx_to(0, g_to, 10, t[1], &n[1]);   /* nonce 0 again: used by the failure */
    tx_to(1, g_to, 0, t[2], &n[2]);    /* zero amount to an account that does not exist */
    tx_to(2, g_pk, 300, t[3], &n[3]);  /* to itself, covered */
    tx_to(3, g_pk, 5000, t[4], &n[4]); /* to itself, not covered */
    tx_to(4, g_pk, 0, t[5], &n[5]);    /* zero to itself */
    tx_to(5, g_to, 1000, t[6], &n[6]); /* the whole balance */
    pbft_span b1[7];
    for (int i = 0; i < 7; i++)
        b1[i] = (pbft_span){t[i], n[i]};
    execute_block(s, l, 1, b1, 7);
    expect_receipt(s, t[0], n[0], 1, 0, LEDGER_INSUFFICIENT_FUNDS);
    expect_receipt(s, t[1], n[1], 1, 1, LEDGER_BAD_NONCE);
    expect_receipt(s, t[2], n[2], 1, 2, LEDGER_OK);
    expect_receipt(s, t[3], n[3], 1, 3, LEDGER_OK);
    expect_receipt(s, t[4], n[4], 1, 4, LEDGER_INSUFFICIENT_FUNDS);
    expect_receipt(s, t[5], n[5], 1, 5, LEDGER_OK);
    expect_receipt(s, t[6], n[6], 1, 6, LEDGER_OK);
    expect_account(l, g_pk, 0, 6);
    expect_account(l, g_to, 1000, 0);
    /* The zero-amount transfer wrote the recipient's account before it held anything. */
    store *s2 = open_store("zero_only");
    ledger *l2 = open_ledger(s2);
    tx_to(0, g_to, 0, t[2], &n[2]);
    pbft_span b2[1] = {{t[2], n[2]}};
    execute_block(s2, l2, 1, b2, 1);
    expect_receipt(s2, t[2], n[2], 1, 0, LEDGER_OK);
    uint8_t key[33], *v = NULL;
    size_t vn = 0;
    key[0] = 'a';
    memcpy(key + 1, g_to, 32);
    assert_int_equal(store_state_get(s2, key, sizeof key, &v, &vn), STORE_OK);
    assert_int_equal(vn, 16);
    free(v);
    expect_account(l2, g_to, 0, 0);
    expect_account(l2, g_pk, 1000, 1);
    ledger_close(l2);
    store_close(s2);
    ledger_close(l);
    store_close(s);
}

int main(void)
{
    if (keys_init() != KEYS_OK)
        return 1;
    keys_sha256((const uint8_t *)"ledger-test", 11, g_chain);
    uint8_t seed[32] = {7}, seed2[32] = {9}, sk2[64];
    keys_from_seed(seed, g_pk, g_sk);
    keys_from_seed(seed2, g_to, sk2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ledger_duplicate_in_later_block_keeps_first_receipt),
        cmocka_unit_test(test_ledger_duplicate_in_same_block_keeps_first_receipt),
        cmocka_unit_test(test_ledger_failed_transaction_receipt),
        cmocka_unit_test(test_ledger_failed_then_executed_reports_ok),
        cmocka_unit_test(test_ledger_failed_then_executed_same_block),
        cmocka_unit_test(test_ledger_failed_zero_and_self_transfers_use_nonce),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
