/*
 * apsd-token: makes a bearer token for apsd.
 *
 *   apsd-token [read|write]      (default: write)
 *
 * prints two lines on stdout: the token (32 random bytes from RAND_bytes,
 * base64url without padding: give it to the client, keep it secret) and
 * the line to append to the daemon's token file (`write <sha256 hex>`):
 *
 *   $ apsd-token read | { read -r tok; read -r line; echo "$line" >> tokens;
 *                         echo "$tok" > client.token; }
 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth.h"

#define TOKEN_BYTES 32

static size_t
base64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;

    for (; i + 3 <= n; i += 3) {
        unsigned long v = (unsigned long)in[i] << 16 | (unsigned long)in[i + 1] << 8 | in[i + 2];

        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        unsigned long v = (unsigned long)in[i] << 16;

        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned long v = (unsigned long)in[i] << 16 | (unsigned long)in[i + 1] << 8;

        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

int
main(int argc, char **argv)
{
    unsigned char raw[TOKEN_BYTES];
    char token[(TOKEN_BYTES + 2) / 3 * 4 + 1];
    char hex[65];
    const char *role = "write";
    size_t len;

    if (argc > 2 || (argc == 2 && strcmp(argv[1], "read") != 0 && strcmp(argv[1], "write") != 0)) {
        fprintf(stderr, "usage: apsd-token [read|write]\n"
                        "Prints a new bearer token, then its line for the apsd token file.\n");
        return 2;
    }
    if (argc == 2)
        role = argv[1];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        fprintf(stderr, "apsd-token: RAND_bytes failed\n");
        return 1;
    }
    len = base64url(raw, sizeof(raw), token);
    OPENSSL_cleanse(raw, sizeof(raw));
    if (aps_auth_hash_hex(token, len, hex) != 0) {
        fprintf(stderr, "apsd-token: SHA-256 failed\n");
        OPENSSL_cleanse(token, sizeof(token));
        return 1;
    }
    printf("%s\n%s %s\n", token, role, hex);
    OPENSSL_cleanse(token, sizeof(token));
    return fflush(stdout) == 0 ? 0 : 1;
}
