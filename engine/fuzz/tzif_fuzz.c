/*
 * libFuzzer target for the TZif parser (aps__tz_parse) and everything that
 * reads a parsed zone: UTC -> local, local -> UTC, candidates, transition
 * walking, lookups and formatting of the results.
 *
 * Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine/include \
 *       -iquote engine/src engine/fuzz/tzif_fuzz.c engine/src/tz.c \
 *       engine/src/timeutil.c -o /tmp/tzif_fuzz
 *   /tmp/tzif_fuzz -max_total_time=60 engine/fuzz/corpus/tzif
 * (-iquote, not -I: engine/src/sched.h would shadow the system <sched.h>.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tz.h"

#define US INT64_C(1000000)

/* Instants every input is probed at: the epoch, around 32-bit limits,
 * the end of the precomputed footer table (2201), far future and past. */
static const int64_t probes[] = {
    0,           -1,          2147483647,   -2147483648LL, 1710055800,  1730615400,
    4108692600,  7289654400,  7289654399,   16752033000,   -5364662400, 253402300799,
    -62135596800, 9223372036853LL, -9223372036853LL,
};

static void probe(const aps_tz *tz, aps_time t)
{
    aps_civil c;
    aps_time back, cand[2], next;
    int32_t off;
    int isdst[2], n, kind;
    const char *abbr;

    aps__tz_to_local(tz, t, &c, &off);
    aps__tz_lookup(tz, t, &off, &isdst[0], &abbr);
    if (strlen(abbr) > 64)
        abort();
    if (aps__tz_local_candidates(tz, &c, cand, isdst, &n) == 0) {
        if (n < 0 || n > 2)
            abort();
        if (n == 2 && cand[0] > cand[1])
            abort();
    }
    if (aps__tz_from_local(tz, &c, &back, &kind) == 0 && kind == APS_LOCAL_GAP &&
        t > -INT64_C(9000000000000) * US && t < INT64_C(9000000000000) * US)
        abort(); /* t itself shows c: never a gap */
    aps__tz_next_transition(tz, t, &next);
    if (next != APS_TIME_NONE && next <= t)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aps_tz *tz = NULL;
    aps_error err;
    size_t i;

    if (aps__tz_parse("fuzz", data, size, &tz, &err) != 0) {
        if (err.code != APS_EINVAL && err.code != APS_ENOMEM)
            abort();
        if (memchr(err.msg, '\0', sizeof(err.msg)) == NULL)
            abort();
        return 0;
    }
    for (i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
        probe(tz, probes[i] * US);
    /* Instants taken from the input itself hit its own transitions. */
    for (i = 0; i + 8 <= size && i < 64 * 8; i += 8) {
        uint64_t v = 0;
        memcpy(&v, data + i, 8);
        probe(tz, (aps_time)(v % (UINT64_C(600000000000) * US)) - INT64_C(300000000000) * US);
    }
    /* Walk a few transitions. */
    {
        aps_time t = -INT64_C(2208988800) * US, next;
        for (i = 0; i < 64; i++) {
            aps__tz_next_transition(tz, t, &next);
            if (next == APS_TIME_NONE)
                break;
            probe(tz, next);
            probe(tz, next - 1);
            t = next;
        }
    }
    aps__tz_free(tz);
    return 0;
}
