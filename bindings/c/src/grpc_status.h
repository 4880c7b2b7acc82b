/*
 * The names of gRPC's status codes (internal, not installed).
 *
 * One table for the two places that print them: the client library
 * (apsc_status_name, apsc_status_from_name) and the daemon
 * (aps_status_name, its logs). Why here: the client builds from src/
 * alone (README), so the table lives with it; the daemon reaches it through
 * //bindings/c:grpc_status, not the whole client. Why header-only: the
 * daemon's other builds (tools/fuzz archives the service sources) need no
 * extra source, and a program linking both gets no duplicate symbol.
 */
#ifndef APSC_GRPC_STATUS_H
#define APSC_GRPC_STATUS_H

#include <grpc/status.h>
#include <stddef.h>

/* The name of `code` as gRPC spells it ("NOT_FOUND"), or NULL for a code
 * gRPC does not define. The string is static. Codes are dense from
 * GRPC_STATUS_OK: a caller may walk them until NULL. */
static inline const char *
apsc__grpc_status_name(int code)
{
    /* Indexed by grpc_status_code (grpc/status.h). */
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    _Static_assert(sizeof names / sizeof names[0] == GRPC_STATUS_UNAUTHENTICATED + 1,
                   "one name per gRPC status code");

    if (code < 0 || (size_t)code >= sizeof names / sizeof names[0])
        return NULL;
    return names[code];
}

#endif /* APSC_GRPC_STATUS_H */
