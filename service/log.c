/* Structured (logfmt) log lines on stderr. */
#include "service/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static aps_log_level log_min = APS_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void
aps_log_set_level(aps_log_level level)
{
    log_min = level;
}

int
aps_log_level_parse(const char *text, aps_log_level *out)
{
    if (text == NULL)
        return -1;
    for (int i = 0; i < 4; i++) {
        if (strcmp(text, level_names[i]) == 0) {
            *out = (aps_log_level)i;
            return 0;
        }
    }
    if (strcmp(text, "warning") == 0) {
        *out = APS_LOG_WARN;
        return 0;
    }
    return -1;
}

const char *
aps_log_q(const char *s, char *buf, size_t len)
{
    size_t o = 0;
    int quote = 0;

    if (len == 0)
        return buf;
    if (s == NULL)
        s = "";
    if (s[0] == '\0')
        quote = 1;
    for (const char *p = s; *p && !quote; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= ' ' || ch == '"' || ch == '=' || ch == '\\' || ch == 0x7f)
            quote = 1;
    }
    if (!quote) {
        snprintf(buf, len, "%s", s);
        return buf;
    }
    /* Room for the closing quote and the NUL is kept at every step. */
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 2 < len)                                                                           \
            buf[o++] = (ch);                                                                       \
    } while (0)
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            PUT('\\');
            PUT((char)*p);
        } else if (*p == '\n') {
            PUT('\\');
            PUT('n');
        } else if (*p < ' ' || *p == 0x7f) {
            char hex[8];
            snprintf(hex, sizeof hex, "\\x%02x", *p);
            for (const char *h = hex; *h; h++)
                PUT(*h);
        } else {
            PUT((char)*p);
        }
    }
#undef PUT
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void
aps_log(aps_log_level level, const char *msg, const char *kv, ...)
{
    char line[4096], ts[64], q[1024];
    struct timespec now;
    struct tm tm;
    size_t n;
    int w;

    if (level < log_min)
        return;
    if ((int)level < 0 || level > APS_LOG_ERROR)
        level = APS_LOG_ERROR;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    w = snprintf(line, sizeof line, "ts=%s.%06ldZ level=%s msg=%s", ts, now.tv_nsec / 1000,
                 level_names[level], aps_log_q(msg, q, sizeof q));
    n = w < 0 ? 0 : (size_t)w >= sizeof line ? sizeof line - 1 : (size_t)w;
    if (kv != NULL && kv[0] != '\0' && n + 2 < sizeof line) {
        va_list ap;
        line[n++] = ' ';
        va_start(ap, kv);
        w = vsnprintf(line + n, sizeof line - n, kv, ap);
        va_end(ap);
        if (w > 0)
            n += (size_t)w >= sizeof line - n ? sizeof line - n - 1 : (size_t)w;
    }
    if (n >= sizeof line - 1)
        n = sizeof line - 2;
    line[n++] = '\n';
    pthread_mutex_lock(&log_mu);
    ssize_t r = write(STDERR_FILENO, line, n);
    (void)r;
    pthread_mutex_unlock(&log_mu);
}

void
aps_log_reopen(void)
{
    aps_log(APS_LOG_INFO, "SIGHUP: logs go to stderr, nothing to reopen", NULL);
}
