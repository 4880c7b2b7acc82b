/*
 * auth.c: bearer tokens, stored as SHA-256 hashes, in two roles.
 *
 * Why hashes: the token file can be read by operators and backed up
 * without handing out credentials; a token is 32 random bytes, so an
 * unsalted fast hash is enough (nothing to brute-force).
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "apsd/engine.h"
#include "auth.h"

#define HASH_LEN 32

struct entry {
    unsigned char hash[HASH_LEN];
    unsigned char write; /* 1: write role (implies read) */
};

struct aps_auth {
    struct entry *e;
    size_t n;
};

static int
fail(int rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int
is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Parses one line (comment and newline not yet removed) into `e`.
 * Returns 1 for an entry, 0 for a blank/comment line, or APS_EINVAL. */
static int
parse_line(char *line, struct entry *e, const char *file, size_t lineno, char *err, size_t errlen)
{
    char *hash_p, *end, *p = line;
    size_t role_len, hash_len;
    char *hash_comment = strchr(line, '#');

    if (hash_comment)
        *hash_comment = '\0';
    while (is_space((unsigned char)*p))
        p++;
    end = p + strlen(p);
    while (end > p && is_space((unsigned char)end[-1]))
        *--end = '\0';
    if (!*p)
        return 0;

    role_len = 0;
    while (p[role_len] && !is_space((unsigned char)p[role_len]))
        role_len++;
    hash_p = p + role_len;
    while (is_space((unsigned char)*hash_p))
        hash_p++;
    hash_len = 0;
    while (hash_p[hash_len] && !is_space((unsigned char)hash_p[hash_len]))
        hash_len++;
    if (!*hash_p || hash_p[hash_len])
        return fail(APS_EINVAL, err, errlen,
                    "%s:%zu: expected `read <sha256 hex>` or `write <sha256 hex>`", file, lineno);
    if (role_len == 4 && memcmp(p, "read", 4) == 0) {
        e->write = 0;
    } else if (role_len == 5 && memcmp(p, "write", 5) == 0) {
        e->write = 1;
    } else if (role_len <= 16) {
        /* Short enough not to be a token pasted by mistake: echo it. */
        return fail(APS_EINVAL, err, errlen,
                    "%s:%zu: unknown role \"%.*s\" (expected read or write)", file, lineno,
                    (int)role_len, p);
    } else {
        return fail(APS_EINVAL, err, errlen, "%s:%zu: unknown role (expected read or write)", file,
                    lineno);
    }
    if (hash_len != 2 * HASH_LEN)
        return fail(APS_EINVAL, err, errlen,
                    "%s:%zu: expected 64 hex digits (the SHA-256 of the token), got %zu "
                    "characters",
                    file, lineno, hash_len);
    for (size_t i = 0; i < HASH_LEN; i++) {
        int hi = hexval((unsigned char)hash_p[2 * i]),
            lo = hexval((unsigned char)hash_p[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return fail(APS_EINVAL, err, errlen,
                        "%s:%zu: expected 64 hex digits (the SHA-256 of the token), found a "
                        "non-hex character",
                        file, lineno);
        e->hash[i] = (unsigned char)(hi << 4 | lo);
    }
    return 1;
}

int
aps_auth_load(const char *token_file, aps_auth **out, char *err, size_t errlen)
{
    aps_auth *a = NULL;
    size_t *lines = NULL; /* line number of each entry, for duplicates */
    size_t cap = 0, lineno = 0, linecap = 0;
    char *line = NULL;
    FILE *f;
    int rc = 0;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    f = fopen(token_file, "r");
    if (!f) {
        int e = errno;

        return fail(e == ENOENT ? APS_ENOENT : APS_EIO, err, errlen, "%s: %s", token_file,
                    strerror(e));
    }
    a = calloc(1, sizeof(*a));
    if (!a) {
        rc = APS_ENOMEM;
        goto done;
    }
    for (;;) {
        struct entry e;
        ssize_t got;
        int r;

        errno = 0;
        got = getline(&line, &linecap, f);
        if (got < 0) {
            if (ferror(f))
                rc = fail(errno == ENOMEM ? APS_ENOMEM : APS_EIO, err, errlen, "%s: %s", token_file,
                          strerror(errno ? errno : EIO));
            break;
        }
        lineno++;
        if (memchr(line, '\0', (size_t)got)) {
            rc = fail(APS_EINVAL, err, errlen, "%s:%zu: NUL byte in line", token_file, lineno);
            break;
        }
        r = parse_line(line, &e, token_file, lineno, err, errlen);
        if (r < 0) {
            rc = r;
            break;
        }
        if (r == 0)
            continue;
        for (size_t i = 0; i < a->n; i++) {
            if (memcmp(a->e[i].hash, e.hash, HASH_LEN) == 0) {
                rc = fail(APS_EINVAL, err, errlen, "%s:%zu: same hash as line %zu", token_file,
                          lineno, lines[i]);
                goto done;
            }
        }
        if (a->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            void *p1 = realloc(a->e, ncap * sizeof(*a->e));

            if (!p1) {
                rc = APS_ENOMEM;
                break;
            }
            a->e = p1;
            p1 = realloc(lines, ncap * sizeof(*lines));
            if (!p1) {
                rc = APS_ENOMEM;
                break;
            }
            lines = p1;
            cap = ncap;
        }
        a->e[a->n] = e;
        lines[a->n] = lineno;
        a->n++;
    }
    if (rc == 0 && a->n == 0)
        rc = fail(APS_EINVAL, err, errlen,
                  "%s: no tokens (expected lines `read <sha256 hex>` or `write <sha256 hex>`)",
                  token_file);

done:
    if (rc == APS_ENOMEM && err && errlen && !err[0])
        fail(rc, err, errlen, "%s: out of memory", token_file);
    free(line);
    free(lines);
    fclose(f);
    if (rc) {
        aps_auth_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void
aps_auth_free(aps_auth *a)
{
    if (!a)
        return;
    if (a->e)
        OPENSSL_cleanse(a->e, a->n * sizeof(*a->e));
    free(a->e);
    free(a);
}

size_t
aps_auth_count(const aps_auth *a)
{
    return a ? a->n : 0;
}

static int
hash(const char *token, size_t len, unsigned char md[HASH_LEN])
{
    unsigned int mdlen = 0;

    if (EVP_Digest(token, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != HASH_LEN)
        return APS_EIO;
    return 0;
}

int
aps_auth_hash_hex(const char *token, size_t len, char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[HASH_LEN];

    if (hash(token, len, md) != 0)
        return APS_EIO;
    for (size_t i = 0; i < HASH_LEN; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
    return 0;
}

/* RFC 6750 b64token / RFC 7235 token68: 1*( ALPHA / DIGIT / "-" / "." /
 * "_" / "~" / "+" / "/" ) *"=". */
static int
is_token68(const char *t, size_t len)
{
    size_t i = 0;

    while (i < len && (isalnum((unsigned char)t[i]) || strchr("-._~+/", t[i])))
        i++;
    if (i == 0)
        return 0;
    while (i < len && t[i] == '=')
        i++;
    return i == len;
}

int
aps_auth_check(const aps_auth *a, const char *authorization, int write_method)
{
    unsigned char md[HASH_LEN];
    unsigned int found = 0, can_write = 0;
    const char *tok;
    size_t len;

    if (!a || !authorization)
        return APS_AUTH_UNAUTHENTICATED;
    if (strncasecmp(authorization, "Bearer", 6) != 0 || authorization[6] != ' ')
        return APS_AUTH_UNAUTHENTICATED;
    tok = authorization + 6;
    while (*tok == ' ')
        tok++;
    len = strnlen(tok, APS_AUTH_MAX_TOKEN + 1);
    if (len > APS_AUTH_MAX_TOKEN || !is_token68(tok, len))
        return APS_AUTH_UNAUTHENTICATED;
    if (hash(tok, len, md) != 0)
        return APS_AUTH_UNAUTHENTICATED;
    /* Every entry is compared, match or not: no early exit. */
    for (size_t i = 0; i < a->n; i++) {
        unsigned int eq = CRYPTO_memcmp(md, a->e[i].hash, HASH_LEN) == 0;

        found |= eq;
        can_write |= eq & a->e[i].write;
    }
    OPENSSL_cleanse(md, sizeof(md));
    if (!found)
        return APS_AUTH_UNAUTHENTICATED;
    if (write_method && !can_write)
        return APS_AUTH_PERMISSION_DENIED;
    return APS_AUTH_OK;
}
