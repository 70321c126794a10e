/*
 * events.h - the node's event log (design section 8): one JSON object per line, appended to
 * log.event_log, for the things an operator or a scenario runner times: view changes,
 * NEW-VIEWs, the first commit in a view, stable checkpoints, state transfer, peers coming
 * and going, and Byzantine actions. Every line has ts_ms (Unix time in ms), node and event.
 *
 * The file is bounded: past log.event_log_max_bytes it is renamed to FILE.1 (replacing the
 * previous one) and a new file is started. Lines are flushed, not synced: this is a
 * diagnostic record, not state. Thread-safe.
 */
#ifndef PBFT_NODE_EVENTS_H
#define PBFT_NODE_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct evlog evlog;

/* evlog_open opens (appending) path; returns 0, or -1 with err filled. */
int evlog_open(const char *path, uint64_t max_bytes, unsigned node_id, evlog **out, char *err,
               size_t errlen);
void evlog_close(evlog *e);

/* evlog_emit writes {"ts_ms":..,"node":..,"event":event, ...fields} and takes ownership of
 * fields (an object, or NULL). Safe on a NULL log (then it only frees fields). */
void evlog_emit(evlog *e, const char *event, json_t *fields);

#endif
