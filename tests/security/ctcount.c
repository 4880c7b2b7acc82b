/*
 * ctcount.c: an LD_PRELOAD library for test_auth_tls.py. It interposes
 * OpenSSL's CRYPTO_memcmp in the real apsd process (which links libcrypto
 * dynamically) and counts the 32-byte calls, the token check's comparisons
 * of SHA-256 hashes, so the test sees that every authenticated call of the
 * daemon goes through the constant-time compare, once per stored token.
 *
 * The count is written (20 digits and a newline) at offset 0 of the file
 * named by APSD_CT_COUNT_FILE after each call, before the call returns: an
 * RPC's reply is sent after its check, so the file is current when the
 * client has the reply.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef int (*memcmp_fn)(const volatile void *, const volatile void *, size_t);

int CRYPTO_memcmp(const volatile void *a, const volatile void *b, size_t len);

static atomic_ulong calls;

int
CRYPTO_memcmp(const volatile void *a, const volatile void *b, size_t len)
{
    static _Atomic(memcmp_fn) real;
    static atomic_int fd = -1;
    memcmp_fn f = atomic_load(&real);

    if (f == NULL) {
        f = (memcmp_fn)dlsym(RTLD_NEXT, "CRYPTO_memcmp");
        if (f == NULL)
            abort();
        atomic_store(&real, f);
    }
    if (len == 32) {
        unsigned long n = atomic_fetch_add(&calls, 1) + 1;
        int d = atomic_load(&fd);
        if (d < 0) {
            const char *p = getenv("APSD_CT_COUNT_FILE");
            if (p != NULL) {
                int nd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                int expected = -1;
                if (nd >= 0 && !atomic_compare_exchange_strong(&fd, &expected, nd))
                    close(nd);
                d = atomic_load(&fd);
            }
        }
        if (d >= 0) {
            char buf[32];
            int k = snprintf(buf, sizeof buf, "%020lu\n", n);
            if (pwrite(d, buf, (size_t)k, 0) != k)
                abort();
        }
    }
    return f(a, b, len);
}
