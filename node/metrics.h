/*
 * metrics.h - Prometheus text exposition (format 0.0.4) for GET /metrics (design section 8):
 * a growable text buffer, and fixed-bucket histograms of seconds.
 */
#ifndef PBFT_NODE_METRICS_H
#define PBFT_NODE_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Upper bounds of the histogram buckets, in seconds (then +Inf): from a fast commit on one
 * machine (1 ms) to a view change at the 60 s timeout cap. */
#define MHIST_BUCKETS 15
extern const double mhist_bounds[MHIST_BUCKETS];

typedef struct {
    uint64_t le[MHIST_BUCKETS]; /* observations <= mhist_bounds[i] (not cumulative) */
    uint64_t count;
    double sum;
} mhist;

void mhist_observe(mhist *h, double seconds);

/* A text buffer that grows; after an allocation failure err is set and appends stop. */
typedef struct mtext {
    char *p;
    size_t len, cap;
    int err;
} mtext;

void mtext_printf(mtext *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* HELP and TYPE lines for a metric family. type: counter, gauge or histogram. */
void mtext_family(mtext *t, const char *name, const char *type, const char *help);
/* One gauge or counter family with a single unlabelled sample. */
void mtext_metric(mtext *t, const char *name, const char *type, const char *help, double v);
/* A histogram family (unlabelled): cumulative _bucket lines, _sum and _count. */
void mtext_hist(mtext *t, const char *name, const char *help, const mhist *h);
void mtext_free(mtext *t);

#endif
