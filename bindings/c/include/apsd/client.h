/**
 * @file client.h
 * @brief apsc: the C client of apsd, on the gRPC C core and protobuf-c.
 *
 * One function per RPC of apsd.v1.Scheduler and apsd.v1.Workers, two stream
 * iterators (SubscribeEvents, which resumes by itself after a disconnect, and
 * Workers.Acquire), errors that carry the gRPC status code and message, and
 * helpers for the proto JSON form and for times and durations.
 *
 * @par Messages and ownership
 * Requests and responses are the protobuf-c messages generated from
 * the .proto files of proto/apsd/v1 (`apsd/v1/scheduler.pb-c.h`,
 * `apsd/v1/workers.pb-c.h`). A request is **borrowed**: build it however you
 * like (on the stack with its `..._INIT` macro is typical) and keep it valid
 * for the duration of the call; the library never keeps or frees it. A
 * response is **transferred** to the caller: it is allocated by the library
 * (protobuf-c's default allocator, i.e. malloc) and must be released with
 * apsc_free() once, whatever its type.
 *
 * @par Errors
 * Every function that can fail returns an `int`: 0 (#APSC_OK) on success or
 * a negative `APSC_E*` code. Functions that talk to the daemon also take an
 * `apsc_error *err` (may be NULL): on failure it receives the gRPC status
 * code and message (owned by the error; free with apsc_error_dispose()).
 * Failures detected locally (bad argument, out of memory, undecodable
 * response) are given a matching status code too (INVALID_ARGUMENT,
 * RESOURCE_EXHAUSTED, INTERNAL), so `err->code` alone is enough to decide.
 * A function that fails has produced no output (`*out` is left NULL).
 *
 * @par Threads
 * A client may be used from several threads at once: every unary call has
 * its own completion queue. A stream (apsc_stream) belongs to one thread at
 * a time, except apsc_stream_stop(), which any thread may call.
 * apsc_client_create() calls grpc_init() and apsc_client_destroy() calls
 * grpc_shutdown(), so a program needs nothing else from gRPC.
 *
 * @par Example
 * @code
 * apsc_options o = APSC_OPTIONS_INIT;
 * apsc_client *c = NULL;
 * apsc_error err = APSC_ERROR_INIT;
 * o.target = "127.0.0.1:50051";
 * if (apsc_client_create(&o, &c, &err) != 0) { ... err.message ... }
 * Apsd__V1__GetJobRequest req = APSD__V1__GET_JOB_REQUEST__INIT;
 * Apsd__V1__Job *job = NULL;
 * req.job_id = "seed-cron";
 * if (apsc_get_job(c, &req, &job, &err) == 0) {
 *     printf("%s\n", job->name);
 *     apsc_free(job);
 * } else if (err.code == GRPC_STATUS_NOT_FOUND) {
 *     ...
 * }
 * apsc_error_dispose(&err);
 * apsc_client_destroy(c);
 * @endcode
 */
#ifndef APSD_CLIENT_H
#define APSD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#include "apsd/v1/scheduler.pb-c.h"
#include "apsd/v1/workers.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup apsc_errors Return codes
 *  @{ */
/** Success. */
#define APSC_OK 0
/** The call ended with a non-OK gRPC status (from the daemon, or from the
 *  transport: UNAVAILABLE when it cannot be reached, DEADLINE_EXCEEDED...).
 *  The status is in the #apsc_error. */
#define APSC_ERPC (-1)
/** A bad argument, detected before anything was sent
 *  (`err->code` = INVALID_ARGUMENT). */
#define APSC_EINVAL (-2)
/** Out of memory (`err->code` = RESOURCE_EXHAUSTED). */
#define APSC_ENOMEM (-3)
/** A response or a file that could not be decoded or read
 *  (`err->code` = INTERNAL for responses, INVALID_ARGUMENT for input). */
#define APSC_EPROTO (-4)
/** apsc_stream_next(): nothing arrived within the wait; the stream is still
 *  open, call again. Not an error. */
#define APSC_ETIMEDOUT (-5)
/** apsc_stream_next(): the stream is over without error: the daemon ended
 *  it with OK, or apsc_stream_stop() was called. Not an error. */
#define APSC_EOF (-6)
/** @} */

/** The outcome of a failed call. Initialize with #APSC_ERROR_INIT (or
 *  apsc_error_init()); every function that takes one frees the previous
 *  message before writing a new one, so one error can be reused across
 *  calls. Dispose of it with apsc_error_dispose(). */
typedef struct apsc_error {
    /** GRPC_STATUS_OK (0) when there was no error. */
    grpc_status_code code;
    /** The status message, NUL-terminated, owned by this struct; NULL when
     *  none. For daemon errors it starts with the offending field's path,
     *  e.g. `job.trigger.cron.hour: 25 is out of range 0-23`. */
    char *message;
} apsc_error;

/** Static initializer of an #apsc_error. */
#define APSC_ERROR_INIT {GRPC_STATUS_OK, NULL}

/** Sets `*e` to "no error" without freeing anything. */
void apsc_error_init(apsc_error *e);

/** Frees the message and resets `*e` to "no error". NULL is allowed. */
void apsc_error_dispose(apsc_error *e);

/** The canonical name of a gRPC status code, e.g. `NOT_FOUND`; `UNKNOWN`
 *  for values outside 0-16. The string is static. */
const char *apsc_status_name(grpc_status_code code);

/** The status code named `name` (`NOT_FOUND`, `not_found` or `NotFound`).
 *  @return the code, or -1 if the name is unknown. */
int apsc_status_from_name(const char *name);

/** A static description of an `APSC_E*` return code. */
const char *apsc_strerror(int rc);

/** Releases a response message returned by this library (any type). NULL is
 *  allowed. */
void apsc_free(void *msg);

/* ------------------------------------------------------------------------ */
/** @defgroup apsc_client The connection
 *  @{ */

/** An open channel to one daemon, with its credentials. Opaque. */
typedef struct apsc_client apsc_client;

/** How to reach the daemon. Initialize with #APSC_OPTIONS_INIT; every
 *  string is borrowed only during apsc_client_create(). */
typedef struct apsc_options {
    /** The daemon: `HOST:PORT`, `[::1]:PORT`, `unix:/path`, or any gRPC
     *  target. NULL = `127.0.0.1:50051`. */
    const char *target;
    /** Bearer token sent as `authorization: Bearer TOKEN` on every call
     *  (apsd's `--token-file`); NULL = none. Works over TLS and plaintext. */
    const char *token;
    /** Nonzero: TLS (set implicitly by any of the tls_* files). */
    int tls;
    /** PEM file of the CAs that sign the server certificate; NULL = the
     *  system's roots (gRPC's default roots). */
    const char *tls_ca_file;
    /** Client certificate chain and key (PEM files) for mTLS; both or none. */
    const char *tls_cert_file;
    const char *tls_key_file;
    /** Name checked against the server certificate instead of the target's
     *  host (gRPC's `grpc.ssl_target_name_override`); NULL = the host. */
    const char *tls_server_name;
    /** Deadline of each unary call in milliseconds; 0 = 30000; negative =
     *  none. Streams have no deadline. */
    int64_t timeout_ms;
    /** Nonzero: unary calls wait for the connection (until their deadline)
     *  instead of failing at once with UNAVAILABLE when the daemon cannot
     *  be reached (gRPC's wait-for-ready). */
    int wait_for_ready;
} apsc_options;

/** Static initializer of #apsc_options: plaintext to 127.0.0.1:50051, no
 *  token, 30 s deadline. */
#define APSC_OPTIONS_INIT {NULL, NULL, 0, NULL, NULL, NULL, NULL, 0, 0}

/**
 * Creates a client. No connection is made yet: the first call connects
 * (and a daemon that cannot be reached shows as UNAVAILABLE there).
 *
 * @param[in]  opts options (borrowed); NULL = the defaults.
 * @param[out] out  the new client, to destroy with apsc_client_destroy().
 * @param[out] err  may be NULL.
 * @return #APSC_OK; #APSC_EINVAL (a certificate file given without its key,
 *         an empty target...); #APSC_EPROTO (a TLS file cannot be read);
 *         #APSC_ENOMEM.
 */
int apsc_client_create(const apsc_options *opts, apsc_client **out, apsc_error *err);

/** Closes the channel and frees the client. Every stream opened on it must
 *  have been closed first. NULL is allowed. */
void apsc_client_destroy(apsc_client *c);

/** The target the client was created for (valid until destroy). */
const char *apsc_client_target(const apsc_client *c);

/** @} */

/* ------------------------------------------------------------------------ */
/** @defgroup apsc_rpc One function per unary RPC
 *
 * Each sends `req` (borrowed) and, on success, stores the response in
 * `*out` (transferred: release it with apsc_free()). On failure `*out` is
 * NULL and `err` has the status. Returns #APSC_OK, #APSC_ERPC (the daemon
 * or the transport answered with a non-OK status: see the RPC's comment in
 * scheduler.proto / workers.proto for the codes), #APSC_EINVAL (NULL
 * client, request or out), #APSC_ENOMEM or #APSC_EPROTO (undecodable
 * response).
 * @{ */

/** apsd.v1.Scheduler/AddJob. */
int apsc_add_job(apsc_client *c, const Apsd__V1__AddJobRequest *req, Apsd__V1__Job **out,
                 apsc_error *err);
/** apsd.v1.Scheduler/GetJob. */
int apsc_get_job(apsc_client *c, const Apsd__V1__GetJobRequest *req, Apsd__V1__Job **out,
                 apsc_error *err);
/** apsd.v1.Scheduler/ListJobs (one page; see apsc_list_all_jobs()). */
int apsc_list_jobs(apsc_client *c, const Apsd__V1__ListJobsRequest *req,
                   Apsd__V1__ListJobsResponse **out, apsc_error *err);
/** apsd.v1.Scheduler/ModifyJob. */
int apsc_modify_job(apsc_client *c, const Apsd__V1__ModifyJobRequest *req, Apsd__V1__Job **out,
                    apsc_error *err);
/** apsd.v1.Scheduler/RescheduleJob. */
int apsc_reschedule_job(apsc_client *c, const Apsd__V1__RescheduleJobRequest *req,
                        Apsd__V1__Job **out, apsc_error *err);
/** apsd.v1.Scheduler/PauseJob. */
int apsc_pause_job(apsc_client *c, const Apsd__V1__PauseJobRequest *req, Apsd__V1__Job **out,
                   apsc_error *err);
/** apsd.v1.Scheduler/ResumeJob. */
int apsc_resume_job(apsc_client *c, const Apsd__V1__ResumeJobRequest *req, Apsd__V1__Job **out,
                    apsc_error *err);
/** apsd.v1.Scheduler/RunJobNow. */
int apsc_run_job_now(apsc_client *c, const Apsd__V1__RunJobNowRequest *req,
                     Apsd__V1__RunJobNowResponse **out, apsc_error *err);
/** apsd.v1.Scheduler/RemoveJob. */
int apsc_remove_job(apsc_client *c, const Apsd__V1__RemoveJobRequest *req,
                    Apsd__V1__RemoveJobResponse **out, apsc_error *err);
/** apsd.v1.Scheduler/RemoveAllJobs. */
int apsc_remove_all_jobs(apsc_client *c, const Apsd__V1__RemoveAllJobsRequest *req,
                         Apsd__V1__RemoveAllJobsResponse **out, apsc_error *err);
/** apsd.v1.Scheduler/PreviewTrigger. */
int apsc_preview_trigger(apsc_client *c, const Apsd__V1__PreviewTriggerRequest *req,
                         Apsd__V1__PreviewTriggerResponse **out, apsc_error *err);
/** apsd.v1.Scheduler/GetScheduler. */
int apsc_get_scheduler(apsc_client *c, const Apsd__V1__GetSchedulerRequest *req,
                       Apsd__V1__SchedulerInfo **out, apsc_error *err);
/** apsd.v1.Scheduler/PauseScheduler. */
int apsc_pause_scheduler(apsc_client *c, const Apsd__V1__PauseSchedulerRequest *req,
                         Apsd__V1__SchedulerInfo **out, apsc_error *err);
/** apsd.v1.Scheduler/ResumeScheduler. */
int apsc_resume_scheduler(apsc_client *c, const Apsd__V1__ResumeSchedulerRequest *req,
                          Apsd__V1__SchedulerInfo **out, apsc_error *err);
/** apsd.v1.Scheduler/Backfill. */
int apsc_backfill(apsc_client *c, const Apsd__V1__BackfillRequest *req,
                  Apsd__V1__BackfillResponse **out, apsc_error *err);
/** apsd.v1.Workers/Complete. */
int apsc_complete(apsc_client *c, const Apsd__V1__CompleteRequest *req,
                  Apsd__V1__CompleteResponse **out, apsc_error *err);
/** apsd.v1.Workers/ExtendLease. */
int apsc_extend_lease(apsc_client *c, const Apsd__V1__ExtendLeaseRequest *req,
                      Apsd__V1__ExtendLeaseResponse **out, apsc_error *err);

/**
 * ListJobs over every page: calls apsc_list_jobs() with `req` (borrowed;
 * its page_token is ignored) until next_page_token is empty, and returns
 * one response holding all jobs (next_page_token empty).
 *
 * @param[in]  max_jobs stop after this many jobs (0 = 1,000,000), so a
 *             runaway listing stays bounded; the response then has
 *             next_page_token set to where it stopped.
 * @return as the unary calls.
 */
int apsc_list_all_jobs(apsc_client *c, const Apsd__V1__ListJobsRequest *req, size_t max_jobs,
                       Apsd__V1__ListJobsResponse **out, apsc_error *err);

/** @} */

/* ------------------------------------------------------------------------ */
/** @defgroup apsc_stream Streams: SubscribeEvents and Workers.Acquire
 *
 * A stream is read with apsc_stream_next() (one item at a time, with an
 * optional wait), may be stopped from any thread with apsc_stream_stop(),
 * and is freed with apsc_stream_close().
 *
 * An event stream opened with `resume` set (the default) survives the
 * daemon restarting or the connection dropping: when the stream ends with
 * UNAVAILABLE, CANCELLED not asked for by apsc_stream_stop() (a call the
 * daemon refused as it began to shut down), INTERNAL or UNKNOWN (a broken
 * connection), or RESOURCE_EXHAUSTED for a slow-subscriber cut, it
 * reconnects, with backoff, and asks for the events after
 * the last sequence it saw (SubscribeEventsRequest.after_sequence), so the
 * caller sees every event exactly once, in order. The sequence it resumes
 * from is the newest of: the request's after_sequence, every event's
 * sequence, and every bookmark's. A live-only subscription (no
 * after_sequence) is made resumable by asking for bookmarks: the daemon's
 * first bookmark says where "now" was. Bookmarks are handed to the caller
 * only if the request asked for them (send_bookmarks).
 * @{ */

/** A server stream being read. Opaque. */
typedef struct apsc_stream apsc_stream;

/** Reconnection policy of an event stream. Initialize with
 *  #APSC_STREAM_OPTIONS_INIT. */
typedef struct apsc_stream_options {
    /** Nonzero (the default): reconnect and resume after the ends listed
     *  above (UNAVAILABLE, a daemon's CANCELLED, a slow-subscriber cut...). */
    int resume;
    /** Consecutive failed reconnection attempts before giving up with the
     *  last status (a received item resets the count); 0 = 10. */
    int max_retries;
    /** First wait before reconnecting, in ms (0 = 100); doubles on each
     *  failed attempt up to `max_backoff_ms` (0 = 5000). */
    int initial_backoff_ms;
    int max_backoff_ms;
} apsc_stream_options;

/** Static initializer of #apsc_stream_options: resume, 10 retries, 100 ms
 *  to 5 s backoff. */
#define APSC_STREAM_OPTIONS_INIT {1, 0, 0, 0}

/**
 * Opens apsd.v1.Scheduler/SubscribeEvents.
 *
 * @param[in]  req  the request (borrowed; copied, so it may go away after
 *                  the call).
 * @param[in]  opts reconnection policy; NULL = #APSC_STREAM_OPTIONS_INIT.
 * @param[out] out  the stream; read it with apsc_events_next().
 * @return #APSC_OK (the call is started; errors of the daemon, e.g.
 *         INVALID_ARGUMENT for an unknown event type, come from the first
 *         apsc_events_next()); #APSC_EINVAL; #APSC_ENOMEM; #APSC_ERPC (the
 *         call could not be started).
 */
int apsc_subscribe_events(apsc_client *c, const Apsd__V1__SubscribeEventsRequest *req,
                          const apsc_stream_options *opts, apsc_stream **out, apsc_error *err);

/**
 * Reads the next item of an event stream.
 *
 * @param[in]  timeout_ms how long to wait: negative = until an item or the
 *             end, 0 = do not wait.
 * @param[out] out        the item (transferred; apsc_free()). Exactly one
 *             of event, gap and bookmark is set.
 * @return #APSC_OK with an item; #APSC_ETIMEDOUT (nothing yet; call again);
 *         #APSC_EOF (stopped, or ended with OK); #APSC_ERPC (the stream
 *         ended with an error that was not resumed: OUT_OF_RANGE after a
 *         gap, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, or UNAVAILABLE once
 *         the retries are spent); #APSC_EPROTO; #APSC_ENOMEM. After
 *         anything but #APSC_OK and #APSC_ETIMEDOUT the stream is over and
 *         further calls return the same.
 */
int apsc_events_next(apsc_stream *s, int64_t timeout_ms,
                     Apsd__V1__SubscribeEventsResponse **out, apsc_error *err);

/** The sequence the stream would resume after (see above); 0 = none yet. */
uint64_t apsc_stream_last_sequence(const apsc_stream *s);

/** Number of reconnections made so far (for logs and tests). */
int apsc_stream_reconnects(const apsc_stream *s);

/**
 * Opens apsd.v1.Workers/Acquire: dispatches of remote-task runs for one
 * queue. It is not resumed on errors (a worker decides how to reconnect;
 * its leases survive the stream).
 *
 * @return as apsc_subscribe_events().
 */
int apsc_acquire(apsc_client *c, const Apsd__V1__AcquireRequest *req, apsc_stream **out,
                 apsc_error *err);

/** Reads the next item of an Acquire stream (a dispatch or a cancel);
 *  returns as apsc_events_next(). */
int apsc_acquire_next(apsc_stream *s, int64_t timeout_ms, Apsd__V1__AcquireResponse **out,
                      apsc_error *err);

/** Ends the stream: a pending or later next() returns #APSC_EOF. Safe from
 *  any thread (and from a signal handler's thread, not from the handler).
 *  Idempotent. */
void apsc_stream_stop(apsc_stream *s);

/** Stops the stream if needed, waits for its calls to finish and frees it.
 *  NULL is allowed. */
void apsc_stream_close(apsc_stream *s);

/** @} */

/* ------------------------------------------------------------------------ */
/** @defgroup apsc_json Proto JSON
 *
 * The proto3 JSON mapping that grpcurl uses: field names as in the .proto
 * (apsd's are snake_case), enums by name, 64-bit integers as strings,
 * bytes in base64, Timestamp as RFC 3339 (`2026-11-27T04:54:00Z`),
 * Duration as `1.5s`, Struct/Value/ListValue as plain JSON, FieldMask as a
 * comma-separated string, maps as objects.
 * @{ */

/** Flags of apsc_to_json(). */
enum {
    /** Indent by 2 spaces (else one line). */
    APSC_JSON_PRETTY = 1,
    /** Also print fields that hold their default value (0, "", false,
     *  empty lists and maps; not unset messages), as grpcurl's
     *  `-emit-defaults`: scripts then find every scalar field. */
    APSC_JSON_EMIT_DEFAULTS = 2,
};

/**
 * Formats a message (any protobuf-c message) as proto JSON.
 *
 * @param[in]  msg   the message (borrowed).
 * @param[in]  flags #APSC_JSON_PRETTY, #APSC_JSON_EMIT_DEFAULTS.
 * @param[out] out   a NUL-terminated string (transferred: free()).
 * @return #APSC_OK; #APSC_EINVAL; #APSC_ENOMEM.
 */
int apsc_to_json(const void *msg, int flags, char **out);

/**
 * Parses proto JSON into a new message of type `desc`, e.g.
 * `apsc_from_json(&apsd__v1__trigger__descriptor, "{\"cron\": {\"hour\": \"9\"}}", &t, &err)`.
 * Field names may be the .proto name or its lowerCamelCase JSON form;
 * enums may be names or numbers; Timestamps accept any UTC offset.
 *
 * @param[out] out the message (transferred: apsc_free()).
 * @return #APSC_OK; #APSC_EPROTO (bad JSON or a value that does not fit:
 *         `err->message` names the path, e.g. `job.trigger.cron.hour:
 *         expected a string`); #APSC_EINVAL; #APSC_ENOMEM.
 */
int apsc_from_json(const ProtobufCMessageDescriptor *desc, const char *json, void **out,
                   apsc_error *err);

/** @} */

/* ------------------------------------------------------------------------ */
/** @defgroup apsc_time Times and durations
 * @{ */

/** Size of a buffer that holds any apsc_format_time() output. */
#define APSC_TIME_BUFSZ 64
/** Size of a buffer that holds any apsc_format_duration() output. */
#define APSC_DURATION_BUFSZ 48

/**
 * Parses an RFC 3339 time: `2026-11-23T10:00:00+01:00`, `...Z`, with an
 * optional fraction (up to nanoseconds); a space may replace the `T`.
 * @return #APSC_OK; #APSC_EINVAL (not RFC 3339, or without an offset).
 */
int apsc_parse_time(const char *s, int64_t *seconds, int32_t *nanos);

/** Formats seconds+nanos since the epoch as RFC 3339 in UTC, with 0, 3, 6
 *  or 9 fraction digits (as proto JSON). `buf` holds #APSC_TIME_BUFSZ. */
void apsc_format_time(int64_t seconds, int32_t nanos, char *buf);

/**
 * Parses a duration: a sequence of `<number><unit>` with units `w`, `d`,
 * `h`, `m`, `s`, `ms`, `us`, `ns` (`3s`, `1m30s`, `2h`, `1d`, `0.5s`,
 * `1.5h`), or proto JSON's `90s` / `0.000001s`. Must be >= 0.
 * @return #APSC_OK; #APSC_EINVAL.
 */
int apsc_parse_duration(const char *s, int64_t *seconds, int32_t *nanos);

/** Formats a duration as proto JSON (`90s`, `0.500s`, `-1.5s`). `buf` holds
 *  #APSC_DURATION_BUFSZ. */
void apsc_format_duration(int64_t seconds, int32_t nanos, char *buf);

/** Formats a duration for people: `1d2h`, `1m30s`, `250ms`, `0s`. `buf`
 *  holds #APSC_DURATION_BUFSZ. */
void apsc_format_duration_short(int64_t seconds, int32_t nanos, char *buf);

/** @} */

#ifdef __cplusplus
}
#endif

#endif /* APSD_CLIENT_H */
