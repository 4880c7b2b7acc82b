/*
 * libFuzzer target for the store codec (codec.c) and the JSON syntax check
 * (job.c): whatever the bytes, decoding returns APS_ECORRUPT or a record
 * that re-encodes to exactly the same bytes (the format has one encoding
 * per value; an older format's record re-encodes to the current one,
 * stably), copies, and converts to a public job.
 *
 * Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine/include \
 *     -iquote engine/src engine/fuzz/record_fuzz.c engine/src/job.c \
 *     engine/src/codec.c engine/src/trigger.c engine/src/cron.c \
 *     engine/src/tz.c engine/src/timeutil.c -lcrypto -lm -o /tmp/record_fuzz
 *   mkdir -p /tmp/rc && /tmp/record_fuzz -max_total_time=30 /tmp/rc \
 *     engine/fuzz/corpus/record
 * (New inputs go to the first directory, so the checked-in seeds stay as
 * they are. -iquote, not -I: engine/src/sched.h must not shadow <sched.h>.)
 * Seeds: engine/fuzz/gen_record_corpus.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "apsd/engine.h"
#include "job.h"

static void
check_same(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen || memcmp(a, b, alen) != 0)
        abort();
}

static void
fuzz_record(const uint8_t *data, size_t size)
{
    aps__jobrec *r = NULL, *c = NULL;
    aps_job *j = NULL;
    void *buf = NULL;
    size_t len = 0;
    int rc;

    rc = aps__jobrec_decode(data, size, &r);
    if (rc == APS_ECORRUPT || rc == APS_ENOMEM) {
        if (r)
            abort();
        return;
    }
    if (rc != 0 || !r)
        abort();
    if (aps__jobrec_encode(r, &buf, &len) != 0)
        abort();
    if (data[0] != APS__JOBREC_FORMAT_V4) {
        /* An older record (V1 to V3) is re-encoded in the current format:
         * that one must then be stable. */
        aps__jobrec *again = NULL;
        void *buf2 = NULL;
        size_t len2 = 0;
        if (aps__jobrec_decode(buf, len, &again) != 0 ||
            aps__jobrec_encode(again, &buf2, &len2) != 0)
            abort();
        check_same(buf2, len2, buf, len);
        free(buf2);
        aps__jobrec_free(again);
    } else {
        check_same(buf, len, data, size);
    }
    if (aps__jobrec_copy(r, &c) == 0) {
        void *cbuf = NULL;
        size_t clen = 0;
        if (aps__jobrec_encode(c, &cbuf, &clen) != 0)
            abort();
        check_same(cbuf, clen, buf, len);
        free(cbuf);
        aps__jobrec_free(c);
    }
    free(buf);
    if (aps__job_from_rec(r, &j) == 0)
        aps_job_free(j);
    aps__jobrec_add_lateness(r, (int64_t)size);
    aps__jobrec_free(r);
}

static void
fuzz_event(const uint8_t *data, size_t size)
{
    aps_event *ev = NULL, *c = NULL;
    void *buf = NULL;
    size_t len = 0;
    int rc;

    rc = aps__event_decode(data, size, &ev);
    if (rc == APS_ECORRUPT || rc == APS_ENOMEM) {
        if (ev)
            abort();
        return;
    }
    if (rc != 0 || !ev)
        abort();
    if (aps__event_encode(ev, &buf, &len) != 0)
        abort();
    if (data[0] != APS__EVENT_FORMAT_V3) {
        /* An older record is re-encoded in the current format: that one
         * must then be stable. */
        aps_event *again = NULL;
        void *buf2 = NULL;
        size_t len2 = 0;
        if (aps__event_decode(buf, len, &again) != 0 ||
            aps__event_encode(again, &buf2, &len2) != 0)
            abort();
        check_same(buf2, len2, buf, len);
        free(buf2);
        aps_event_free(again);
    } else {
        check_same(buf, len, data, size);
    }
    free(buf);
    if (aps__event_copy(ev, &c) == 0)
        aps_event_free(c);
    (void)aps_event_type_name(ev->type);
    aps_event_free(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char top;
    size_t where;
    const char *why;

    fuzz_record(data, size);
    fuzz_event(data, size);
    /* The same bytes as JSON: must terminate with a verdict, never crash. */
    if (aps__json_check((const char *)data, size, &top, &where, &why) != 0 && where > size)
        abort();
    return 0;
}
