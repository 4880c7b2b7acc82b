/* apsd: the daemon. Flags, the INI configuration file, signals, start-up and
 * the graceful shutdown order (../shared/notes/grpc-core.md). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <grpc/grpc.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "apsd/engine.h"
#include "apsd_fdset.h"
#include "service/auth.h"
#include "service/log.h"
#include "service/pump.h"
#include "service/reflection.h"
#include "service/rpc.h"
#include "service/server.h"

#define MAX_LISTEN 16
#define MAX_STORES 16
#define MAX_EXECS 16
#define MAX_ALLOW 64
#define MAX_METHODS 64

typedef struct exec_cfg {
    char *name, *type;
    long max_workers, max_queue;
    char *allow[MAX_ALLOW];
    size_t n_allow;
    char *run_as_user, *run_as_group, *cwd;
    long max_output;
    double kill_grace_s, lease_s;
} exec_cfg;

typedef struct store_cfg {
    char *name, *type, *path;
} store_cfg;

typedef struct config {
    char *listen[MAX_LISTEN];
    size_t n_listen;
    char *data_dir, *timezone;
    char *tls_cert, *tls_key, *tls_client_ca, *token_file;
    int insecure_listen;
    char *allow[MAX_ALLOW];
    size_t n_allow;
    char *allow_env[MAX_ALLOW];
    size_t n_allow_env;
    char *run_as_user, *run_as_group;
    store_cfg stores[MAX_STORES];
    size_t n_stores;
    exec_cfg execs[MAX_EXECS];
    size_t n_execs;
    int coalesce;       /* -1 = default (true) */
    long max_instances; /* 0 = default (1) */
    char *misfire;      /* seconds or "unlimited"; NULL = 1 s */
    long event_max_count;
    double event_max_age_s, request_id_retention_s;
    int shutdown_wait;
    int allow_network_fs;
    double shutdown_grace_s;
    long cq_threads, engine_threads, engine_queue, max_message, requests_per_method;
    long max_subscribers, subscriber_queue, backfill_max_runs, max_health_watches;
    long loop_priority; /* -1 = not given (DEFAULT_LOOP_PRIORITY) */
    double commit_ahead_s, commit_ahead_max_s; /* -1 = not given (the engine's) */
    double pass_spacing_s;                     /* -1 = not given (the engine's) */
    long disk_reserve;                         /* bytes; -1 = not given (32 MiB) */
    long write_window;                         /* bytes; 0 = off */
    double heartbeat_s;
    char *log_level;
    char errbuf[512];
} config;

static const char usage_text[] =
    "Usage: apsd [OPTIONS]\n"
    "apsd: APScheduler rebuilt as a C daemon. Serves apsd.v1.Scheduler, apsd.v1.Workers,\n"
    "grpc.health.v1.Health and server reflection over gRPC.\n"
    "\n"
    "Options (flags override the config file):\n"
    "  --config FILE            INI configuration file (keys below)\n"
    "  --listen ADDR            listen address, repeatable: HOST:PORT, [::1]:PORT,\n"
    "                           unix:/path (default 127.0.0.1:50051)\n"
    "  --data-dir DIR           data directory of the LMDB job store (default ./var/apsd)\n"
    "  --timezone ZONE          default IANA time zone of triggers (default UTC)\n"
    "  --tls-cert FILE          server certificate chain (PEM): enables TLS\n"
    "  --tls-key FILE           server private key (PEM)\n"
    "  --tls-client-ca FILE     CA of client certificates (PEM): enables mTLS\n"
    "  --token-file FILE        bearer tokens: lines `role sha256hex` (role read|write);\n"
    "                           every call then needs `authorization: Bearer TOKEN`\n"
    "  --insecure-listen        allow a non-loopback listener without TLS and tokens\n"
    "                           (a warning is logged); otherwise such a listener is refused\n"
    "  --allow-command PATH     command allow-list entry, repeatable: an absolute\n"
    "                           executable, or a directory ending in '/'\n"
    "  --allow-env KEY          with an allow-list, an environment key jobs may set,\n"
    "                           repeatable (KEY, or a prefix ending in '*'; none by\n"
    "                           default: LD_PRELOAD, BASH_ENV or PATH run other code)\n"
    "  --run-as USER[:GROUP]    run commands as this user (the daemon must be root)\n"
    "  --log-level LEVEL        debug, info, warn, error (default info)\n"
    "  --cq-threads N           completion-queue threads (default 1)\n"
    "  --engine-threads N       threads making blocking engine calls (default 64)\n"
    "  --engine-queue N         requests waiting for them, and AddJob calls waiting\n"
    "                           for their commit; beyond: RESOURCE_EXHAUSTED\n"
    "                           (default 1024)\n"
    "  --max-message-bytes N    largest request accepted (default 4194304)\n"
    "  --max-subscribers N      SubscribeEvents streams at once (default 256)\n"
    "  --subscriber-queue N     undelivered events before a slow subscriber is cut with\n"
    "                           RESOURCE_EXHAUSTED (default 1024)\n"
    "  --heartbeat SECONDS      bookmark interval of idle event streams (default 30)\n"
    "  --shutdown-grace SECONDS how long open calls may take to end on SIGTERM (default 5)\n"
    "  --loop-priority N        SCHED_FIFO priority of the scheduler loop while it waits\n"
    "                           for due times, 1-99; 0 = normal scheduling (default 10;\n"
    "                           needs root, CAP_SYS_NICE or RLIMIT_RTPRIO, else normal)\n"
    "  -h, --help               this text\n"
    "  --version                the version\n"
    "\n"
    "Config file (INI; `#` or `;` comments; durations in seconds, decimals allowed):\n"
    "  [server]       listen (addresses separated by spaces or commas; may repeat),\n"
    "                 insecure_listen (bool), tls_cert, tls_key, tls_client_ca, token_file,\n"
    "                 cq_threads, engine_threads, engine_queue, max_message_bytes,\n"
    "                 requests_per_method (pre-posted gRPC requests, default 16),\n"
    "                 shutdown_grace\n"
    "  [scheduler]    data_dir, timezone, event_max_count (default 100000),\n"
    "                 event_max_age (default 604800), request_id_retention (default 3600),\n"
    "                 shutdown_wait (bool: on shutdown, wait for running commands and\n"
    "                 start those queued in the process pool; default false: stop them),\n"
    "                 loop_priority (0-99, default 10),\n"
    "                 commit_ahead (seconds before their time LMDB runs are committed,\n"
    "                 gathered from 3/4 of it, or it less 0.025; 0-60, 0 = at their\n"
    "                 time; default 0.05),\n"
    "                 commit_ahead_max (how far that widens while writes are slow\n"
    "                 or passes long, 0-60, 0 = not at all; default 1),\n"
    "                 pass_spacing (the least time between two wake-ups of the loop\n"
    "                 for due times, so that runs due close together share one;\n"
    "                 0-1, 0 = a wake-up per due time; default 0.00025),\n"
    "                 disk_reserve (bytes held in STORE_DIR/reserve and given back when\n"
    "                 the disk fills, so that jobs keep firing while new ones are\n"
    "                 refused; default 33554432, 0 = none),\n"
    "                 write_window (bytes an LMDB store writes before it reuses the\n"
    "                 pages its commits free: commits written in one run, not\n"
    "                 scattered, for disks slow at scattered writes; the file\n"
    "                 grows by up to twice this; default 0 = off),\n"
    "                 allow_network_fs (bool: open LMDB stores on a network file\n"
    "                 system anyway, for a store no other host ever opens: LMDB's\n"
    "                 lock works within one host; default false)\n"
    "  [job_defaults] coalesce (bool, default true), max_instances (default 1),\n"
    "                 misfire_grace_time (seconds or `unlimited`, default 1)\n"
    "  [limits]       max_subscribers, subscriber_queue, heartbeat_interval,\n"
    "                 max_health_watches (Health.Watch streams open at once,\n"
    "                 default 1024),\n"
    "                 backfill_max_runs (default 1000)\n"
    "  [commands]     allow (paths separated by spaces), run_as_user, run_as_group:\n"
    "                 for every processpool executor without its own;\n"
    "                 allow_env (keys separated by spaces, as --allow-env)\n"
    "  [log]          level\n"
    "  [jobstore NAME]  type (lmdb|memory), path (lmdb; default DATA_DIR, or\n"
    "                 DATA_DIR/NAME for stores other than `default`)\n"
    "  [executor NAME]  type (processpool|workers|threadpool), max_workers, max_queue,\n"
    "                 allow, run_as_user, run_as_group, cwd, max_output (bytes),\n"
    "                 kill_grace (processpool), lease (workers, default 30)\n"
    "Defaults: job stores `default` (lmdb in DATA_DIR) and `memory`; executors `default`\n"
    "(processpool, 10 workers) and `workers` (remote tasks through apsd.v1.Workers).\n"
    "\n"
    "Signals: SIGTERM/SIGINT shut down gracefully (streams end with UNAVAILABLE, exit 0);\n"
    "SIGHUP reopens logs (they go to stderr, so it only logs the request).\n";

/* ---- small parsers ------------------------------------------------------------ */

static char *
xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (d == NULL) {
        fputs("apsd: out of memory\n", stderr);
        exit(1);
    }
    return d;
}

static void
set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = xstrdup(v);
}

static int
parse_long(const char *v, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end != '\0' || n < min || n > max)
        return -1;
    *out = n;
    return 0;
}

static int
parse_double(const char *v, double min, double max, double *out)
{
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end != '\0' || !isfinite(d) || d < min || d > max)
        return -1;
    *out = d;
    return 0;
}

static int
parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
        !strcasecmp(v, "on")) {
        *out = 1;
        return 0;
    }
    if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
        !strcasecmp(v, "off")) {
        *out = 0;
        return 0;
    }
    return -1;
}

/* Splits on spaces and commas into list (at most max). -1 when full. */
static int
add_words(char **list, size_t *n, size_t max, const char *v)
{
    char *copy = xstrdup(v), *save = NULL;
    for (char *tok = strtok_r(copy, " ,\t", &save); tok; tok = strtok_r(NULL, " ,\t", &save)) {
        if (*n == max) {
            free(copy);
            return -1;
        }
        list[(*n)++] = xstrdup(tok);
    }
    free(copy);
    return 0;
}

static int
split_user(config *c, const char *v)
{
    const char *colon = strchr(v, ':');
    if (colon == NULL) {
        set_str(&c->run_as_user, v);
        return 0;
    }
    char *u = xstrdup(v);
    u[colon - v] = '\0';
    set_str(&c->run_as_user, u);
    set_str(&c->run_as_group, colon + 1);
    free(u);
    return 0;
}

/* ---- low space ------------------------------------------------------------------ */

/* Logs each store whose low space (aps_store_info.low_space) changed since
 * the last look; low[i] is what was seen. */
static void
watch_space(aps_scheduler *sched, int *low, size_t n)
{
    aps_store_info si;
    for (size_t i = 0; i < n && aps_scheduler_store_info(sched, i, &si) == 0; i++) {
        if (si.low_space == low[i])
            continue;
        low[i] = si.low_space;
        char q[160];
        if (si.low_space)
            aps_log(APS_LOG_WARN,
                    "disk full: the job store gave its reserve back; its jobs keep firing, AddJob "
                    "and Backfill are refused until space is freed",
                    "jobstore=%s", aps_log_q(si.name, q, sizeof q));
        else
            aps_log(APS_LOG_INFO, "disk space is back: the job store's reserve is made again",
                    "jobstore=%s", aps_log_q(si.name, q, sizeof q));
    }
}

/* ---- the config file ----------------------------------------------------------- */

static store_cfg *
store_named(config *c, const char *name)
{
    for (size_t i = 0; i < c->n_stores; i++)
        if (!strcmp(c->stores[i].name, name))
            return &c->stores[i];
    if (c->n_stores == MAX_STORES)
        return NULL;
    store_cfg *s = &c->stores[c->n_stores++];
    s->name = xstrdup(name);
    return s;
}

static exec_cfg *
exec_named(config *c, const char *name)
{
    for (size_t i = 0; i < c->n_execs; i++)
        if (!strcmp(c->execs[i].name, name))
            return &c->execs[i];
    if (c->n_execs == MAX_EXECS)
        return NULL;
    exec_cfg *e = &c->execs[c->n_execs++];
    e->name = xstrdup(name);
    return e;
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        snprintf(c->errbuf, sizeof c->errbuf, __VA_ARGS__);                                        \
        return 0;                                                                                  \
    } while (0)

/* One key (inih handler): 1 = ok, 0 = error (message in c->errbuf). */
static int
ini_key(void *ud, const char *section, const char *key, const char *v)
{
    config *c = ud;
    long n;
    double d;
    int b;
    if (!strcmp(section, "server")) {
        if (!strcmp(key, "listen")) {
            if (add_words(c->listen, &c->n_listen, MAX_LISTEN, v))
                BAD("[server] listen: at most %d addresses", MAX_LISTEN);
        } else if (!strcmp(key, "insecure_listen")) {
            if (parse_bool(v, &b))
                BAD("[server] insecure_listen: not a boolean: %s", v);
            c->insecure_listen = b;
        } else if (!strcmp(key, "tls_cert"))
            set_str(&c->tls_cert, v);
        else if (!strcmp(key, "tls_key"))
            set_str(&c->tls_key, v);
        else if (!strcmp(key, "tls_client_ca"))
            set_str(&c->tls_client_ca, v);
        else if (!strcmp(key, "token_file"))
            set_str(&c->token_file, v);
        else if (!strcmp(key, "cq_threads")) {
            if (parse_long(v, 1, 64, &c->cq_threads))
                BAD("[server] cq_threads: 1-64");
        } else if (!strcmp(key, "engine_threads")) {
            if (parse_long(v, 1, 256, &c->engine_threads))
                BAD("[server] engine_threads: 1-256");
        } else if (!strcmp(key, "engine_queue")) {
            if (parse_long(v, 1, 1000000, &c->engine_queue))
                BAD("[server] engine_queue: 1-1000000");
        } else if (!strcmp(key, "max_message_bytes")) {
            if (parse_long(v, 1024, 1L << 30, &c->max_message))
                BAD("[server] max_message_bytes: 1024-1073741824");
        } else if (!strcmp(key, "requests_per_method")) {
            if (parse_long(v, 1, 10000, &c->requests_per_method))
                BAD("[server] requests_per_method: 1-10000");
        } else if (!strcmp(key, "shutdown_grace")) {
            if (parse_double(v, 0, 3600, &c->shutdown_grace_s))
                BAD("[server] shutdown_grace: 0-3600 seconds");
        } else
            BAD("[server] %s: unknown key", key);
    } else if (!strcmp(section, "scheduler")) {
        if (!strcmp(key, "data_dir"))
            set_str(&c->data_dir, v);
        else if (!strcmp(key, "timezone"))
            set_str(&c->timezone, v);
        else if (!strcmp(key, "event_max_count")) {
            if (parse_long(v, 1, LONG_MAX, &c->event_max_count))
                BAD("[scheduler] event_max_count: a positive number");
        } else if (!strcmp(key, "event_max_age")) {
            if (parse_double(v, 1, 1e9, &c->event_max_age_s))
                BAD("[scheduler] event_max_age: seconds");
        } else if (!strcmp(key, "request_id_retention")) {
            if (parse_double(v, 1, 1e9, &c->request_id_retention_s))
                BAD("[scheduler] request_id_retention: seconds");
        } else if (!strcmp(key, "shutdown_wait")) {
            if (parse_bool(v, &c->shutdown_wait))
                BAD("[scheduler] shutdown_wait: not a boolean");
        } else if (!strcmp(key, "loop_priority")) {
            if (parse_long(v, 0, 99, &c->loop_priority))
                BAD("[scheduler] loop_priority: 0-99");
        } else if (!strcmp(key, "commit_ahead")) {
            if (parse_double(v, 0, 60, &c->commit_ahead_s))
                BAD("[scheduler] commit_ahead: 0-60 seconds");
        } else if (!strcmp(key, "commit_ahead_max")) {
            if (parse_double(v, 0, 60, &c->commit_ahead_max_s))
                BAD("[scheduler] commit_ahead_max: 0-60 seconds");
        } else if (!strcmp(key, "pass_spacing")) {
            if (parse_double(v, 0, 1, &c->pass_spacing_s))
                BAD("[scheduler] pass_spacing: 0-1 seconds");
        } else if (!strcmp(key, "disk_reserve")) {
            if (parse_long(v, 0, 1L << 40, &c->disk_reserve))
                BAD("[scheduler] disk_reserve: bytes, 0-1099511627776");
        } else if (!strcmp(key, "write_window")) {
            if (parse_long(v, 0, 1L << 40, &c->write_window))
                BAD("[scheduler] write_window: bytes, 0-1099511627776");
        } else if (!strcmp(key, "allow_network_fs")) {
            if (parse_bool(v, &c->allow_network_fs))
                BAD("[scheduler] allow_network_fs: not a boolean");
        } else
            BAD("[scheduler] %s: unknown key", key);
    } else if (!strcmp(section, "job_defaults")) {
        if (!strcmp(key, "coalesce")) {
            if (parse_bool(v, &c->coalesce))
                BAD("[job_defaults] coalesce: not a boolean");
        } else if (!strcmp(key, "max_instances")) {
            if (parse_long(v, 1, 1000000, &c->max_instances))
                BAD("[job_defaults] max_instances: >= 1");
        } else if (!strcmp(key, "misfire_grace_time")) {
            if (strcmp(v, "unlimited") && parse_double(v, 1e-6, 1e9, &d))
                BAD("[job_defaults] misfire_grace_time: seconds > 0 or `unlimited`");
            set_str(&c->misfire, v);
        } else
            BAD("[job_defaults] %s: unknown key", key);
    } else if (!strcmp(section, "limits")) {
        if (!strcmp(key, "max_subscribers")) {
            if (parse_long(v, 1, 100000, &c->max_subscribers))
                BAD("[limits] max_subscribers: 1-100000");
        } else if (!strcmp(key, "subscriber_queue")) {
            if (parse_long(v, 16, 1000000, &c->subscriber_queue))
                BAD("[limits] subscriber_queue: 16-1000000");
        } else if (!strcmp(key, "heartbeat_interval")) {
            if (parse_double(v, 0.01, 86400, &c->heartbeat_s))
                BAD("[limits] heartbeat_interval: seconds");
        } else if (!strcmp(key, "max_health_watches")) {
            if (parse_long(v, 1, 100000, &c->max_health_watches))
                BAD("[limits] max_health_watches: 1-100000");
        } else if (!strcmp(key, "backfill_max_runs")) {
            if (parse_long(v, 1, 100000, &c->backfill_max_runs))
                BAD("[limits] backfill_max_runs: 1-100000");
        } else
            BAD("[limits] %s: unknown key", key);
    } else if (!strcmp(section, "commands")) {
        if (!strcmp(key, "allow")) {
            if (add_words(c->allow, &c->n_allow, MAX_ALLOW, v))
                BAD("[commands] allow: at most %d entries", MAX_ALLOW);
        } else if (!strcmp(key, "allow_env")) {
            if (add_words(c->allow_env, &c->n_allow_env, MAX_ALLOW, v))
                BAD("[commands] allow_env: at most %d entries", MAX_ALLOW);
        } else if (!strcmp(key, "run_as_user"))
            set_str(&c->run_as_user, v);
        else if (!strcmp(key, "run_as_group"))
            set_str(&c->run_as_group, v);
        else
            BAD("[commands] %s: unknown key", key);
    } else if (!strcmp(section, "log")) {
        if (!strcmp(key, "level"))
            set_str(&c->log_level, v);
        else
            BAD("[log] %s: unknown key", key);
    } else if (!strncmp(section, "jobstore ", 9)) {
        store_cfg *s = store_named(c, section + 9);
        if (s == NULL)
            BAD("[%s]: at most %d job stores", section, MAX_STORES);
        if (!strcmp(key, "type"))
            set_str(&s->type, v);
        else if (!strcmp(key, "path"))
            set_str(&s->path, v);
        else
            BAD("[%s] %s: unknown key", section, key);
    } else if (!strncmp(section, "executor ", 9)) {
        exec_cfg *e = exec_named(c, section + 9);
        if (e == NULL)
            BAD("[%s]: at most %d executors", section, MAX_EXECS);
        if (!strcmp(key, "type"))
            set_str(&e->type, v);
        else if (!strcmp(key, "max_workers")) {
            if (parse_long(v, 1, 100000, &e->max_workers))
                BAD("[%s] max_workers: 1-100000", section);
        } else if (!strcmp(key, "max_queue")) {
            if (parse_long(v, 1, 10000000, &e->max_queue))
                BAD("[%s] max_queue: 1-10000000", section);
        } else if (!strcmp(key, "allow")) {
            if (add_words(e->allow, &e->n_allow, MAX_ALLOW, v))
                BAD("[%s] allow: at most %d entries", section, MAX_ALLOW);
        } else if (!strcmp(key, "run_as_user"))
            set_str(&e->run_as_user, v);
        else if (!strcmp(key, "run_as_group"))
            set_str(&e->run_as_group, v);
        else if (!strcmp(key, "cwd"))
            set_str(&e->cwd, v);
        else if (!strcmp(key, "max_output")) {
            if (parse_long(v, 1, 1L << 30, &e->max_output))
                BAD("[%s] max_output: bytes", section);
        } else if (!strcmp(key, "kill_grace")) {
            if (parse_double(v, 0.001, 3600, &e->kill_grace_s))
                BAD("[%s] kill_grace: seconds", section);
        } else if (!strcmp(key, "lease")) {
            if (parse_double(v, 1, 86400, &e->lease_s))
                BAD("[%s] lease: seconds", section);
        } else
            BAD("[%s] %s: unknown key", section, key);
    } else {
        BAD("[%s]: unknown section", section);
    }
    (void)n;
    return 1;
}
#undef BAD

/* ---- flags -------------------------------------------------------------------- */

enum {
    OPT_CONFIG = 1000,
    OPT_LISTEN,
    OPT_DATA_DIR,
    OPT_TIMEZONE,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_CA,
    OPT_TOKEN_FILE,
    OPT_INSECURE,
    OPT_ALLOW,
    OPT_RUN_AS,
    OPT_ALLOW_ENV,
    OPT_LOG_LEVEL,
    OPT_CQ,
    OPT_ENGINE_THREADS,
    OPT_ENGINE_QUEUE,
    OPT_MAX_MESSAGE,
    OPT_MAX_SUBS,
    OPT_SUB_QUEUE,
    OPT_HEARTBEAT,
    OPT_GRACE,
    OPT_LOOP_PRIORITY,
    OPT_VERSION,
};

static const struct option long_opts[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"timezone", required_argument, NULL, OPT_TIMEZONE},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-client-ca", required_argument, NULL, OPT_TLS_CA},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"insecure-listen", no_argument, NULL, OPT_INSECURE},
    {"allow-command", required_argument, NULL, OPT_ALLOW},
    {"allow-env", required_argument, NULL, OPT_ALLOW_ENV},
    {"run-as", required_argument, NULL, OPT_RUN_AS},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"cq-threads", required_argument, NULL, OPT_CQ},
    {"engine-threads", required_argument, NULL, OPT_ENGINE_THREADS},
    {"engine-queue", required_argument, NULL, OPT_ENGINE_QUEUE},
    {"max-message-bytes", required_argument, NULL, OPT_MAX_MESSAGE},
    {"max-subscribers", required_argument, NULL, OPT_MAX_SUBS},
    {"subscriber-queue", required_argument, NULL, OPT_SUB_QUEUE},
    {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
    {"shutdown-grace", required_argument, NULL, OPT_GRACE},
    {"loop-priority", required_argument, NULL, OPT_LOOP_PRIORITY},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void
die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "apsd: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'apsd --help'.\n");
    exit(2);
}

/* Applies the flags; `pass` 0 only looks for --config/--help/--version. */
static void
apply_flags(config *c, int argc, char **argv, int pass, const char **config_file)
{
    int cli_listen = 0;
    optind = 1;
    opterr = pass == 0;
    for (;;) {
        int o = getopt_long(argc, argv, "h", long_opts, NULL);
        if (o == -1)
            break;
        if (pass == 0) {
            if (o == 'h') {
                fputs(usage_text, stdout);
                exit(0);
            }
            if (o == OPT_VERSION) {
                printf("apsd %s\n", APSD_VERSION);
                exit(0);
            }
            if (o == '?')
                exit(2);
            if (o == OPT_CONFIG)
                *config_file = optarg;
            continue;
        }
        switch (o) {
        case OPT_LISTEN:
            if (!cli_listen) {
                for (size_t i = 0; i < c->n_listen; i++)
                    free(c->listen[i]);
                c->n_listen = 0;
                cli_listen = 1;
            }
            if (c->n_listen == MAX_LISTEN)
                die_usage("--listen: at most 16 addresses%s", "");
            c->listen[c->n_listen++] = xstrdup(optarg);
            break;
        case OPT_DATA_DIR:
            set_str(&c->data_dir, optarg);
            break;
        case OPT_TIMEZONE:
            set_str(&c->timezone, optarg);
            break;
        case OPT_TLS_CERT:
            set_str(&c->tls_cert, optarg);
            break;
        case OPT_TLS_KEY:
            set_str(&c->tls_key, optarg);
            break;
        case OPT_TLS_CA:
            set_str(&c->tls_client_ca, optarg);
            break;
        case OPT_TOKEN_FILE:
            set_str(&c->token_file, optarg);
            break;
        case OPT_INSECURE:
            c->insecure_listen = 1;
            break;
        case OPT_ALLOW:
            if (c->n_allow == MAX_ALLOW)
                die_usage("--allow-command: at most 64 entries%s", "");
            c->allow[c->n_allow++] = xstrdup(optarg);
            break;
        case OPT_ALLOW_ENV:
            if (c->n_allow_env == MAX_ALLOW)
                die_usage("--allow-env: at most 64 entries%s", "");
            c->allow_env[c->n_allow_env++] = xstrdup(optarg);
            break;
        case OPT_RUN_AS:
            split_user(c, optarg);
            break;
        case OPT_LOG_LEVEL:
            set_str(&c->log_level, optarg);
            break;
        case OPT_CQ:
            if (parse_long(optarg, 1, 64, &c->cq_threads))
                die_usage("--cq-threads: 1-64, not %s", optarg);
            break;
        case OPT_ENGINE_THREADS:
            if (parse_long(optarg, 1, 256, &c->engine_threads))
                die_usage("--engine-threads: 1-256, not %s", optarg);
            break;
        case OPT_ENGINE_QUEUE:
            if (parse_long(optarg, 1, 1000000, &c->engine_queue))
                die_usage("--engine-queue: 1-1000000, not %s", optarg);
            break;
        case OPT_MAX_MESSAGE:
            if (parse_long(optarg, 1024, 1L << 30, &c->max_message))
                die_usage("--max-message-bytes: 1024-1073741824, not %s", optarg);
            break;
        case OPT_MAX_SUBS:
            if (parse_long(optarg, 1, 100000, &c->max_subscribers))
                die_usage("--max-subscribers: 1-100000, not %s", optarg);
            break;
        case OPT_SUB_QUEUE:
            if (parse_long(optarg, 16, 1000000, &c->subscriber_queue))
                die_usage("--subscriber-queue: 16-1000000, not %s", optarg);
            break;
        case OPT_HEARTBEAT:
            if (parse_double(optarg, 0.01, 86400, &c->heartbeat_s))
                die_usage("--heartbeat: seconds, not %s", optarg);
            break;
        case OPT_GRACE:
            if (parse_double(optarg, 0, 3600, &c->shutdown_grace_s))
                die_usage("--shutdown-grace: 0-3600 seconds, not %s", optarg);
            break;
        case OPT_LOOP_PRIORITY:
            if (parse_long(optarg, 0, 99, &c->loop_priority))
                die_usage("--loop-priority: 0-99, not %s", optarg);
            break;
        default:
            break;
        }
    }
    if (pass == 1 && optind < argc)
        die_usage("unexpected argument: %s", argv[optind]);
}

static char *
read_file(const char *path, const char *what)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    if (f == NULL) {
        fprintf(stderr, "apsd: %s %s: %s\n", what, path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && n < (16L << 20) && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)n + 1);
            if (buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n) {
                buf[n] = '\0';
            } else {
                free(buf);
                buf = NULL;
            }
        }
    }
    fclose(f);
    if (buf == NULL)
        fprintf(stderr, "apsd: %s %s: cannot read it\n", what, path);
    return buf;
}

static int
mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* 1 if `p` is a port: digits and nothing else. */
static int
is_port(const char *p)
{
    if (*p == '\0')
        return 0;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

/* 1 for a loopback or local (unix socket) address. Only `127.x.y.z:PORT`
 * (an IPv4 literal: a host name such as `127.example.com` resolves to
 * anything), `[::1]:PORT` and `localhost:PORT` count, and nothing may follow
 * the port (gRPC's `ipv4:`/`ipv6:` targets take comma-separated lists:
 * `ipv4:127.0.0.1:1,0.0.0.0:2`). */
static int
is_loopback(const char *addr)
{
    if (!strncmp(addr, "unix:", 5) || !strncmp(addr, "unix-abstract:", 14))
        return 1;
    if (!strncmp(addr, "ipv4:", 5))
        addr += 5;
    else if (!strncmp(addr, "ipv6:", 5))
        addr += 5;
    if (!strncmp(addr, "127.", 4)) {
        const char *colon = strchr(addr, ':');
        size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
        char host[INET_ADDRSTRLEN];
        struct in_addr in;
        if (n >= sizeof host || (colon != NULL && !is_port(colon + 1)))
            return 0;
        memcpy(host, addr, n);
        host[n] = '\0';
        return inet_pton(AF_INET, host, &in) == 1;
    }
    if (!strncmp(addr, "localhost:", 10))
        return is_port(addr + 10);
    if (!strncmp(addr, "[::1]:", 6))
        return is_port(addr + 6);
    return 0;
}

/* Allow-list entries as the process executor keeps them (exec_process.c):
 * realpath'ed, directories still ending in '/', entries that do not exist
 * as written. AddJob's check compares them with the realpath of argv[0], so
 * on merged-/usr systems `--allow-command /bin/true` must read
 * `/usr/bin/true`, or nothing passes. */
static void
canonical_allow(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char real[PATH_MAX + 1];
        size_t al = strlen(v[i]);
        if (al == 0 || v[i][0] != '/' || realpath(v[i], real) == NULL)
            continue;
        size_t rl = strlen(real);
        if (v[i][al - 1] == '/' && real[rl - 1] != '/' && rl + 1 < sizeof real) {
            real[rl] = '/';
            real[rl + 1] = '\0';
        }
        free(v[i]);
        v[i] = xstrdup(real);
    }
}

/* ---- authorization --------------------------------------------------------------- */

static int
authorize(void *ud, const char *authorization, int write_method)
{
    return aps_auth_check(ud, authorization, write_method);
}

/* ---- main ---------------------------------------------------------------------------- */

static int64_t
secs_us(double s)
{
    return (int64_t)llround(s * 1e6);
}

/* A duration for an engine option whose 0 is its default and negative is
 * off, from seconds where 0 is off: not given (-1) = 0, the default; 0 s =
 * off; else at least 1 us. */
static int64_t
engine_us(double s)
{
    if (s < 0)
        return 0;
    if (s == 0)
        return -1;
    return secs_us(s) > 0 ? secs_us(s) : 1;
}

/* Why: a busy machine delays a normal thread's wake-up by milliseconds;
 * the loop only waits at this priority (see aps_scheduler_config). */
#define DEFAULT_LOOP_PRIORITY 10

/* What the loop got; refused is a warning only when asked for explicitly
 * (an unprivileged daemon with the default is normal). */
static void
log_loop_priority(int asked, int got, int explicit)
{
    if (got > 0)
        aps_log(APS_LOG_INFO, "scheduler loop waits at real-time priority",
                "policy=SCHED_FIFO priority=%d", got);
    else if (asked > 0)
        aps_log(explicit ? APS_LOG_WARN : APS_LOG_INFO,
                "scheduler loop at normal priority: SCHED_FIFO refused (needs root, "
                "CAP_SYS_NICE or RLIMIT_RTPRIO >= the priority; --loop-priority 0 to not ask)",
                "loop_priority=%d", asked);
}

int
main(int argc, char **argv)
{
    /* Static: what an early exit leaves allocated stays reachable (no leak
     * reports from exits on bad configuration). */
    static config c;
    const char *config_file = NULL;
    c.coalesce = -1;
    c.shutdown_grace_s = 5;
    c.heartbeat_s = 30;
    c.max_subscribers = 256;
    c.subscriber_queue = 1024;
    c.backfill_max_runs = 1000;
    c.max_health_watches = 1024;
    c.loop_priority = -1;
    c.commit_ahead_s = c.commit_ahead_max_s = c.pass_spacing_s = -1;
    c.disk_reserve = -1;

    apply_flags(&c, argc, argv, 0, &config_file);
    if (config_file != NULL) {
        int line = ini_parse(config_file, ini_key, &c);
        if (line < 0) {
            fprintf(stderr, "apsd: --config %s: %s\n", config_file, strerror(errno));
            return 2;
        }
        if (line > 0) {
            fprintf(stderr, "apsd: %s:%d: %s\n", config_file, line,
                    c.errbuf[0] ? c.errbuf : "syntax error");
            return 2;
        }
    }
    apply_flags(&c, argc, argv, 1, &config_file);
    if (c.n_listen == 0)
        c.listen[c.n_listen++] = xstrdup("127.0.0.1:50051");
    if (c.data_dir == NULL)
        c.data_dir = xstrdup("./var/apsd");
    if (c.log_level != NULL) {
        aps_log_level lv;
        if (aps_log_level_parse(c.log_level, &lv) != 0)
            die_usage("log level: debug, info, warn or error, not %s", c.log_level);
        aps_log_set_level(lv);
    }
    if ((c.tls_cert == NULL) != (c.tls_key == NULL))
        die_usage("--tls-cert and --tls-key go together%s", "");
    if (c.tls_client_ca != NULL && c.tls_cert == NULL)
        die_usage("--tls-client-ca needs --tls-cert and --tls-key%s", "");

    /* Security defaults: a listener others can reach needs TLS and tokens. */
    int protected_ = c.tls_cert != NULL && c.token_file != NULL;
    for (size_t i = 0; i < c.n_listen; i++) {
        if (is_loopback(c.listen[i]) || protected_)
            continue;
        if (!c.insecure_listen) {
            fprintf(stderr,
                    "apsd: refusing to listen on %s without TLS (--tls-cert/--tls-key) and "
                    "tokens (--token-file): apsd runs commands on request. Pass "
                    "--insecure-listen to do it anyway.\n",
                    c.listen[i]);
            return 2;
        }
        aps_log(APS_LOG_WARN, "INSECURE: a non-loopback listener without TLS and tokens", "addr=%s",
                c.listen[i]);
    }

    static char *cert, *key, *ca;
    if (c.tls_cert && ((cert = read_file(c.tls_cert, "--tls-cert")) == NULL ||
                       (key = read_file(c.tls_key, "--tls-key")) == NULL))
        return 2;
    if (c.tls_client_ca && (ca = read_file(c.tls_client_ca, "--tls-client-ca")) == NULL)
        return 2;
    static aps_auth *auth;
    if (c.token_file != NULL) {
        char err[256] = "";
        if (aps_auth_load(c.token_file, &auth, err, sizeof err) != 0) {
            fprintf(stderr, "apsd: --token-file %s: %s\n", c.token_file, err);
            return 2;
        }
    }

    /* Signals: blocked before any thread exists (gRPC's inherit the mask),
     * then taken with sigwait on the main thread. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (mkdirs(c.data_dir) != 0) {
        fprintf(stderr, "apsd: --data-dir %s: %s\n", c.data_dir, strerror(errno));
        return 1;
    }

    /* Job stores: `default` (lmdb in the data dir) and `memory` unless configured. */
    if (c.n_stores == 0) {
        store_cfg *s = store_named(&c, "default");
        s->type = xstrdup("lmdb");
        s = store_named(&c, "memory");
        s->type = xstrdup("memory");
    }
    aps_store_def sdefs[MAX_STORES];
    aps_app_store astores[MAX_STORES];
    static char *paths[MAX_STORES];
    for (size_t i = 0; i < c.n_stores; i++) {
        store_cfg *s = &c.stores[i];
        const char *type = s->type ? s->type : "lmdb";
        if (!strcmp(type, "lmdb") && s->path == NULL) {
            size_t n = strlen(c.data_dir) + strlen(s->name) + 2;
            paths[i] = malloc(n);
            if (paths[i] == NULL)
                return 1;
            if (!strcmp(s->name, "default"))
                snprintf(paths[i], n, "%s", c.data_dir);
            else
                snprintf(paths[i], n, "%s/%s", c.data_dir, s->name);
            if (mkdirs(paths[i]) != 0) {
                fprintf(stderr, "apsd: job store %s: %s: %s\n", s->name, paths[i], strerror(errno));
                return 1;
            }
        }
        sdefs[i] = (aps_store_def){s->name, type, s->path ? s->path : paths[i]};
        astores[i] = (aps_app_store){s->name, type};
    }

    /* Executors: `default` (processpool) and `workers` unless configured. */
    if (c.n_execs == 0) {
        exec_cfg *e = exec_named(&c, "default");
        e->type = xstrdup("processpool");
        e->max_workers = 10;
        e = exec_named(&c, "workers");
        e->type = xstrdup("workers");
    }
    canonical_allow(c.allow, c.n_allow);
    for (size_t i = 0; i < c.n_execs; i++)
        canonical_allow(c.execs[i].allow, c.execs[i].n_allow);
    aps_executor_def edefs[MAX_EXECS];
    aps_app_executor aexecs[MAX_EXECS];
    memset(edefs, 0, sizeof edefs);
    /* The pids of running commands, so that a restart after a crash stops
     * the ones the dead daemon left running. */
    static char running_dir[PATH_MAX];
    snprintf(running_dir, sizeof running_dir, "%s/running", c.data_dir);
    for (size_t i = 0; i < c.n_execs; i++) {
        exec_cfg *e = &c.execs[i];
        const char *type = e->type ? e->type : "processpool";
        aps_executor_def *d = &edefs[i];
        d->name = e->name;
        d->type = type;
        d->max_workers = (uint32_t)e->max_workers;
        d->max_queue = (uint32_t)e->max_queue;
        if (!strcmp(type, "processpool")) {
            d->allow = (const char *const *)(e->n_allow ? e->allow : c.n_allow ? c.allow : NULL);
            d->n_allow = e->n_allow ? e->n_allow : c.n_allow;
            d->allow_env = (const char *const *)c.allow_env;
            d->n_allow_env = c.n_allow_env;
            d->run_as_user = e->run_as_user ? e->run_as_user : c.run_as_user;
            d->run_as_group = e->run_as_group ? e->run_as_group : c.run_as_group;
            d->cwd = e->cwd;
            d->max_output = (uint32_t)e->max_output;
            d->kill_grace_us = secs_us(e->kill_grace_s);
            d->state_dir = running_dir;
        }
        if (!strcmp(type, "workers"))
            d->lease_us = e->lease_s > 0 ? secs_us(e->lease_s) : 30LL * 1000000;
        aexecs[i] =
            (aps_app_executor){e->name,      type,          d->max_workers ? d->max_workers : 10,
                               d->allow,     d->n_allow,    APS_OUTPUT_LIMIT_DEFAULT,
                               d->allow_env, d->n_allow_env};
    }

    aps_scheduler_config scfg;
    memset(&scfg, 0, sizeof scfg);
    scfg.stores = sdefs;
    scfg.n_stores = c.n_stores;
    scfg.executors = edefs;
    scfg.n_executors = c.n_execs;
    scfg.default_no_coalesce = c.coalesce == 0;
    scfg.default_max_instances = (uint32_t)c.max_instances;
    if (c.misfire != NULL && !strcmp(c.misfire, "unlimited")) {
        scfg.default_misfire = APS_MISFIRE_UNLIMITED;
    } else if (c.misfire != NULL) {
        scfg.default_misfire = APS_MISFIRE_DURATION;
        scfg.default_misfire_grace_us = secs_us(strtod(c.misfire, NULL));
    }
    scfg.timezone = c.timezone;
    scfg.event_max_count = (uint64_t)c.event_max_count;
    scfg.event_max_age_us = secs_us(c.event_max_age_s);
    scfg.request_id_retention_us = secs_us(c.request_id_retention_s);
    scfg.loop_priority = c.loop_priority < 0 ? DEFAULT_LOOP_PRIORITY : (int)c.loop_priority;
    scfg.commit_ahead_us = engine_us(c.commit_ahead_s);
    if (c.commit_ahead_max_s >= 0) /* 0: no widening (the engine's -1) */
        scfg.commit_ahead_max_us = c.commit_ahead_max_s > 0 ? secs_us(c.commit_ahead_max_s) : -1;
    scfg.pass_spacing_us = engine_us(c.pass_spacing_s);
    scfg.allow_network_fs = c.allow_network_fs;
    if (c.disk_reserve >= 0) /* here too, 0 is none */
        scfg.disk_reserve_bytes = c.disk_reserve > 0 ? c.disk_reserve : -1;
    scfg.write_window_bytes = c.write_window;

    aps_scheduler *sched = NULL;
    aps_error err = {0};
    int rc = aps_scheduler_create(&scfg, &sched, &err);
    if (rc != 0) {
        fprintf(stderr, "apsd: cannot start the scheduler: %s\n",
                err.msg[0] ? err.msg : aps_strerror(rc));
        return 1;
    }
    aps_executor_info xi;
    for (size_t i = 0; aps_scheduler_executor_info(sched, i, &xi) == 0; i++)
        if (xi.stopped_leftovers > 0)
            aps_log(APS_LOG_WARN, "stopped commands a crashed daemon left running",
                    "executor=%s commands=%u", xi.name, xi.stopped_leftovers);
    rc = aps_scheduler_start(sched, APS_RUN_BACKGROUND);
    if (rc != 0) {
        fprintf(stderr, "apsd: cannot start the scheduler: %s\n", aps_strerror(rc));
        aps_scheduler_destroy(sched);
        return 1;
    }
    log_loop_priority(scfg.loop_priority, aps_scheduler_loop_priority(sched),
                      c.loop_priority >= 0);

    aps_refl *refl = NULL;
    if (aps_refl_create(aps_fdset, aps_fdset_len, &refl) != 0)
        aps_log(APS_LOG_WARN, "reflection disabled: the embedded descriptor set does not load",
                NULL);

    static aps_app app;
    app.sched = sched;
    app.default_tz = c.timezone ? c.timezone : "UTC";
    app.start_time = aps_time_now();
    app.executors = aexecs;
    app.n_executors = c.n_execs;
    app.stores = astores;
    app.n_stores = c.n_stores;
    app.default_coalesce = c.coalesce != 0;
    app.default_max_instances = c.max_instances ? (int)c.max_instances : 1;
    app.default_misfire_unlimited = scfg.default_misfire == APS_MISFIRE_UNLIMITED;
    app.default_misfire_us =
        scfg.default_misfire == APS_MISFIRE_DURATION ? scfg.default_misfire_grace_us : 1000000;
    app.event_max_count = c.event_max_count ? (uint64_t)c.event_max_count : 100000;
    app.event_max_age_us =
        c.event_max_age_s > 0 ? secs_us(c.event_max_age_s) : 7LL * 86400 * 1000000;
    app.max_health_watches = (size_t)c.max_health_watches;
    app.max_subscribers = (int)c.max_subscribers;
    app.subscriber_queue = (size_t)c.subscriber_queue;
    app.heartbeat_us = secs_us(c.heartbeat_s);
    app.backfill_max_runs = (int)c.backfill_max_runs;
    if (aps_pump_create(c.heartbeat_s < 1 ? (int)(c.heartbeat_s * 1000) : 1000, &app.pump) != 0 ||
        aps_workers_init(&app) != 0) {
        fprintf(stderr, "apsd: out of resources\n");
        return 1;
    }

    static aps_method methods[MAX_METHODS];
    size_t nm = 0;
    int k = aps_scheduler_methods(&app, methods + nm, MAX_METHODS - nm);
    if (k > 0)
        nm += (size_t)k;
    k = aps_workers_methods(&app, methods + nm, MAX_METHODS - nm);
    if (k > 0)
        nm += (size_t)k;
    k = aps_builtin_methods(&app, refl, methods + nm, MAX_METHODS - nm);
    if (k > 0)
        nm += (size_t)k;

    grpc_init();
    aps_server_config sc = {
        .listen = (const char *const *)c.listen,
        .n_listen = c.n_listen,
        .tls_cert_pem = cert,
        .tls_key_pem = key,
        .tls_client_ca_pem = ca,
        .authorize = auth ? authorize : NULL,
        .authorize_ud = auth,
        .cq_threads = (int)c.cq_threads,
        .pool_threads = (int)c.engine_threads,
        .pool_queue = (size_t)c.engine_queue,
        .requests_per_method = (int)c.requests_per_method,
        .max_message = (size_t)c.max_message,
        .max_held = (size_t)c.max_health_watches,
    };
    char serr[256] = "";
    aps_server *srv = NULL;
    if (aps_server_create(&sc, methods, nm, &srv, serr, sizeof serr) != 0) {
        fprintf(stderr, "apsd: %s\n", serr);
        aps_pump_destroy(app.pump);
        aps_scheduler_destroy(sched);
        grpc_shutdown();
        return 1;
    }
    app.server = srv;
    app.max_adds = (int)c.engine_queue;
    if (aps_server_start(srv) != 0) {
        fprintf(stderr, "apsd: cannot start the server threads\n");
        return 1;
    }
    aps_log(APS_LOG_INFO, "apsd started", "version=%s pid=%d data_dir=%s methods=%zu tokens=%s",
            APSD_VERSION, (int)getpid(), c.data_dir, nm, auth ? "on" : "off");

    /* At once: a store that opens low on space (its reserve given back
     * before a restart) is told now, and its recovery later, whoever
     * makes the reserve again first (an AddJob may). */
    int low[MAX_STORES] = {0};
    watch_space(sched, low, c.n_stores);
    for (;;) {
        /* Each second: low space of the stores into the log (and the
         * reserve made again as soon as there is room, not at the next
         * add). */
        struct timespec tick = {1, 0};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig < 0) {
            watch_space(sched, low, c.n_stores);
            continue;
        }
        if (sig == SIGHUP) {
            aps_log_reopen();
            continue;
        }
        aps_log(APS_LOG_INFO, "shutting down", "signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
        break;
    }

    /* The order of ../shared/notes/grpc-core.md: no new calls; the calls
     * already accepted finish; the scheduler stops (streams see
     * SCHEDULER_SHUTDOWN and end with UNAVAILABLE); the rest is cancelled
     * after a grace period; then everything is freed, gRPC last. */
    int64_t grace_ms = (int64_t)(c.shutdown_grace_s * 1000);
    aps_server_shutdown_begin(srv);
    if (aps_server_drain_pool(srv, grace_ms) != 0)
        aps_log(APS_LOG_WARN, "engine calls still running after the grace period", NULL);
    /* AddJob calls waiting for their commit are answered from the store's
     * writer thread, which needs their calls alive: wait for them (a store
     * that never commits would hang the shutdown further down anyway). */
    for (int64_t waited_ms = 0; atomic_load(&app.n_adds) > 0; waited_ms += 5) {
        if (waited_ms == grace_ms)
            aps_log(APS_LOG_WARN, "AddJob calls still waiting for their commit", NULL);
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    aps_scheduler_shutdown(sched, c.shutdown_wait);
    for (int i = 0; i < 100 && aps_pump_count(app.pump) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    aps_pump_stop(app.pump);
    aps_server_finish_held(srv);
    aps_server_wait_calls(srv, grace_ms);
    aps_server_destroy(srv);
    aps_pump_destroy(app.pump);
    aps_workers_fini(&app);
    aps_scheduler_destroy(sched);
    aps_refl_destroy(refl);
    aps_auth_free(auth);
    grpc_shutdown();
    aps_log(APS_LOG_INFO, "apsd stopped", NULL);

    free(cert);
    free(key);
    free(ca);
    for (size_t i = 0; i < c.n_stores; i++) {
        free(paths[i]);
        free(c.stores[i].name);
        free(c.stores[i].type);
        free(c.stores[i].path);
    }
    for (size_t i = 0; i < c.n_execs; i++) {
        exec_cfg *e = &c.execs[i];
        for (size_t j = 0; j < e->n_allow; j++)
            free(e->allow[j]);
        free(e->name);
        free(e->type);
        free(e->run_as_user);
        free(e->run_as_group);
        free(e->cwd);
    }
    for (size_t i = 0; i < c.n_listen; i++)
        free(c.listen[i]);
    for (size_t i = 0; i < c.n_allow; i++)
        free(c.allow[i]);
    free(c.data_dir);
    free(c.timezone);
    free(c.tls_cert);
    free(c.tls_key);
    free(c.tls_client_ca);
    free(c.token_file);
    free(c.run_as_user);
    free(c.run_as_group);
    free(c.misfire);
    free(c.log_level);
    return 0;
}
