/*
 * pbcheck.h: checks protobuf-c 1.4 leaves to the caller when it unpacks
 * an untrusted request (internal to the handlers).
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

/* 1 if the NUL-terminated `s` is well-formed UTF-8 (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF). */
static inline int
aps__pb_utf8_ok(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;

    while (*s) {
        unsigned c = *s, n;
        uint32_t cp;

        if (c < 0x80) {
            s++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        for (unsigned i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return 0; /* also stops at the NUL */
            cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        s += n + 1;
    }
    return 1;
}

#endif /* APSD_SERVICE_PBCHECK_H */
