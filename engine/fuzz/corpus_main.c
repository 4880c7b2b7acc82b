/*
 * Runs a libFuzzer target once over each of its inputs, without libFuzzer:
 * the checked-in seeds and the regression inputs of crashes the fuzzers
 * found (corpus/NAME/regress-*), as a plain `bazel test` (and so also under
 * `--config=asan`). Linked with a NAME_fuzz.c in place of libFuzzer's main.
 *
 *   corpus_test DIR_OR_FILE...
 *
 * A crash or abort fails the test as it would fail the fuzzer; the exit
 * status is 1 when an input cannot be read or no input was found.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs one file. 0, or -1 if it cannot be read. */
static int
run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;
    int rc = -1;

    if (f == NULL)
        goto out;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    /* At least one byte, so that an empty input is a valid pointer. */
    buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n)
        goto out;
    printf("%s (%ld bytes)\n", path, n);
    fflush(stdout);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "corpus_test: cannot read %s\n", path);
    free(buf);
    if (f != NULL)
        fclose(f);
    return rc;
}

/* Runs every file of a directory, in name order. @return files run, -1. */
static long
run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;
    long done = 0;

    if (d == NULL) {
        fprintf(stderr, "corpus_test: cannot open %s\n", dir);
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **v = realloc(names, cap * sizeof(*v));
            if (v == NULL)
                abort();
            names = v;
        }
        names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        if (names[n] == NULL)
            abort();
        sprintf(names[n], "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp);
    for (size_t i = 0; i < n; i++) {
        if (done >= 0)
            done = run_file(names[i]) == 0 ? done + 1 : -1;
        free(names[i]);
    }
    free(names);
    return done;
}

int
main(int argc, char **argv)
{
    long total = 0;

    for (int i = 1; i < argc; i++) {
        struct stat st;
        long n;

        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "corpus_test: no such input %s\n", argv[i]);
            return 1;
        }
        n = S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i]) == 0 ? 1 : -1;
        if (n < 0)
            return 1;
        total += n;
    }
    printf("corpus_test: %ld inputs, no crash\n", total);
    return total > 0 ? 0 : 1;
}
