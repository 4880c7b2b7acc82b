/**
 * @file log.h
 * @brief Structured log lines on stderr, one per call (logfmt):
 *        `ts=2026-01-02T03:04:05.123456Z level=info msg="listening" addr=...`.
 *
 * Thread-safe: each line is written with one write(2) under a lock, so lines
 * from several threads never interleave.
 */
#ifndef APSD_SERVICE_LOG_H
#define APSD_SERVICE_LOG_H

#include <stddef.h>

typedef enum aps_log_level {
    APS_LOG_DEBUG = 0,
    APS_LOG_INFO = 1,
    APS_LOG_WARN = 2,
    APS_LOG_ERROR = 3,
} aps_log_level;

/** Lines below `level` are dropped. Default: APS_LOG_INFO. */
void aps_log_set_level(aps_log_level level);

/** Parses `debug`, `info`, `warn` (or `warning`), `error`. @return 0 or -1. */
int aps_log_level_parse(const char *text, aps_log_level *out);

/**
 * Writes one line. `msg` is quoted as needed; `kv` is a printf format for the
 * rest of the line (`key=value` pairs separated by spaces; NULL = none).
 * Values that may contain spaces or quotes should go through aps_log_q.
 */
void aps_log(aps_log_level level, const char *msg, const char *kv, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Quotes `s` for a logfmt value into `buf` (always NUL-terminated; truncated
 * to `len`): bare if it has no space, quote, '=' or control character, else
 * in double quotes with `"` `\` and control characters escaped.
 * @return buf.
 */
const char *aps_log_q(const char *s, char *buf, size_t len);

/** SIGHUP: reopens the log. Logs go to stderr, which is never reopened, so
 *  this only notes the request. */
void aps_log_reopen(void);

#endif /* APSD_SERVICE_LOG_H */
