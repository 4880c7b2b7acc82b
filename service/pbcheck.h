/*
 * pbcheck.h: checks protobuf-c 1.4 leaves to the caller when it unpacks
 * an untrusted request (internal to the service: the handlers, and
 * convert.c for its UTF-8 checks and repair).
 *
 * - Field number 0 is never valid, but protobuf-c rejects it only in a
 *   one-byte key: `80 00 2a` decodes, with an unknown field 0 that would
 *   be re-encoded if the message is echoed (reflection's original_request)
 *   and make the client's parser fail.
 * - proto3 `string` fields must be UTF-8 (protoc's and Go's parsers reject
 *   anything else); protobuf-c does not check, and what it lets through
 *   would come back in an echo or an error message.
 */
#ifndef APSD_SERVICE_PBCHECK_H
#define APSD_SERVICE_PBCHECK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

/* 1 if `m` kept an unknown field numbered 0. */
static inline int
aps__pb_has_field_zero(const ProtobufCMessage *m)
{
    for (size_t i = 0; i < m->n_unknown_fields; i++) {
        if (m->unknown_fields[i].tag == 0)
            return 1;
    }
    return 0;
}

/* The length of the UTF-8 sequence at s, of the n bytes there (RFC 3629:
 * no overlongs, no surrogates, nothing above U+10FFFF; a NUL is not one);
 * 0 if there is none. */
static inline size_t
aps__pb_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0], k;
    uint32_t cp;

    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        k = 1;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 2;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 3;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n <= k)
        return 0;
    for (unsigned j = 1; j <= k; j++) {
        if ((s[j] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[j] & 0x3f);
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k + 1;
}

/* 1 if the n bytes at s are well-formed UTF-8 without a NUL. */
static inline int
aps__pb_utf8_ok_n(const unsigned char *s, size_t n)
{
    for (size_t i = 0, k; i < n; i += k) {
        k = aps__pb_utf8_seq(s + i, n - i);
        if (k == 0)
            return 0;
    }
    return 1;
}

/* 1 if the NUL-terminated `s` is well-formed UTF-8. */
static inline int
aps__pb_utf8_ok(const char *str)
{
    return aps__pb_utf8_ok_n((const unsigned char *)str, strlen(str));
}

#endif /* APSD_SERVICE_PBCHECK_H */
