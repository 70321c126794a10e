/*
 * log.h - leveled logging to stderr: one line per message, with a UTC timestamp and the
 * level, so log files from several replicas can be merged by time.
 */
#ifndef PBFT_NODE_LOG_H
#define PBFT_NODE_LOG_H

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* log_set_level takes "debug", "info", "warn" or "error" (anything else: info). */
void log_set_level(const char *level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
