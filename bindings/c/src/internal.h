/* Internals shared by the apsc sources (not installed). */
#ifndef APSC_INTERNAL_H
#define APSC_INTERNAL_H

#include <stdarg.h>

#include "apsd/client.h"

/* Stores `code` and a printf-formatted message in `err` (NULL allowed),
 * freeing what it held, and returns `rc` (so callers write
 * `return apsc__fail(err, APSC_EINVAL, GRPC_STATUS_INVALID_ARGUMENT, ...)`). */
int apsc__fail(apsc_error *err, int rc, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Copies a status and its message (NULL = none) into `err`. */
void apsc__set_status(apsc_error *err, grpc_status_code code, const char *msg, size_t len);

/* Base64 (standard alphabet, padded). apsc__b64_encode returns a malloc'd
 * NUL-terminated string or NULL; apsc__b64_decode returns 0 and a malloc'd
 * buffer, or -1 on bad input or no memory. */
char *apsc__b64_encode(const uint8_t *data, size_t len);
int apsc__b64_decode(const char *s, uint8_t **out, size_t *len);

/* Whether an event stream that ended with `code` (not stopped by the
 * caller) and `details` (NULL allowed) reconnects and resumes: a daemon
 * restarting or shutting down, a broken connection, a slow-subscriber cut.
 * Refusals of the request itself (INVALID_ARGUMENT, OUT_OF_RANGE for a gap,
 * authentication) end it. */
int apsc__resumable(grpc_status_code code, const char *details);

#endif /* APSC_INTERNAL_H */
