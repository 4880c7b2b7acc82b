/**
 * @file server.h
 * @brief The gRPC C core server framework of apsd: listeners, a static method
 *        table, completion-queue threads that never block, a bounded pool of
 *        "engine worker" threads for blocking handlers, per-call contexts with
 *        one write in flight per stream.
 *
 * Model (see ../shared/notes/grpc-core.md):
 * - every registered method has K requests pre-posted, re-posted before the
 *   call is handled; a generic request catches unknown methods and answers
 *   UNIMPLEMENTED;
 * - each call starts with RECV_CLOSE_ON_SERVER, its cancellation watch;
 * - the request is decoded on the CQ thread, then the handler runs on the CQ
 *   thread (APS_RUN_CQ: must not block) or on a pool thread (APS_RUN_POOL:
 *   may make blocking engine calls); a full pool queue answers
 *   RESOURCE_EXHAUSTED;
 * - replies and stream writes may be started from any thread.
 *
 * A handler receives the call with one "owner" reference, which exactly one
 * of aps_call_reply*, aps_call_fail, aps_call_finish, aps_call_cancel or
 * aps_call_hold gives up. After that the handler must not touch the call.
 * The context itself is freed when the owner and every pending batch are
 * done.
 */
#ifndef APSD_SERVICE_SERVER_H
#define APSD_SERVICE_SERVER_H

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "service/convert.h"

typedef struct aps_server aps_server;
typedef struct aps_call aps_call;

/** The shape of a method. */
typedef enum aps_rpc_kind {
    APS_RPC_UNARY = 0,
    APS_RPC_SERVER_STREAM = 1,
    APS_RPC_BIDI = 2, /**< no payload at start: the handler reads (aps_call_read) */
} aps_rpc_kind;

/** Where a handler runs. */
typedef enum aps_run_on {
    APS_RUN_POOL = 0, /**< an engine worker thread: may block on disk */
    APS_RUN_CQ = 1,   /**< the CQ thread: in-memory work only */
} aps_run_on;

/**
 * A handler. `req` is the decoded request (of the method's `input` type), or
 * NULL for raw methods (input NULL: use aps_call_request_bytes) and bidi.
 */
typedef void (*aps_handler_fn)(aps_call *c, const ProtobufCMessage *req, void *app);

/** One row of the method table. */
typedef struct aps_method {
    const char *path; /**< "/apsd.v1.Scheduler/AddJob" */
    aps_rpc_kind kind;
    const ProtobufCMessageDescriptor *input; /**< NULL = raw bytes */
    int write;                               /**< needs the `write` role */
    aps_run_on run_on;
    aps_handler_fn handler;
    void *app; /**< passed to the handler */
} aps_method;

/**
 * Authorization hook: 0 to allow, else a gRPC status code (UNAUTHENTICATED,
 * PERMISSION_DENIED). `authorization` is the metadata value or NULL.
 * Called on a CQ thread.
 */
typedef int (*aps_authorize_fn)(void *ud, const char *authorization, int write_method);

typedef struct aps_server_config {
    const char *const *listen; /**< addresses: "127.0.0.1:50051", "[::1]:1", "unix:/path" */
    size_t n_listen;
    const char *tls_cert_pem; /**< PEM texts; NULL cert = plaintext */
    const char *tls_key_pem;
    const char *tls_client_ca_pem; /**< non-NULL: mTLS, client certificates required */
    aps_authorize_fn authorize;    /**< NULL = everyone may do everything */
    void *authorize_ud;
    int cq_threads;          /**< 0 = 1 */
    int pool_threads;        /**< 0 = 64 */
    size_t pool_queue;       /**< 0 = 1024 */
    int requests_per_method; /**< pre-posted requests per method; 0 = 16 */
    size_t max_message;      /**< max receive message size; 0 = 4 MiB */
    size_t call_arena_limit; /**< per-call arena bytes; 0 = 64 MiB */
    size_t max_held;         /**< calls held open at once (aps_call_hold); 0 = 1024 */
} aps_server_config;

/**
 * Creates the server: registers the methods, binds the listeners. Nothing
 * runs until aps_server_start. `methods` must outlive the server.
 * @return 0, or -1 with a message in `err`.
 */
int aps_server_create(const aps_server_config *cfg, const aps_method *methods, size_t n_methods,
                      aps_server **out, char *err, size_t errlen);

/** Starts gRPC, the CQ threads and the pool, and posts the requests. */
int aps_server_start(aps_server *s);

/** True once shutdown began (health: NOT_SERVING). Thread-safe. */
int aps_server_shutting_down(aps_server *s);

/** Shutdown step 1: no new calls (pending requests come back and are freed). */
void aps_server_shutdown_begin(aps_server *s);

/** Shutdown step 2: waits (up to `timeout_ms`) until the pool has run every
 *  queued handler. @return 0, or -1 on timeout. */
int aps_server_drain_pool(aps_server *s, int64_t timeout_ms);

/** Shutdown step 3: ends every held call (aps_call_hold) with UNAVAILABLE. */
void aps_server_finish_held(aps_server *s);

/**
 * Shutdown step 4: waits up to `grace_ms` for every call to end, then
 * cancels the remaining ones and waits for them (bounded).
 * @return 0, or -1 if calls were still open at the end.
 */
int aps_server_wait_calls(aps_server *s, int64_t grace_ms);

/** Shutdown step 5: joins the threads and frees everything. NULL allowed. */
void aps_server_destroy(aps_server *s);

/* ---- calls ------------------------------------------------------------------- */

/** The call's arena: freed with the call. */
aps_arena *aps_call_arena(aps_call *c);
/** The method path ("/pkg.Svc/M"). */
const char *aps_call_path(aps_call *c);
/** The raw request bytes (raw methods). */
const uint8_t *aps_call_request_bytes(aps_call *c, size_t *len);
/** 1 once the client cancelled, the deadline passed or the connection died. */
int aps_call_cancelled(aps_call *c);
/** The server of a call. */
aps_server *aps_call_server(aps_call *c);

/** Unary: replies OK with `msg` (packed now; the caller keeps `msg`). */
void aps_call_reply(aps_call *c, const ProtobufCMessage *msg);
/** Unary: replies OK with serialized bytes. */
void aps_call_reply_bytes(aps_call *c, const uint8_t *data, size_t len);
/** Any kind: ends the call with `code` and a message (printf). For streams,
 *  after the messages already queued (as aps_call_finish). */
void aps_call_fail(aps_call *c, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Streams: queues a message; it is written when the previous write has
 * completed (one write in flight). @return 0, or -1 if the call is over
 * (cancelled, broken).
 */
int aps_call_send(aps_call *c, const ProtobufCMessage *msg);
int aps_call_send_bytes(aps_call *c, const uint8_t *data, size_t len);
/** Streams: messages queued or in flight. */
size_t aps_call_queued(aps_call *c);
/** Streams: ends with a status once the queue is written. Gives up ownership. */
void aps_call_finish(aps_call *c, grpc_status_code code, const char *msg);
/** Streams: ends now with a status (dropping the queue): for a client that
 *  does not read. Gives up ownership. */
void aps_call_cancel(aps_call *c, grpc_status_code code, const char *msg);
/** Streams: keeps the call open until the client leaves or the server shuts
 *  down (then UNAVAILABLE), and gives up ownership; 0. -1 when max_held
 *  calls are held already: the caller keeps the call (and ends it). */
int aps_call_hold(aps_call *c);

/**
 * Calls fn(arg) after each completed write and when the call ends (client
 * gone): on a CQ thread, with the call's lock held, so fn must only record
 * the fact and wake its owner (no aps_call_* calls). Cleared by
 * finish/cancel, after which fn is never called again.
 */
void aps_call_watch(aps_call *c, void (*fn)(void *arg), void *arg);

/** Bidi: reads one message; fn runs on a CQ thread (no lock held) with the
 *  bytes, or data NULL when the client half-closed (ok=1) or the read failed
 *  (ok=0). */
void aps_call_read(aps_call *c,
                   void (*fn)(aps_call *c, const uint8_t *data, size_t len, int ok, void *arg),
                   void *arg);

/** Runs fn(arg) when the call context is freed (last reference). */
void aps_call_on_free(aps_call *c, void (*fn)(void *arg), void *arg);

#endif /* APSD_SERVICE_SERVER_H */
