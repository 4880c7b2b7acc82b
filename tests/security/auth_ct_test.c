/*
 * auth_ct_test.c: the token check's comparison does not depend on how much
 * of a wrong token matched.
 *
 * service/tests/auth_test.c already counts one CRYPTO_memcmp per stored
 * hash for right and wrong tokens. This test adds what an attacker could
 * vary: stored hashes that share 31 of 32 bytes with the hash of the
 * presented token, or only the last 31; a token that is a prefix of a valid
 * one, or a valid one plus a character. For each, every check calls
 * CRYPTO_memcmp once per stored hash, always over the whole 32 bytes, and
 * never an early-exit comparison (memcmp, bcmp, strcmp, strncmp are
 * wrapped with -Wl,--wrap and must not be called during a check). A loose
 * timing figure is printed and only checked within a factor of 4: the
 * compare is a few nanoseconds beside the SHA-256, so it shows no more
 * than the absence of a gross leak.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "service/auth.h"

/* ---- counters of the wrapped comparisons ---------------------------------- */

int __real_CRYPTO_memcmp(const void *a, const void *b, size_t len);
int __wrap_CRYPTO_memcmp(const void *a, const void *b, size_t len);
int __real_memcmp(const void *a, const void *b, size_t len);
int __wrap_memcmp(const void *a, const void *b, size_t len);
int __real_bcmp(const void *a, const void *b, size_t len);
int __wrap_bcmp(const void *a, const void *b, size_t len);
int __real_strcmp(const char *a, const char *b);
int __wrap_strcmp(const char *a, const char *b);
int __real_strncmp(const char *a, const char *b, size_t n);
int __wrap_strncmp(const char *a, const char *b, size_t n);

static size_t ct_calls, ct_short, plain_calls;

int
__wrap_CRYPTO_memcmp(const void *a, const void *b, size_t len)
{
    ct_calls++;
    if (len != 32)
        ct_short++; /* a partial compare would show here */
    return __real_CRYPTO_memcmp(a, b, len);
}

int
__wrap_memcmp(const void *a, const void *b, size_t len)
{
    plain_calls++;
    return __real_memcmp(a, b, len);
}

int
__wrap_bcmp(const void *a, const void *b, size_t len)
{
    plain_calls++;
    return __real_bcmp(a, b, len);
}

int
__wrap_strcmp(const char *a, const char *b)
{
    plain_calls++;
    return __real_strcmp(a, b);
}

int
__wrap_strncmp(const char *a, const char *b, size_t n)
{
    plain_calls++;
    return __real_strncmp(a, b, n);
}

/* ---- helpers ---------------------------------------------------------------- */

#define N_NEAR 64
#define TOKEN "presented-token-0123456789"
#define VALID "valid-write-token_abcdefghijklmnop"

static char path[512];

static void
hex_of(const unsigned char *b, char hex[65])
{
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = d[b[i] >> 4];
        hex[2 * i + 1] = d[b[i] & 15];
    }
    hex[64] = '\0';
}

static void
unhex(const char *hex, unsigned char b[32])
{
    for (int i = 0; i < 32; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        b[i] = (unsigned char)v;
    }
}

/* Loads a token file: the valid write token, then N_NEAR hashes that each
 * differ from SHA-256(TOKEN) in one byte only: byte 31 (`at_end`: a 31-byte
 * common prefix) or byte 0 (no common prefix). */
static aps_auth *
load_near(int at_end)
{
    char hex[65], line[128], err[256];
    unsigned char h[32], v[32];
    aps_auth *a = NULL;
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(aps_auth_hash_hex(VALID, strlen(VALID), hex), 0);
    fprintf(f, "write %s\n", hex);
    assert_int_equal(aps_auth_hash_hex(TOKEN, strlen(TOKEN), hex), 0);
    unhex(hex, h);
    for (int i = 0; i < N_NEAR; i++) {
        memcpy(v, h, 32);
        v[at_end ? 31 : 0] ^= (unsigned char)(i + 1); /* never 0: always wrong */
        hex_of(v, hex);
        snprintf(line, sizeof line, "%s %s\n", i % 2 ? "write" : "read", hex);
        fputs(line, f);
    }
    assert_int_equal(fclose(f), 0);
    if (aps_auth_load(path, &a, err, sizeof err) != 0)
        fail_msg("load: %s", err);
    assert_int_equal(aps_auth_count(a), N_NEAR + 1);
    return a;
}

static int
check_counted(const aps_auth *a, const char *hdr, int write)
{
    ct_calls = ct_short = plain_calls = 0;
    int rc = aps_auth_check(a, hdr, write);
    assert_int_equal(plain_calls, 0);
    assert_int_equal(ct_short, 0);
    return rc;
}

static int
setup(void **state)
{
    const char *dir = getenv("TEST_TMPDIR");

    (void)state;
    snprintf(path, sizeof(path), "%s/ct-tokens.%ld", dir ? dir : "/tmp", (long)getpid());
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void
test_same_calls_however_much_matched(void **state)
{
    static const struct {
        const char *hdr;
        int write, want;
    } cases[] = {
        {"Bearer " TOKEN, 0, APS_AUTH_UNAUTHENTICATED}, /* 31 bytes of some hash match */
        {"Bearer " VALID, 1, APS_AUTH_OK},              /* the first entry */
        {"Bearer " VALID, 0, APS_AUTH_OK},
        {"Bearer valid-write-token_abcdefghijklmno", 1, APS_AUTH_UNAUTHENTICATED}, /* a prefix */
        {"Bearer " VALID "q", 1, APS_AUTH_UNAUTHENTICATED}, /* one more character */
        {"Bearer Valid-write-token_abcdefghijklmnop", 1, APS_AUTH_UNAUTHENTICATED},
        {"Bearer x", 0, APS_AUTH_UNAUTHENTICATED},
    };

    (void)state;
    for (int at_end = 0; at_end < 2; at_end++) {
        aps_auth *a = load_near(at_end);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            int rc = check_counted(a, cases[i].hdr, cases[i].write);
            if (rc != cases[i].want)
                fail_msg("%s: got %d, want %d", cases[i].hdr, rc, cases[i].want);
            if (ct_calls != N_NEAR + 1)
                fail_msg("%s: %zu CRYPTO_memcmp calls, want %d", cases[i].hdr, ct_calls,
                         N_NEAR + 1);
        }
        /* Malformed headers are refused before any comparison. */
        assert_int_equal(check_counted(a, "Basic " VALID, 1), APS_AUTH_UNAUTHENTICATED);
        assert_int_equal(ct_calls, 0);
        assert_int_equal(check_counted(a, NULL, 0), APS_AUTH_UNAUTHENTICATED);
        assert_int_equal(ct_calls, 0);
        aps_auth_free(a);
    }
}

static double
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Median over batches of the time of one check of TOKEN. */
static double
time_check(const aps_auth *a, int iters)
{
    double batch[9];
    for (int b = 0; b < 9; b++) {
        double t0 = now_ns();
        for (int i = 0; i < iters; i++)
            (void)aps_auth_check(a, "Bearer " TOKEN, 0);
        batch[b] = (now_ns() - t0) / iters;
    }
    for (int i = 1; i < 9; i++) /* insertion sort */
        for (int j = i; j > 0 && batch[j - 1] > batch[j]; j--) {
            double t = batch[j];
            batch[j] = batch[j - 1];
            batch[j - 1] = t;
        }
    return batch[4];
}

static void
test_timing_loose(void **state)
{
    const char *san = getenv("APSD_SANITIZED");
    int iters = san && san[0] == '1' ? 200 : 2000;
    aps_auth *near = load_near(1), *far = load_near(0);

    (void)state;
    /* Interleaved, so that a frequency change hits both. */
    double t_near = 0, t_far = 0;
    for (int r = 0; r < 3; r++) {
        t_near += time_check(near, iters);
        t_far += time_check(far, iters);
    }
    double ratio = t_near / t_far;
    printf("auth-timing: %d stored hashes, a wrong token whose hash shares 31 bytes with each: "
           "%.0f ns; 0 leading bytes: %.0f ns; ratio %.3f\n",
           N_NEAR + 1, t_near / 3, t_far / 3, ratio);
    assert_true(ratio > 0.25 && ratio < 4.0);
    aps_auth_free(near);
    aps_auth_free(far);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_calls_however_much_matched),
        cmocka_unit_test(test_timing_loose),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
