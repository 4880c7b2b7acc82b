/*
 * cron_fuzz.c: libFuzzer target for the cron trigger (parser and search).
 *
 * Input: a 6-byte header, then newline-separated fields.
 *   byte 0      bits 0-3: zone (index into `zones`); bit 4: crontab mode
 *               (the first field is a crontab string); bit 5: a start
 *               date; bit 6: an end date; bit 7: jitter
 *   bytes 1-4   `now`: minutes after 1970-01-01 (big-endian), which spans
 *               years 1970 to ~10136, past the year field's 9999
 *   byte 5      how far the start / end dates lie from now (days)
 *   rest        year, month, day, week, day_of_week, hour, minute, second,
 *               one per line; an empty line leaves the field out
 *
 * Creates the trigger, computes a first fire time and a few following
 * ones, and describes it. Must never crash, leak, or take long: every
 * search is bounded (see cron.h).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine/include \
 *     -Iengine/src engine/fuzz/cron_fuzz.c engine/src/\*.c -lcrypto -lm \
 *     -lpthread -o /tmp/cron_fuzz && /tmp/cron_fuzz engine/fuzz/corpus/cron
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "apsd/engine.h"

/* Zones with every kind of transition: none, DST gaps and folds at
 * various hours, 30-minute DST, negative DST, a skipped day, Ramadan. */
static const char *const zones[16] = {
    "UTC",           "America/New_York", "Europe/London",   "Europe/Dublin",
    "Australia/Lord_Howe", "America/Sao_Paulo", "Pacific/Apia", "Asia/Kathmandu",
    "Africa/Casablanca", "America/St_Johns", "Pacific/Chatham", "Antarctica/Troll",
    "America/Havana", "Asia/Tehran",     "America/Santiago", "Asia/Gaza",
};

#define FIELDS 8
#define MINUTE INT64_C(60000000)
#define DAY (INT64_C(86400) * 1000000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf, *p, *fields[FIELDS] = {NULL};
    aps_trigger_spec spec;
    aps_trigger *t = NULL;
    aps_time now, prev, next;
    aps_error err;
    char desc[64], big[4096];
    uint8_t flags, span;
    size_t i, n;

    if (size < 6 || size > 8192)
        return 0;
    flags = data[0];
    now = (aps_time)((uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 |
                     (uint32_t)data[3] << 8 | data[4]) * MINUTE;
    span = data[5];

    /* The fields, NUL-terminated copies. */
    buf = malloc(size - 6 + 1);
    if (!buf)
        return 0;
    memcpy(buf, data + 6, size - 6);
    buf[size - 6] = '\0';
    for (p = buf, n = 0; n < FIELDS; n++) {
        char *nl = strchr(p, '\n');

        if (nl)
            *nl = '\0';
        fields[n] = *p ? p : NULL;
        if (!nl)
            break;
        p = nl + 1;
    }

    memset(&spec, 0, sizeof spec);
    spec.kind = APS_TRIGGER_CRON;
    if (flags & 0x10) {
        spec.u.cron.crontab = fields[0] ? fields[0] : "";
    } else {
        spec.u.cron.year = fields[0];
        spec.u.cron.month = fields[1];
        spec.u.cron.day = fields[2];
        spec.u.cron.week = fields[3];
        spec.u.cron.day_of_week = fields[4];
        spec.u.cron.hour = fields[5];
        spec.u.cron.minute = fields[6];
        spec.u.cron.second = fields[7];
    }
    spec.u.cron.timezone = zones[flags & 0x0f];
    spec.u.cron.start_date = (flags & 0x20) ? now + (aps_time)span * DAY / 4 : APS_TIME_NONE;
    spec.u.cron.end_date = (flags & 0x40) ? now + (aps_time)span * DAY : APS_TIME_NONE;
    spec.jitter_us = (flags & 0x80) ? (aps_time)span * 1000000 : 0;

    memset(&err, 0, sizeof err);
    if (aps_trigger_create(&spec, NULL, now, &t, &err) == 0) {
        aps_trigger_seed(t, size);
        prev = APS_TIME_NONE;
        for (i = 0; i < 4; i++) {
            if (aps_trigger_next(t, prev, prev == APS_TIME_NONE ? now : prev, &next) != 0 ||
                next == APS_TIME_NONE)
                break;
            /* A fire time is never before the start it was searched from,
             * except in a fold where APScheduler's algorithm itself goes
             * back (Dublin's negative DST); never by more than a day. */
            if (prev != APS_TIME_NONE && next < prev - DAY)
                abort();
            prev = next;
        }
        aps_trigger_describe(t, desc, sizeof desc);
        aps_trigger_describe(t, big, sizeof big);
        aps_trigger_destroy(t);
    } else if (err.msg[0] == '\0' || memchr(err.msg, '\0', sizeof err.msg) == NULL) {
        abort(); /* every rejection explains itself */
    }
    free(buf);
    return 0;
}
