/*
 * log.c - see log.h. The level is process-wide state written once at start-up, before any
 * thread is started; reads afterwards need no lock.
 */
#include "node/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int min_level = LOG_INFO;

void log_set_level(const char *level)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    min_level = LOG_INFO;
    for (int i = 0; i < 4; i++)
        if (strcmp(level, names[i]) == 0)
            min_level = i;
}

void log_msg(int level, const char *fmt, ...)
{
    static const char *const tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < min_level || level < 0 || level > 3)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char line[2048];
    int off = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                       tm.tm_sec, (long)(tv.tv_usec / 1000), tags[level]);
    va_list ap;
    va_start(ap, fmt);
    if (off > 0 && (size_t)off < sizeof line)
        vsnprintf(line + off, sizeof line - (size_t)off, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line); /* one write per line: lines from threads do not mix */
}
