/*
 * tools/conformance: runs trigger conformance vectors against the engine.
 *
 *   conformance FILE.jsonl...
 *
 * Prints each failing vector (id, expected and actual fire times) and ends
 * with "N passed, M failed". Exit status: 0 when every vector passed, 1
 * when some failed, 2 for a usage error or an unreadable file.
 */
#include <stdio.h>
#include <string.h>

#include "apsd/engine.h"
#include "conformance.h"

static void usage(FILE *out)
{
    fputs("usage: conformance [--server HOST:PORT] FILE.jsonl...\n"
          "\n"
          "Runs trigger conformance vectors (shared/conformance/README.md) against\n"
          "the engine's triggers and prints the failing vectors, then\n"
          "\"N passed, M failed\". Exits 0 only when none failed.\n"
          "\n"
          "  --server HOST:PORT  run the vectors through a running apsd's\n"
          "                      PreviewTrigger RPC instead (handled by the\n"
          "                      tools/conformance wrapper, with the Python client\n"
          "                      tools/conform/preview_client.py)\n"
          "  -h, --help          show this help\n",
          out);
}

int main(int argc, char **argv)
{
    aps_conform_stats stats = {0, 0, 0};
    int i, nfiles = 0, broken = 0, opts_done = 0;
    aps_error err;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!opts_done && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            usage(stdout);
            return 0;
        }
        if (!opts_done && (!strcmp(a, "--server") || !strncmp(a, "--server=", 9))) {
            fprintf(stderr, "conformance: --server: run it as tools/conformance --server "
                            "HOST:PORT FILE.jsonl... (the wrapper uses the Python client)\n");
            return 2;
        }
        if (!opts_done && !strcmp(a, "--")) {
            opts_done = 1;
            continue;
        }
        if (!opts_done && a[0] == '-' && a[1]) {
            fprintf(stderr, "conformance: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        nfiles++;
    }
    if (nfiles == 0) {
        usage(stderr);
        return 2;
    }
    opts_done = 0;
    for (i = 1; i < argc; i++) {
        if (!opts_done && !strcmp(argv[i], "--")) {
            opts_done = 1;
            continue;
        }
        if (!opts_done && argv[i][0] == '-' && argv[i][1])
            continue;
        memset(&err, 0, sizeof err);
        if (aps_conform_run_file(argv[i], stdout, &stats, &err)) {
            fprintf(stderr, "conformance: %s\n", err.msg);
            broken = 1;
        }
    }
    if (stats.tzdata)
        printf("note: %zu of the failed vectors expect UTC offsets that this machine's "
               "tzdata does not have (the oracle ran with other tzdata)\n",
               stats.tzdata);
    printf("%zu passed, %zu failed\n", stats.passed, stats.failed);
    fflush(stdout);
    if (broken)
        return 2;
    return stats.failed ? 1 : 0;
}
