/*
 * metrics.c - Prometheus text exposition helpers (see metrics.h).
 */
#include "node/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const double mhist_bounds[MHIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                            0.5,   1,      2.5,   5,    10,    30,   60};

void mhist_observe(mhist *h, double seconds)
{
    if (seconds < 0)
        seconds = 0;
    for (int i = 0; i < MHIST_BUCKETS; i++)
        if (seconds <= mhist_bounds[i]) {
            h->le[i]++;
            break;
        }
    h->count++;
    h->sum += seconds;
}

void mtext_printf(mtext *t, const char *fmt, ...)
{
    if (t->err)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->p != NULL ? t->p + t->len : NULL, t->p != NULL ? t->cap - t->len : 0,
                          fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->err = 1;
            return;
        }
        if (t->p != NULL && t->len + (size_t)k < t->cap) {
            t->len += (size_t)k;
            return;
        }
        size_t cap = t->cap ? t->cap * 2 : 8192;
        while (cap < t->len + (size_t)k + 1)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (p == NULL) {
            t->err = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
}

void mtext_family(mtext *t, const char *name, const char *type, const char *help)
{
    mtext_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void mtext_metric(mtext *t, const char *name, const char *type, const char *help, double v)
{
    mtext_family(t, name, type, help);
    mtext_printf(t, "%s %.17g\n", name, v);
}

void mtext_hist(mtext *t, const char *name, const char *help, const mhist *h)
{
    mtext_family(t, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < MHIST_BUCKETS; i++) {
        cum += h->le[i];
        mtext_printf(t, "%s_bucket{le=\"%g\"} %llu\n", name, mhist_bounds[i],
                     (unsigned long long)cum);
    }
    mtext_printf(t, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    mtext_printf(t, "%s_sum %.17g\n", name, h->sum);
    mtext_printf(t, "%s_count %llu\n", name, (unsigned long long)h->count);
}

void mtext_free(mtext *t)
{
    free(t->p);
    t->p = NULL;
    t->len = t->cap = 0;
}
