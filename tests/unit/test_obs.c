/*
 * test_obs.c - the node's observability pieces on their own: the JSON-lines event log
 * (node/events.c) and the Prometheus text helpers (node/metrics.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>

#include "node/events.h"
#include "node/metrics.h"

static long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

/* Every line is one JSON object with ts_ms, node, event and the fields; past the size bound
 * the log moves to FILE.1 and starts again, so the two files never hold much more than
 * twice the bound. */
static void test_events_lines_and_rotation(void **state)
{
    (void)state;
    const char *tmp = getenv("PBFT_TEST_TMPDIR");
    char path[600], old[620], err[256];
    snprintf(path, sizeof path, "%s/obs_events.jsonl", tmp != NULL ? tmp : "/tmp");
    snprintf(old, sizeof old, "%s.1", path);
    remove(path);
    remove(old);
    evlog *e;
    assert_int_equal(evlog_open(path, 4096, 7, &e, err, sizeof err), 0);
    for (int i = 0; i < 200; i++) {
        json_t *f = json_object();
        json_object_set_new(f, "view", json_integer(i));
        json_object_set_new(f, "text", json_string("a \"quoted\" text\nwith a newline"));
        evlog_emit(e, "view_change_start", f);
    }
    evlog_emit(NULL, "ignored", json_object()); /* a NULL log frees and does nothing */
    evlog_close(e);
    assert_true(file_size(path) > 0 && file_size(path) <= 4096);
    assert_true(file_size(old) > 0 && file_size(old) <= 4096);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    int n = 0, last_view = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        assert_non_null(o);
        assert_true(json_integer_value(json_object_get(o, "ts_ms")) > 0);
        assert_int_equal(json_integer_value(json_object_get(o, "node")), 7);
        assert_string_equal(json_string_value(json_object_get(o, "event")), "view_change_start");
        last_view = (int)json_integer_value(json_object_get(o, "view"));
        json_decref(o);
        n++;
    }
    fclose(f);
    assert_true(n > 5);
    assert_int_equal(last_view, 199); /* the newest lines are in the current file */
    /* An unwritable path is an error naming the file. */
    assert_int_equal(evlog_open("/nonexistent-dir/x.jsonl", 4096, 0, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent-dir/x.jsonl"));
}

/* Histogram buckets are cumulative, +Inf equals the count, and the sum adds up. */
static void test_metrics_histogram_text(void **state)
{
    (void)state;
    mhist h;
    memset(&h, 0, sizeof h);
    mhist_observe(&h, 0.0005); /* le 0.001 */
    mhist_observe(&h, 0.3);    /* le 0.5 */
    mhist_observe(&h, 100);    /* only +Inf */
    mhist_observe(&h, -1);     /* clamped to 0 */
    mtext t = {0};
    mtext_hist(&t, "x_seconds", "help text", &h);
    mtext_metric(&t, "y_total", "counter", "a counter", 5);
    assert_int_equal(t.err, 0);
    assert_non_null(strstr(t.p, "# HELP x_seconds help text\n# TYPE x_seconds histogram\n"));
    assert_non_null(strstr(t.p, "x_seconds_bucket{le=\"0.001\"} 2\n"));
    assert_non_null(strstr(t.p, "x_seconds_bucket{le=\"0.25\"} 2\n"));
    assert_non_null(strstr(t.p, "x_seconds_bucket{le=\"0.5\"} 3\n"));
    assert_non_null(strstr(t.p, "x_seconds_bucket{le=\"60\"} 3\n"));
    assert_non_null(strstr(t.p, "x_seconds_bucket{le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(t.p, "x_seconds_count 4\n"));
    assert_non_null(strstr(t.p, "x_seconds_sum 100.3005"));
    assert_non_null(strstr(t.p, "# TYPE y_total counter\ny_total 5\n"));
    mtext_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_lines_and_rotation),
        cmocka_unit_test(test_metrics_histogram_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
