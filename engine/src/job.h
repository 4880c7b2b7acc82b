/**
 * @file job.h
 * @brief Job records (internal): validation of job specs, the record a job
 *        store keeps per job, deep copies, and the binary codec of records
 *        and events.
 *
 * Ownership: every aps__jobrec, aps_job, aps_trigger_spec and aps_event
 * handed out by these functions is owned by the caller and owns everything
 * it points to (strings, arrays, nested triggers). Functions that fail have
 * changed nothing and leave their out-parameters NULL.
 *
 * Thread safety: the functions keep no state; a record may be used by one
 * thread at a time. aps__id_generate is thread-safe.
 *
 * Allocations go through aps__job_alloc_fail_at (see below) so the tests can
 * fail each one in turn.
 */
#ifndef APSD_ENGINE_JOB_H
#define APSD_ENGINE_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "apsd/engine.h"

/** Lateness samples kept per job; the percentiles are over these. */
#define APS__LATENESS_WINDOW 128

/** Limits enforced by aps__jobrec_from_spec (and promised by the proto). */
#define APS__ID_MAX 200            /**< bytes of a job id */
#define APS__JOB_ID_GEN_LEN 44     /**< chars of a generated job id */
#define APS__NAME_MAX 1024         /**< bytes of a job name */
#define APS__LABELS_MAX 64         /**< labels per job */
#define APS__LABEL_LEN_MAX 63      /**< bytes of a label key or value */
#define APS__NAME64_MAX 63         /**< bytes of an executor or job store name */
#define APS__COMBO_MAX_CHILDREN 64 /**< sub-triggers of one all_of/any_of */
#define APS__COMBO_MAX_DEPTH 8     /**< all_of/any_of nesting levels */
#define APS__JSON_MAX_DEPTH 64     /**< nesting of remote args/kwargs */

/** Leading byte of an encoded record: high nibble the type, low the version. */
#define APS__JOBREC_FORMAT_V1 0x11
/** V2: V1 with the lateness samples as int32, not int64. */
#define APS__JOBREC_FORMAT_V2 0x12
/** V3: V2 with each lateness sample a zigzag varint. */
#define APS__JOBREC_FORMAT_V3 0x13
/** V4 (written since): V3 with every integer, count and length a varint
 *  (codec.c): a record is about half as long, and the store writes the
 *  pages of due jobs' records twice per run. */
#define APS__JOBREC_FORMAT_V4 0x14
/** Leading byte of an encoded event. */
#define APS__EVENT_FORMAT_V1 0x21
/* V2: V1, then the outcome's error_type and worker_id (when it has one). */
#define APS__EVENT_FORMAT_V2 0x22
/** V3 (written since): V2 with varints as job records V4, and a run id of
 *  32 lowercase hex digits packed; two events are written per run. */
#define APS__EVENT_FORMAT_V3 0x23
/** Trigger nesting depth the decoder accepts (validation allows less). */
#define APS__CODEC_MAX_DEPTH 16

/** A run that was started and has not finished. */
typedef struct aps__run_rec {
    char run_id[33]; /**< 32 hex chars */
    char executor[64];
    aps_time started;    /**< when it started */
    aps_time *run_times; /**< scheduled time(s): several when coalesced; owned */
    size_t n_run_times;
} aps__run_rec;

/** A run waiting for an instance slot (overlap QUEUE_*, backfill). */
typedef struct aps__pending {
    aps_time *run_times; /**< owned */
    size_t n_run_times;
    int backfill; /**< 1: not subject to misfire_grace_time */
} aps__pending;

/** What the store keeps for a job. */
typedef struct aps__jobrec {
    aps_job job; /**< the public part, all fields owned (job.trigger deep-owned) */
    aps__run_rec *running;
    size_t n_running;
    aps__pending *pending;
    size_t n_pending;
    /** Ring of recent lateness samples (µs, clamped to int32: 35 min):
     * while n_lateness is below the window the samples are lateness[0 ..
     * n_lateness) and lateness_pos == n_lateness; then lateness_pos is the
     * slot the next sample overwrites. APS__LATENESS_WINDOW entries,
     * allocated with the first sample (NULL before). Apart from the record
     * so that the record stays a small allocation: above 1 KB glibc's
     * malloc consolidates its free lists on every one (twice per run). */
    int32_t *lateness;
    uint32_t n_lateness, lateness_pos;
    /** A decoded record is one block with its strings, trigger and labels
     * where they fit (aps__jobrec_decode: a dozen allocations per decode
     * were most of its cost): a field pointing into [arena, arena +
     * arena_len) is not freed on its own, the block goes with the record.
     * Replace such fields through aps__jobrec_apply only (it knows);
     * running, pending and lateness are never in the block. NULL for a
     * record built otherwise. */
    void *arena;
    size_t arena_len;
} aps__jobrec;

/**
 * Validates a job spec and builds a record from it.
 *
 * Every string is copied. The id is generated when NULL, the name defaults
 * to the id, executor and jobstore to "default", a remote target's queue to
 * "default". The stored trigger is the effective one: zones filled with
 * `default_tz` (NULL = "UTC") where the spec names none, at every level; an
 * interval without start_date gets now + interval and a calendar_interval
 * now (so restarts do not move the schedule); a date trigger without
 * run_date gets now; no trigger at all becomes a date trigger at
 * spec->next_run_time (or now). The trigger is validated with
 * aps_trigger_create. next_run_time is copied, not computed.
 *
 * @param[in] spec        borrowed.
 * @param[in] default_tz  the scheduler's zone; NULL = "UTC".
 * @param[in] now         the creation time (create/update time, defaults).
 * @param[out] out        the record, owned by the caller (aps__jobrec_free).
 * @param[out] err        may be NULL; the message names the field, e.g.
 *                        `trigger.any_of.triggers[1].cron.hour: 25 is out of range 0-23`.
 * @return 0; APS_EINVAL (bad field); APS_ENOENT (unknown zone); APS_ENOMEM;
 *         APS_EIO (no random bytes for an id).
 */
int aps__jobrec_from_spec(const aps_job_spec *spec, const char *default_tz, aps_time now,
                          aps__jobrec **out, aps_error *err);

/** Frees a record and everything it owns. NULL is allowed. */
void aps__jobrec_free(aps__jobrec *r);

/**
 * Deep-copies a record.
 * @return 0 or APS_ENOMEM.
 */
int aps__jobrec_copy(const aps__jobrec *src, aps__jobrec **out);

/**
 * A public copy of the record's job: running_instances = n_running,
 * queued_runs = n_pending, lateness statistics computed from the ring.
 * @param[out] out owned by the caller (aps_job_free).
 * @return 0 or APS_ENOMEM.
 */
int aps__job_from_rec(const aps__jobrec *r, aps_job **out);

/**
 * Deep-copies a public job (all strings, labels, target, trigger).
 * @param[out] out owned by the caller (aps_job_free).
 * @return 0 or APS_ENOMEM.
 */
int aps__job_copy(const aps_job *src, aps_job **out);

/**
 * Replaces the fields named in `mask` (APS_MODIFY_*) with those of `spec`,
 * validated as aps__jobrec_from_spec does (a new trigger becomes the
 * effective one, with `now` and `default_tz`). With APS_MODIFY_TRIGGER the
 * spec must carry a trigger; with APS_MODIFY_NEXT_RUN_TIME a time (a paused
 * job is then resumed). update_time becomes `now`. All or nothing: on
 * failure the record is unchanged.
 * @return 0; APS_EINVAL (bad field or unknown mask bit); APS_ENOENT
 *         (unknown zone); APS_ENOMEM.
 */
int aps__jobrec_apply(aps__jobrec *r, const aps_job_spec *spec, uint32_t mask,
                      const char *default_tz, aps_time now, aps_error *err);

/**
 * Adds a lateness sample to the ring (overwriting the oldest when full);
 * the percentiles are computed when the job is read (aps__job_from_rec).
 */
void aps__jobrec_add_lateness(aps__jobrec *r, int64_t lateness_us);

/**
 * Lateness percentiles of the ring, nearest-rank (the smallest sample with at
 * least p % of the samples at or below it). All zero without samples.
 * O(n log n) in the window size. Fills the lateness_* fields of `stats`.
 */
void aps__jobrec_lateness_stats(const aps__jobrec *r, aps_job_stats *stats);

/** A lateness sample as stored: clamped to the int32 range (about 35 min). */
int32_t aps__clamp_lateness(int64_t us);

/**
 * Deep-copies a target into `*dst` (overwritten, not freed first).
 * @return 0 or APS_ENOMEM (then *dst is zeroed).
 */
int aps__target_copy(const aps_target *src, aps_target *dst);

/** Frees what a target owns (not the struct) and zeroes it. */
void aps__target_dispose(aps_target *t);

/** Frees the owned contents of an outcome (not the struct); zeroes it. */
void aps__outcome_dispose(aps_outcome *o);

/**
 * Deep-copies an outcome (tails, strings).
 * @param[out] out malloc'd; free its contents with aps__outcome_dispose and
 *                 the struct with free, or let aps_event_free do both.
 * @return 0 or APS_ENOMEM.
 */
int aps__outcome_copy(const aps_outcome *src, aps_outcome **out);

/** Frees a running entry's contents (not the entry itself). */
void aps__run_rec_clear(aps__run_rec *rr);
/** Frees a pending entry's contents (not the entry itself). */
void aps__pending_clear(aps__pending *p);

/**
 * Deep-copies a trigger spec: every string and sub-trigger array is owned
 * by the copy (the `const` of the spec's fields notwithstanding).
 * @param[out] out free with aps__trigger_spec_free.
 * @return 0, APS_EINVAL (an unknown kind, a combo without its array, or
 *         nesting deeper than APS__CODEC_MAX_DEPTH),
 *         APS_ENOMEM.
 */
int aps__trigger_spec_copy(const aps_trigger_spec *src, aps_trigger_spec **out);

/** Frees a trigger spec built by this module (copy, decode). NULL is allowed. */
void aps__trigger_spec_free(aps_trigger_spec *t);

/**
 * Checks strict JSON syntax (RFC 8259: one value, UTF-8, no trailing data,
 * nesting at most APS__JSON_MAX_DEPTH). The engine has no JSON library.
 * @param[out] top  on success the first character of the value: '[', '{',
 *                  '"', 't', 'f', 'n' or '-'/digit for numbers. May be NULL.
 * @param[out] where on failure the byte offset of the error. May be NULL.
 * @param[out] why   on failure a static reason. May be NULL.
 * @return 0 or APS_EINVAL.
 */
int aps__json_check(const char *text, size_t len, char *top, size_t *where, const char **why);

/**
 * Encodes a record for the store (format APS__JOBREC_FORMAT_V4, varints and
 * length-prefixed strings: codec.c; V1 to V3 records still decode, and are
 * written as V4 when next changed). running_instances, queued_runs and the
 * lateness percentiles are not stored: decoding recomputes them.
 * @param[out] buf  malloc'd; the caller frees it.
 * @return 0; APS_EINVAL (a record decoding would reject, e.g. no id or a
 *         NULL argv entry); APS_ENOMEM.
 */
int aps__jobrec_encode(const aps__jobrec *r, void **buf, size_t *len);

/** aps__jobrec_encode in format V3 or V4 (tests: records as older
 *  versions wrote them). APS_EINVAL for another format. */
int aps__jobrec_encode_format(const aps__jobrec *r, uint8_t format, void **buf, size_t *len);

struct aps__wbuf;
/**
 * aps__jobrec_encode into a writer the caller reuses (codec.h): its bytes
 * are replaced, its buffer kept and grown as needed, so a loop encoding
 * record after record allocates nothing once warm.
 * @return 0, or the error aps__jobrec_encode would give (w->len is then
 *         meaningless; the writer stays usable).
 */
int aps__jobrec_encode_into(const aps__jobrec *r, struct aps__wbuf *w);

/**
 * Decodes a record. Everything is bounds-checked: counts are capped by the
 * bytes left, trigger nesting by APS__CODEC_MAX_DEPTH, enums by their
 * ranges, and trailing bytes are an error.
 * @return 0; APS_ECORRUPT (never a crash); APS_ENOMEM.
 */
int aps__jobrec_decode(const void *buf, size_t len, aps__jobrec **out);

/**
 * Encodes an event (format APS__EVENT_FORMAT_V3; V1 and V2 records still
 * decode). Empty output tails are stored as absent (they decode as NULL
 * with length 0).
 * @return 0; APS_EINVAL (a tail length without data); APS_ENOMEM.
 */
int aps__event_encode(const aps_event *ev, void **buf, size_t *len);

/** aps__event_encode in format V2 or V3 (tests: events as older versions
 *  wrote them). APS_EINVAL for another format. */
int aps__event_encode_format(const aps_event *ev, uint8_t format, void **buf, size_t *len);

/** aps__event_encode into a writer the caller reuses (as
 *  aps__jobrec_encode_into). @return 0 or the error aps__event_encode gives. */
int aps__event_encode_into(const aps_event *ev, struct aps__wbuf *w);
/** aps__event_encode_into after what `w` holds (several events in one
 *  buffer). @return 0, or the writer's first error (sticky). */
int aps__event_encode_append(const aps_event *ev, struct aps__wbuf *w);

/** Decodes an event. @return 0; APS_ECORRUPT; APS_ENOMEM. */
int aps__event_decode(const void *buf, size_t len, aps_event **out);

/** Reads an encoded event's type and job id without decoding the rest (a
 *  filter's fast path). *job_id points into buf, not NUL-terminated (NULL:
 *  none). @return 0; APS_ECORRUPT. */
int aps__event_peek(const void *buf, size_t len, aps_event_type *type, const char **job_id,
                    size_t *job_id_len);

/** Deep-copies an event. @return 0 or APS_ENOMEM. */
int aps__event_copy(const aps_event *src, aps_event **out);

/**
 * 128 random bits (OpenSSL RAND_bytes) as 32 lowercase hex chars + NUL,
 * like APScheduler's uuid4().hex.
 * @return 0 or APS_EIO.
 */
int aps__id_generate(char out[33]);

/**
 * A time-ordered id, UUIDv7's layout in 32 lowercase hex chars + NUL: the
 * wall clock's milliseconds since the Unix epoch (48 bits, 12 chars), then
 * 80 random bits. Run ids: the durable run index (meta `run/<id>`) then
 * grows and shrinks at its end, a few B-tree pages per commit, instead of
 * one random page per run started and again per run finished.
 * @return 0 or APS_EIO (out unusable).
 */
int aps__id_generate_ordered(char out[33]);

/**
 * A generated job id: the wall clock's milliseconds since the Unix epoch
 * (12 lowercase hex chars), then 128 random bits (32 chars) + NUL. The
 * random part alone makes it unique, as a uuid4; the time in front makes
 * ids generated later sort after, so the adds of a commit share the last
 * pages of the `jobs` B-tree instead of each dirtying a page of its own
 * (and of `due` too when their next run times are the same or rise:
 * benchmark adds of one date, a commit of 60 wrote 100 KiB, against 544
 * KiB with ids from 64 places).
 * @return 0 or APS_EIO (out unusable).
 */
int aps__job_id_generate(char out[APS__JOB_ID_GEN_LEN + 1]);

/**
 * Test hook: when non-zero, the Nth allocation made by this module from now
 * on fails (and the counter disarms). Never set outside tests. Why a global:
 * the engine has no allocator abstraction, and this is how the tests walk
 * every out-of-memory path (curl's torture mode, SQLite's OOM tests).
 */
extern unsigned long aps__job_alloc_fail_at;

#endif /* APSD_ENGINE_JOB_H */
