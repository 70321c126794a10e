/*
 * events.c - the JSON-lines event log (see events.h).
 */
#include "node/events.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node/log.h"

struct evlog {
    pthread_mutex_t mu;
    FILE *f;
    char *path;
    uint64_t size, max_bytes;
    unsigned node_id;
    uint64_t dropped; /* lines not written (I/O error) */
};

int evlog_open(const char *path, uint64_t max_bytes, unsigned node_id, evlog **out, char *err,
               size_t errlen)
{
    *out = NULL;
    evlog *e = calloc(1, sizeof *e);
    if (e == NULL || (e->path = strdup(path)) == NULL) {
        free(e);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->f = fopen(path, "a");
    if (e->f == NULL) {
        snprintf(err, errlen, "%s: cannot open the event log: %s", path, strerror(errno));
        free(e->path);
        free(e);
        return -1;
    }
    long at = ftell(e->f);
    e->size = at > 0 ? (uint64_t)at : 0;
    e->max_bytes = max_bytes;
    e->node_id = node_id;
    pthread_mutex_init(&e->mu, NULL);
    *out = e;
    return 0;
}

void evlog_close(evlog *e)
{
    if (e == NULL)
        return;
    if (e->f != NULL)
        fclose(e->f);
    pthread_mutex_destroy(&e->mu);
    free(e->path);
    free(e);
}

/* rotate: FILE -> FILE.1, and a fresh FILE. Under mu. */
static void rotate(evlog *e)
{
    char old[4200];
    snprintf(old, sizeof old, "%s.1", e->path);
    fclose(e->f);
    if (rename(e->path, old) != 0)
        log_msg(LOG_WARN, "event log: cannot rename %s: %s", e->path, strerror(errno));
    e->f = fopen(e->path, "a");
    e->size = 0;
    if (e->f == NULL)
        log_msg(LOG_WARN, "event log: cannot reopen %s: %s", e->path, strerror(errno));
}

void evlog_emit(evlog *e, const char *event, json_t *fields)
{
    if (e == NULL) {
        json_decref(fields);
        return;
    }
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    uint64_t ms = (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
    /* Fixed keys first, so lines read well with grep. */
    json_t *o = json_object();
    json_object_set_new(o, "ts_ms", json_integer((json_int_t)ms));
    json_object_set_new(o, "node", json_integer(e->node_id));
    json_object_set_new(o, "event", json_string(event));
    if (fields != NULL) {
        json_object_update(o, fields);
        json_decref(fields);
    }
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (line == NULL)
        return;
    size_t len = strlen(line);
    pthread_mutex_lock(&e->mu);
    if (e->f != NULL && e->size + len + 1 > e->max_bytes && e->size > 0)
        rotate(e);
    if (e->f != NULL && fprintf(e->f, "%s\n", line) > 0 && fflush(e->f) == 0)
        e->size += len + 1;
    else
        e->dropped++;
    pthread_mutex_unlock(&e->mu);
    free(line);
}
