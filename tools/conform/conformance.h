/**
 * @file conformance.h
 * @brief The trigger conformance runner (library part).
 *
 * Reads test vectors in the format of `shared/conformance/README.md` (one
 * JSON object per line: `id`, `trigger`, `now`, and `expect` or
 * `"error": true`), runs each through the engine's triggers and reports the
 * vectors whose fire times differ. The `trigger` object is the proto JSON
 * form of apsd.v1.Trigger, so both the field names of the proto
 * (`day_of_week`, `start_date`, `all_of`) and their lowerCamelCase JSON
 * names (`dayOfWeek`, `startDate`, `allOf`) are accepted.
 *
 * A vector passes when:
 * - with `expect`: the trigger is created, t1 = next(NONE, now) and
 *   t(k+1) = next(tk, tk) equal the expected instants, and, when fewer than
 *   8 are expected, the next one after them is APS_TIME_NONE;
 * - with `"error": true`: creating the trigger, or computing t1, fails.
 *
 * Used by tools/conformance (main.c) and by the conformance cc_test.
 */
#ifndef APSD_TOOLS_CONFORMANCE_H
#define APSD_TOOLS_CONFORMANCE_H

#include <stddef.h>
#include <stdio.h>

#include "apsd/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The most fire times a vector lists (the README's "up to 8"). */
#define APS_CONFORM_MAX_EXPECT 8

/** Longest line accepted in a vector file, in bytes. */
#define APS_CONFORM_LINE_MAX (1024 * 1024)

/** The outcome of one vector. */
typedef enum aps_conform_outcome {
    APS_CONFORM_PASS = 0,
    APS_CONFORM_FAIL = 1,
    /**
     * Failed, and the expected times show UTC offsets that this machine's
     * tzdata does not give for those instants in the trigger's zone: the
     * oracle ran with different tzdata, so the vector cannot be judged
     * here. Counted as a failure all the same.
     */
    APS_CONFORM_FAIL_TZDATA = 2,
} aps_conform_outcome;

/** Running totals, to be zero-initialized by the caller. */
typedef struct aps_conform_stats {
    size_t passed; /**< vectors that passed */
    size_t failed; /**< vectors that failed, including unreadable ones */
    size_t tzdata; /**< of the failed, those with APS_CONFORM_FAIL_TZDATA */
} aps_conform_stats;

/**
 * Runs one vector.
 * @param[in]  line    the JSON text of the vector (need not be
 *                     NUL-terminated); borrowed.
 * @param[in]  len     its length in bytes.
 * @param[in]  report  where a failing vector is described (its id, the
 *                     expected and the actual times in RFC 3339 in the
 *                     trigger's zone); NULL = silent.
 * @param[out] outcome the outcome. A malformed vector (bad JSON, unknown
 *                     keys, bad timestamps) fails and is reported as such.
 * @return 0, or APS_ENOMEM (then `*outcome` is APS_CONFORM_FAIL).
 */
int aps_conform_run_vector(const char *line, size_t len, FILE *report,
                           aps_conform_outcome *outcome);

/**
 * Runs every non-blank line of a JSONL file as a vector and adds the
 * outcome to `stats`. Does not print the totals.
 * @param[in]     path    the file; borrowed.
 * @param[in]     report  as aps_conform_run_vector().
 * @param[in,out] stats   totals to add to.
 * @param[out]    err     optional; the message when the file cannot be read.
 * @return 0; APS_ENOENT or APS_EIO if the file cannot be opened or read;
 *         APS_ELIMIT for a line longer than APS_CONFORM_LINE_MAX; APS_ENOMEM.
 *         On an error, the vectors read before it are counted.
 */
int aps_conform_run_file(const char *path, FILE *report, aps_conform_stats *stats,
                         aps_error *err);

#ifdef __cplusplus
}
#endif

#endif /* APSD_TOOLS_CONFORMANCE_H */
