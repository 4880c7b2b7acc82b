/*
 * auth_test.c: service/auth.c: loading the token file (and its error
 * messages), the Authorization header forms, the roles, and the
 * constant-time path: every check compares with every stored hash
 * (CRYPTO_memcmp is wrapped with -Wl,--wrap to count the calls).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "service/auth.h"

/* ---- CRYPTO_memcmp counter ---------------------------------------- */

int __real_CRYPTO_memcmp(const void *a, const void *b, size_t len);
int __wrap_CRYPTO_memcmp(const void *a, const void *b, size_t len);

static size_t memcmp_calls;

int
__wrap_CRYPTO_memcmp(const void *a, const void *b, size_t len)
{
    memcmp_calls++;
    return __real_CRYPTO_memcmp(a, b, len);
}

/* ---- helpers -------------------------------------------------------- */

/* Tokens and their SHA-256 (printf %s TOKEN | sha256sum). */
#define TOK_READ "read-token-abc"
#define TOK_WRITE "write-token-XYZ_0123456789-~.+/="
static char hash_read[65], hash_write[65];

static char path[512];

static void
write_file(const char *content)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(content, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static int
load(const char *content, aps_auth **a, char *err, size_t errlen)
{
    write_file(content);
    return aps_auth_load(path, a, err, errlen);
}

static int
setup(void **state)
{
    const char *dir = getenv("TEST_TMPDIR");

    (void)state;
    snprintf(path, sizeof(path), "%s/tokens.%ld", dir ? dir : "/tmp", (long)getpid());
    if (aps_auth_hash_hex(TOK_READ, strlen(TOK_READ), hash_read) != 0 ||
        aps_auth_hash_hex(TOK_WRITE, strlen(TOK_WRITE), hash_write) != 0)
        return -1;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

/* A file with one read and one write token (and comments, blanks, CRLF,
 * upper-case hex). */
static aps_auth *
load_good(void)
{
    char content[1024], upper[65];
    aps_auth *a = NULL;
    char err[256];

    for (size_t i = 0; i < 65; i++)
        upper[i] = (char)((hash_write[i] >= 'a' && hash_write[i] <= 'f') ? hash_write[i] - 32
                                                                         : hash_write[i]);
    snprintf(content, sizeof(content),
             "# apsd tokens\n"
             "\n"
             "   read\t%s   # the dashboard\r\n"
             "\t\n"
             "write %s\n"
             "#write 0000\n",
             hash_read, upper);
    if (load(content, &a, err, sizeof(err)) != 0)
        fail_msg("load: %s", err);
    assert_int_equal(aps_auth_count(a), 2);
    return a;
}

/* ---- tests --------------------------------------------------------- */

static void
test_hash_hex(void **state)
{
    char hex[65];

    (void)state;
    /* FIPS 180-2 test vector. */
    assert_int_equal(aps_auth_hash_hex("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(aps_auth_hash_hex("", 0, hex), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void
test_roles(void **state)
{
    aps_auth *a = load_good();

    (void)state;
    assert_int_equal(aps_auth_check(a, "Bearer " TOK_READ, 0), APS_AUTH_OK);
    assert_int_equal(aps_auth_check(a, "Bearer " TOK_READ, 1), APS_AUTH_PERMISSION_DENIED);
    assert_int_equal(aps_auth_check(a, "Bearer " TOK_WRITE, 0), APS_AUTH_OK);
    assert_int_equal(aps_auth_check(a, "Bearer " TOK_WRITE, 1), APS_AUTH_OK);
    assert_int_equal(aps_auth_check(a, "Bearer unknown-token", 0), APS_AUTH_UNAUTHENTICATED);
    assert_int_equal(aps_auth_check(a, "Bearer unknown-token", 1), APS_AUTH_UNAUTHENTICATED);
    /* Scheme case-insensitive, several spaces. */
    assert_int_equal(aps_auth_check(a, "bearer " TOK_READ, 0), APS_AUTH_OK);
    assert_int_equal(aps_auth_check(a, "BEARER   " TOK_WRITE, 1), APS_AUTH_OK);
    aps_auth_free(a);
}

static void
test_malformed_headers(void **state)
{
    static const char *bad[] = {
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Bearer" TOK_READ,
        "Basic " TOK_READ,
        "Bearer\t" TOK_READ,
        " Bearer " TOK_READ,
        "Bearer " TOK_READ " ",
        "Bearer " TOK_READ " x",
        "Bearer " TOK_READ "\n",
        "Bearer =abc",
        "Bearer ab=c",
        "Bearer tok\xc3\xa9n",
        "Token " TOK_READ,
    };
    aps_auth *a = load_good();
    char *huge;

    (void)state;
    assert_int_equal(aps_auth_check(a, NULL, 0), APS_AUTH_UNAUTHENTICATED);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (aps_auth_check(a, bad[i], 0) != APS_AUTH_UNAUTHENTICATED)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    /* Over APS_AUTH_MAX_TOKEN characters: malformed, not hashed. */
    huge = malloc(APS_AUTH_MAX_TOKEN + 16);
    assert_non_null(huge);
    memcpy(huge, "Bearer ", 7);
    memset(huge + 7, 'a', APS_AUTH_MAX_TOKEN + 1);
    huge[7 + APS_AUTH_MAX_TOKEN + 1] = '\0';
    memcmp_calls = 0;
    assert_int_equal(aps_auth_check(a, huge, 0), APS_AUTH_UNAUTHENTICATED);
    assert_int_equal(memcmp_calls, 0);
    free(huge);
    /* No tokens loaded: fail closed. */
    assert_int_equal(aps_auth_check(NULL, "Bearer " TOK_WRITE, 0), APS_AUTH_UNAUTHENTICATED);
    aps_auth_free(a);
}

/* The same work whichever entry matches, and when none does. */
static void
test_constant_time_path(void **state)
{
    char content[64 * 80], line[80], hex[65], tok[32];
    aps_auth *a = NULL;
    char err[256];
    size_t off = 0;

    (void)state;
    for (int i = 0; i < 50; i++) {
        snprintf(tok, sizeof(tok), "token-%02d", i);
        assert_int_equal(aps_auth_hash_hex(tok, strlen(tok), hex), 0);
        snprintf(line, sizeof(line), "%s %s\n", i % 2 ? "write" : "read", hex);
        memcpy(content + off, line, strlen(line));
        off += strlen(line);
    }
    content[off] = '\0';
    if (load(content, &a, err, sizeof(err)) != 0)
        fail_msg("load: %s", err);
    assert_int_equal(aps_auth_count(a), 50);

    static const struct {
        const char *hdr;
        int write, want;
    } cases[] = {
        {"Bearer token-00", 0, APS_AUTH_OK}, /* first */
        {"Bearer token-49", 1, APS_AUTH_OK}, /* last */
        {"Bearer token-24", 0, APS_AUTH_OK},
        {"Bearer token-24", 1, APS_AUTH_PERMISSION_DENIED}, /* read role */
        {"Bearer token-50", 0, APS_AUTH_UNAUTHENTICATED},   /* none */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcmp_calls = 0;
        assert_int_equal(aps_auth_check(a, cases[i].hdr, cases[i].write), cases[i].want);
        assert_int_equal(memcmp_calls, 50);
    }
    aps_auth_free(a);
}

static void
test_load_errors(void **state)
{
    static const struct {
        const char *content; /* %s: a valid hash */
        const char *msg;     /* expected after "<path>:" */
    } cases[] = {
        {"read %s\nadmin %s\n", "2: unknown role \"admin\" (expected read or write)"},
        {"# c\n\nREAD %s\n", "3: unknown role \"READ\""},
        {"read\n", "1: expected `read <sha256 hex>` or `write <sha256 hex>`"},
        {"read %s extra\n", "1: expected `read <sha256 hex>`"},
        {"write abc123\n",
         "1: expected 64 hex digits (the SHA-256 of the token), got 6 characters"},
        {"\n\nwrite %.63sg\n",
         "3: expected 64 hex digits (the SHA-256 of the token), found a non-hex"},
        {"read %s\nwrite %s\n", "2: same hash as line 1"},
        {"", " no tokens"},
        {"# only comments\n\n", " no tokens"},
    };
    char content[512], err[256], want[1024];
    aps_auth *a = (aps_auth *)1;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(content, sizeof(content), cases[i].content, hash_read, hash_read);
        assert_int_equal(load(content, &a, err, sizeof(err)), APS_EINVAL);
        assert_null(a);
        snprintf(want, sizeof(want), "%s:%s", path, cases[i].msg);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s...\"", i, err, want);
    }

    /* A token pasted where the role goes is not echoed into the message. */
    snprintf(content, sizeof(content), "%s %s\n", "a-secret-token-someone-pasted-here", hash_read);
    assert_int_equal(load(content, &a, err, sizeof(err)), APS_EINVAL);
    assert_null(strstr(err, "a-secret-token"));
    assert_non_null(strstr(err, ":1: unknown role"));
    /* Nor one pasted instead of the hash. */
    snprintf(content, sizeof(content), "read a-secret-token-someone-pasted-here\n");
    assert_int_equal(load(content, &a, err, sizeof(err)), APS_EINVAL);
    assert_null(strstr(err, "a-secret-token"));

    /* NUL byte inside a line. */
    {
        FILE *f = fopen(path, "w");

        assert_non_null(f);
        fwrite("read \0x\n", 1, 8, f);
        fclose(f);
        assert_int_equal(aps_auth_load(path, &a, err, sizeof(err)), APS_EINVAL);
        assert_non_null(strstr(err, ":1: NUL byte"));
    }

    /* Missing file; a directory. */
    assert_int_equal(aps_auth_load("/nonexistent/apsd/tokens", &a, err, sizeof(err)), APS_ENOENT);
    assert_string_equal(err, "/nonexistent/apsd/tokens: No such file or directory");
    assert_null(a);
    assert_int_equal(aps_auth_load("/", &a, err, sizeof(err)), APS_EIO);
    assert_null(a);
    /* err may be NULL; a tiny buffer truncates. */
    write_file("bogus\n");
    assert_int_equal(aps_auth_load(path, &a, NULL, 0), APS_EINVAL);
    assert_int_equal(aps_auth_load(path, &a, err, 4), APS_EINVAL);
    assert_int_equal(strlen(err), 3);
    aps_auth_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_hex),          cmocka_unit_test(test_roles),
        cmocka_unit_test(test_malformed_headers), cmocka_unit_test(test_constant_time_path),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
