/**
 * @file auth.h
 * @brief Bearer-token authentication with two roles, read and write.
 *
 * The token file holds no tokens, only their SHA-256 hashes, one a line:
 *
 *     # comments start with '#', anywhere on a line; blank lines are fine
 *     read  9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
 *     write 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
 *
 * The hash is over the token's characters as sent (`printf %s "$TOKEN" |
 * sha256sum`); `apsd-token` generates a token and prints its line. Clients
 * send the metadata `authorization: Bearer <token>`. A write token may also
 * call read methods.
 *
 * aps_auth_check() hashes the presented token and compares it with every
 * stored hash using CRYPTO_memcmp, without stopping at a match, so its
 * timing does not depend on which (if any) stored hash matches.
 *
 * Thread safety: an aps_auth is immutable after loading; share it freely.
 * Errors are negative APS_E* codes from apsd/engine.h.
 */
#ifndef APSD_SERVICE_AUTH_H
#define APSD_SERVICE_AUTH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** aps_auth_check() results: gRPC status codes (grpc/status.h values). */
#define APS_AUTH_OK 0
#define APS_AUTH_PERMISSION_DENIED 7
#define APS_AUTH_UNAUTHENTICATED 16

/** Longest token aps_auth_check() accepts (longer ones are malformed). */
#define APS_AUTH_MAX_TOKEN 1024

/** The loaded hashes and their roles. */
typedef struct aps_auth aps_auth;

/**
 * Loads a token file (format above).
 *
 * @param err    receives a message naming the file and line, e.g.
 *               `tokens:3: expected 64 hex digits (the SHA-256 of the
 *               token), got 43 characters`; never the rejected value when
 *               it could be a token. May be NULL.
 * @return 0; APS_ENOENT (no such file); APS_EIO (cannot read it);
 *         APS_EINVAL (a bad line, a hash listed twice, or no tokens at
 *         all); APS_ENOMEM. *out is NULL on failure.
 */
int aps_auth_load(const char *token_file, aps_auth **out, char *err, size_t errlen);

/** Frees what aps_auth_load() returned (NULL is fine). */
void aps_auth_free(aps_auth *a);

/**
 * Checks the `authorization` metadata value of a call.
 *
 * @param a             loaded tokens; NULL fails closed (UNAUTHENTICATED):
 *                      with authentication off, do not call this.
 * @param authorization the metadata value, NUL-terminated; NULL if absent.
 *                      Form: `Bearer <token>` (scheme case-insensitive,
 *                      one or more spaces, token68 characters).
 * @param write_method  non-zero if the method needs the write role.
 * @return APS_AUTH_OK; APS_AUTH_UNAUTHENTICATED (absent, malformed or
 *         unknown token); APS_AUTH_PERMISSION_DENIED (a read token on a
 *         write method).
 */
int aps_auth_check(const aps_auth *a, const char *authorization, int write_method);

/** Number of tokens loaded. */
size_t aps_auth_count(const aps_auth *a);

/**
 * Writes the lowercase hex SHA-256 of `token[0..len)` and a NUL into
 * `hex` (65 bytes): the form the token file stores.
 * @return 0, or APS_EIO if OpenSSL fails.
 */
int aps_auth_hash_hex(const char *token, size_t len, char hex[65]);

#ifdef __cplusplus
}
#endif

#endif /* APSD_SERVICE_AUTH_H */
