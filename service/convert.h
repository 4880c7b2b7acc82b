/**
 * @file convert.h
 * @brief protobuf-c messages <-> engine structs, JSON text <-> google.protobuf
 *        Value trees, engine errors -> gRPC status codes.
 *
 * Memory: everything built here lives in an aps_arena (a bump allocator with
 * a hard size limit) and is freed at once with it. Messages decoded with the
 * arena's allocator and the specs converted from them borrow each other's
 * strings, so one arena per call holds a request and all it turns into.
 *
 * Errors: functions that validate input return 0 or a negative APS_E* code
 * and fill an aps_error whose message starts with the path of the field, e.g.
 * `job.trigger.interval.seconds: must not be negative (-5)`.
 */
#ifndef APSD_SERVICE_CONVERT_H
#define APSD_SERVICE_CONVERT_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "apsd/engine.h"
#include "apsd/v1/scheduler.pb-c.h"
#include "google/protobuf/struct.pb-c.h"

/* ---- arena ----------------------------------------------------------------- */

/** A bump allocator. Not thread-safe: one call (one thread at a time). */
typedef struct aps_arena aps_arena;

/** Creates an arena that refuses to hold more than `limit` bytes. NULL on OOM. */
aps_arena *aps_arena_new(size_t limit);
/** Frees the arena and everything allocated from it. NULL is allowed. */
void aps_arena_free(aps_arena *a);
/** `n` zeroed bytes, 16-aligned; NULL when out of memory or over the limit. */
void *aps_arena_alloc(aps_arena *a, size_t n);
/** A copy of `s` (NULL gives NULL). */
char *aps_arena_strdup(aps_arena *a, const char *s);
/** A copy of `n` bytes of `s`, NUL-terminated. */
char *aps_arena_strndup(aps_arena *a, const char *s, size_t n);
/** printf into the arena. */
char *aps_arena_printf(aps_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** A protobuf-c allocator drawing from the arena (free is a no-op). Valid as
 *  long as the arena. */
ProtobufCAllocator *aps_arena_allocator(aps_arena *a);

/** Allocates and initialises a protobuf-c message of type T in the arena. */
#define APS_PB_NEW(arena, T, INIT)                                                                 \
    ({                                                                                             \
        T *pb_new_ = aps_arena_alloc((arena), sizeof(T));                                          \
        if (pb_new_ != NULL)                                                                       \
            *pb_new_ = (T)INIT;                                                                    \
        pb_new_;                                                                                   \
    })

/* ---- decoding ---------------------------------------------------------------- */

/**
 * Unpacks a message of type `desc` into the arena, after checking that its
 * messages are nested at most `max_depth` deep (protobuf-c recurses without a
 * limit, so a hostile message could otherwise exhaust the stack).
 * @return the message, or NULL if malformed, too deep or out of arena space.
 */
ProtobufCMessage *aps_pb_unpack(aps_arena *a, const ProtobufCMessageDescriptor *desc,
                                const uint8_t *data, size_t len, int max_depth);

/**
 * Checks what protobuf-c lets through in a request that aps_pb_unpack()
 * accepted (call it only then: the walk relies on the depth check).
 * - Every `string` field must be UTF-8, as proto3 requires: protobuf-c does
 *   not check, and an invalid string stored in a job would come back in
 *   every response holding it, which other languages' parsers reject (one
 *   bad job would break ListJobs for every client).
 * - No string may hold a NUL byte: protobuf-c makes C strings, so
 *   `"/bin/true\0..."` would silently become `"/bin/true"`.
 * - No field may be numbered 0 (protobuf-c accepts it in a multi-byte key).
 * @param msg receives the status message, starting with the path of the
 *            field, e.g. `job.target.command.argv: not valid UTF-8, or
 *            holds a NUL byte`.
 * @return 0, or APS_EINVAL.
 */
int aps_pb_check_request(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                         char *msg, size_t msglen);

/* ---- status -------------------------------------------------------------------- */

/**
 * The gRPC status of an engine error code (the one table): APS_EINVAL ->
 * INVALID_ARGUMENT, APS_ENOENT -> NOT_FOUND, APS_EEXIST -> ALREADY_EXISTS,
 * APS_ESTATE -> FAILED_PRECONDITION, APS_ELIMIT/APS_ENOSPC/APS_ENOMEM ->
 * RESOURCE_EXHAUSTED, APS_ERANGE -> OUT_OF_RANGE, APS_EIO/APS_EBUSY ->
 * UNAVAILABLE, APS_ECORRUPT -> DATA_LOSS, anything else INTERNAL.
 */
grpc_status_code aps_status_of(int rc);

/** The canonical name of a status code, e.g. "NOT_FOUND". */
const char *aps_status_name(grpc_status_code code);

/* ---- time ---------------------------------------------------------------------- */

/** A Timestamp as aps_time; NULL gives APS_TIME_NONE. APS_EINVAL (message
 *  naming `path`) when outside 0001-01-01..9999-12-31 or nanos invalid. */
int aps_ts_to_time(const Google__Protobuf__Timestamp *ts, const char *path, aps_time *out,
                   aps_error *err);
/** A Timestamp in the arena; APS_TIME_NONE gives NULL. */
Google__Protobuf__Timestamp *aps_ts_from_time(aps_arena *a, aps_time t);
/** A Duration in microseconds; NULL gives 0. APS_EINVAL when invalid. */
int aps_dur_to_us(const Google__Protobuf__Duration *d, const char *path, int64_t *out,
                  aps_error *err);
/** A Duration in the arena. */
Google__Protobuf__Duration *aps_dur_from_us(aps_arena *a, int64_t us);

/* ---- JSON ---------------------------------------------------------------------- */

/** JSON text of a Value / ListValue / Struct (malloc-free: in the arena).
 *  APS_EINVAL for NaN/Infinity or nesting beyond 64 levels; APS_ELIMIT over
 *  1 MiB. */
int aps_json_from_value(aps_arena *a, const Google__Protobuf__Value *v, const char *path,
                        char **out, aps_error *err);
int aps_json_from_list(aps_arena *a, const Google__Protobuf__ListValue *v, const char *path,
                       char **out, aps_error *err);
int aps_json_from_struct(aps_arena *a, const Google__Protobuf__Struct *v, const char *path,
                         char **out, aps_error *err);

/** Parses JSON text into a Value tree in the arena. APS_EINVAL if malformed. */
int aps_json_to_value(aps_arena *a, const char *json, Google__Protobuf__Value **out);

/* ---- triggers, jobs, events -------------------------------------------------------- */

/**
 * Converts a Trigger message (recursively, all_of/any_of up to 8 levels of
 * 64 triggers) into a spec in the arena. Strings are borrowed from `pb`.
 * `path` names the field in messages (e.g. "job.trigger").
 */
int aps_trigger_from_pb(aps_arena *a, const Apsd__V1__Trigger *pb, const char *path,
                        aps_trigger_spec **out, aps_error *err);

/** The Trigger message of a spec, in the arena. NULL on OOM. */
Apsd__V1__Trigger *aps_trigger_to_pb(aps_arena *a, const aps_trigger_spec *spec);

/**
 * Fills what a trigger leaves to its creation time, as the engine stores it:
 * the zone of every leaf (`default_tz`), an interval's start (now + interval),
 * a date's run date (now), a calendar interval's start (now). In place.
 */
void aps_trigger_fill_defaults(aps_arena *a, aps_trigger_spec *spec, const char *default_tz,
                               aps_time now);

/**
 * Converts a Job message into a job spec. Only what is present is checked
 * (a missing trigger or target is left for the caller to judge: AddJob
 * requires a target, ModifyJob only the fields of its mask). Strings are
 * borrowed from `pb`; arrays and JSON texts are in the arena.
 */
int aps_job_spec_from_pb(aps_arena *a, const Apsd__V1__Job *pb, const char *path, aps_job_spec *out,
                         aps_error *err);

/** The Target of a job spec (command or remote). */
int aps_target_from_pb(aps_arena *a, const Apsd__V1__Target *pb, const char *path, aps_target *out,
                       aps_error *err);

/** A Job message of an engine job, in the arena; stats only with `with_stats`.
 *  NULL on OOM. */
Apsd__V1__Job *aps_job_to_pb(aps_arena *a, const aps_job *job, int with_stats);

/** A RunOutcome message of an engine outcome. */
Apsd__V1__RunOutcome *aps_outcome_to_pb(aps_arena *a, const aps_outcome *o);

/** An Event message of an engine event. */
Apsd__V1__Event *aps_event_to_pb(aps_arena *a, const aps_event *ev);

/** apsd.v1.RunStatus of an engine run status. */
Apsd__V1__RunStatus aps_run_status_to_pb(aps_run_status st);

/** printf into an aps_error; returns `code`. */
int aps_cv_fail(aps_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* APSD_SERVICE_CONVERT_H */
