/*
 * The process executor ("processpool"): runs command targets
 * (APS_TARGET_COMMAND) as child processes, APScheduler's
 * ProcessPoolExecutor for programs instead of Python callables.
 *
 * Event-driven, as DESIGN.md asks: one loop thread per executor owns every
 * child. It waits in epoll on, per child, a pidfd (readable when the child
 * exits) and the read ends of its stdout and stderr pipes, plus an eventfd
 * that other threads poke after a submit, cancel or shutdown. Where
 * pidfd_open is missing (kernels before 5.3, some sandboxes) a
 * signalfd(SIGCHLD) and a 50 ms poll take its place.
 *
 * A run occupies one of max_workers slots while its run times execute, one
 * child after another (APScheduler's run_job loops over run_times); further
 * runs wait in a bounded FIFO. A child is finished when it has exited and
 * both pipes reached EOF, or, if something it forked keeps a pipe open, a
 * short drain window after its exit. Its exit is observed with
 * waitid(WNOWAIT) and it is reaped only when the run time is recorded: the
 * zombie keeps its pid, which is also its process group id, from being
 * reused, so signalling the group (timeout, cancel, shutdown, stragglers)
 * can never hit an unrelated process.
 *
 * Children start with posix_spawn (glibc uses clone(CLONE_VFORK), cheap even
 * for a large daemon). Running as another user or with rlimits needs
 * set*id/setrlimit between fork and exec, which posix_spawn cannot do, so
 * only then a fork() path is taken; its child calls nothing but syscalls.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"
#include "exec_process.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same number on every architecture */
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define DEFAULT_MAX_WORKERS 10u
#define DEFAULT_MAX_QUEUE 10000u
#define MAX_WORKERS 1024u
#define DEFAULT_MAX_OUTPUT (64u * 1024)
#define DEFAULT_OUTPUT_LIMIT APS_OUTPUT_LIMIT_DEFAULT
#define DEFAULT_GRACE_US INT64_C(5000000)
/* The longest kill grace: a day (now + it stays far from overflow). */
#define MAX_GRACE_US (INT64_C(86400) * 1000000)
#define DEFAULT_PATH "PATH=/usr/local/bin:/usr/bin:/bin"
/* How long pipes may stay open after the child exited (a grandchild holding
 * them must not hold the run). */
#define DRAIN_US INT64_C(100000)
/* The signalfd fallback's poll period: SIGCHLD may go to another thread. */
#define POLL_TICK_US INT64_C(50000)
#define READ_CHUNK 65536
/* Reads per readiness event: a flooding child gets 256 KiB, then the others
 * get their turn (epoll is level-triggered, so it comes back). */
#define READS_PER_EVENT 4
#define EV_BATCH 64

/* epoll data: the eventfd, the signalfd, or (generation << 32 | slot << 2 |
 * which) for a child's fds. The generation tells a stale event of a
 * finished child from one of the next child in the same slot. */
#define EV_WAKE UINT64_MAX
#define EV_SIGNAL (UINT64_MAX - 1)
enum { W_OUT = 0, W_ERR = 1, W_PID = 2 };

/* Why a child is being terminated. */
enum term { TERM_NONE = 0, TERM_TIMEOUT, TERM_CANCEL, TERM_SHUTDOWN };

/* Where the fork path's child failed. */
enum stage { ST_SETUP = 1, ST_CHDIR, ST_RLIMIT, ST_SETGROUPS, ST_SETGID, ST_SETUID, ST_EXEC };

static volatile int force_signalfd; /* tests: aps__executor_process_force_signalfd */

/* ---- bounded output tails --------------------------------------------------- */

/* The last `cap` bytes of a stream. The buffer grows on demand up to cap (a
 * quiet command costs nothing), then becomes a ring. */
typedef struct tail {
    char *buf;
    size_t cap;   /* the bound */
    size_t alloc; /* bytes allocated, <= cap */
    size_t len;   /* bytes held */
    size_t start; /* the oldest byte, once the ring wrapped */
    uint64_t total; /* bytes seen: more than len means truncated */
} tail;

static void
tail_reset(tail *t, size_t cap)
{
    free(t->buf);
    memset(t, 0, sizeof(*t));
    t->cap = cap ? cap : 1;
}

static void
tail_append(tail *t, const char *p, size_t n)
{
    t->total += n;
    if (n == 0)
        return;
    if (n >= t->cap) {
        /* Only the end of this chunk survives. */
        p += n - t->cap;
        n = t->cap;
        t->start = 0;
        t->len = 0;
    }
    if (t->len + n > t->alloc && t->alloc < t->cap) {
        /* Growing happens only before the ring wraps: start is 0. */
        size_t want = t->alloc ? t->alloc : 4096;
        while (want < t->len + n && want < t->cap)
            want *= 2;
        if (want > t->cap)
            want = t->cap;
        char *nb = realloc(t->buf, want);
        if (nb == NULL)
            return; /* dropped; total > len reports it as truncated */
        t->buf = nb;
        t->alloc = want;
    }
    if (t->len + n > t->alloc) {
        /* alloc == cap here: drop the oldest bytes. */
        size_t drop = t->len + n - t->alloc;
        t->start = (t->start + drop) % t->alloc;
        t->len -= drop;
    }
    size_t pos = (t->start + t->len) % t->alloc;
    size_t first = t->alloc - pos < n ? t->alloc - pos : n;
    memcpy(t->buf + pos, p, first);
    memcpy(t->buf, p + first, n - first);
    t->len += n;
}

/* Moves the tail into an outcome's (buffer, length, truncated) and frees
 * the ring. */
static void
tail_take(tail *t, void **out, size_t *out_len, int *truncated)
{
    char *b = NULL;
    size_t len = t->len;

    if (len > 0) {
        b = malloc(len);
        if (b != NULL) {
            size_t first = t->alloc - t->start < len ? t->alloc - t->start : len;
            memcpy(b, t->buf + t->start, first);
            memcpy(b + first, t->buf, len - first);
        } else {
            len = 0;
        }
    }
    *out = b;
    *out_len = len;
    *truncated = t->total > len;
    tail_reset(t, t->cap);
}

/* ---- the executor ------------------------------------------------------------ */

/* A worker slot: the run it executes and its current child. Everything but
 * `run` belongs to the loop thread; `run` is written under pp->mu so that
 * cancel can find it. */
typedef struct slot {
    aps__run *run; /* NULL = free */
    size_t rt;     /* the run time being executed */
    uint32_t gen;  /* bumped for every child */
    pid_t pid;     /* the child, also its process group; 0 = none */
    int pidfd;     /* -1: none, or its exit already seen */
    int fd[2];     /* read ends of stdout, stderr; -1 once closed */
    tail out[2];
    int exited;    /* its exit was seen; a zombie until reaped */
    int lost;      /* reaped by someone else (SIGCHLD ignored, waitpid(-1)) */
    int wcode, wstatus; /* siginfo si_code (CLD_*) and si_status of the exit */
    aps_time started;  /* scheduler clock */
    int64_t timeout_at; /* monotonic microseconds; 0 = no timeout */
    int64_t kill_at;    /* SIGKILL due, once terminating */
    int64_t drain_at;   /* after the exit: close the pipes then */
    enum term term;
    enum term pending;  /* a termination asked for under the lock */
    int killed;         /* SIGKILL sent */
} slot;

typedef struct rlim_set {
    int resource;
    rlim_t value;
} rlim_set;

typedef struct procpool {
    aps__executor base; /* first: the executor handle */
    aps_scheduler *sched;

    /* configuration, immutable after create */
    char **base_env;
    size_t n_base_env;
    char *cwd;
    uint32_t max_output, max_output_limit;
    int64_t kill_grace_us;
    char **allow; /* canonical: realpath'ed, directories end in '/' */
    size_t n_allow;
    char **allow_env; /* with `allow`: the env keys a job may set */
    size_t n_allow_env;
    int run_as;
    uid_t uid;
    gid_t gid;
    gid_t *groups;
    size_t n_groups;
    rlim_set rlim[3];
    size_t n_rlim;
    int use_fork; /* run-as or rlimits: fork+exec instead of posix_spawn */
    char *note_dir; /* where running children's pids are noted; NULL = nowhere */
    uint32_t stopped_leftovers;
    int devnull;  /* every child's stdin */
    aps__reaper reaper;

    pthread_mutex_t mu; /* guards what follows, up to the loop's own state */
    aps__run **queue;   /* ring of qcap entries */
    size_t qcap, head, count;
    int stopping, kill_all, cancel_pending;
    int have_thread, join_claimed;
    uint32_t busy, children, peak;
    uint64_t spawned, spawn_failed;

    /* the loop thread's own */
    pthread_t thread;
    int epfd, wakefd, sigfd;
    slot *slots;
    char *scratch;
    int64_t next_poll; /* fallback reaping: when to poll children next */
} procpool;

static const aps__executor_ops process_ops;

static void
wake(procpool *pp)
{
    uint64_t one = 1;
    ssize_t w = write(pp->wakefd, &one, sizeof(one));
    (void)w; /* a saturated counter is still readable */
}

/* "No such file or directory" -> "no such file or directory". */
static void
errno_text(int e, char *buf, size_t len)
{
    snprintf(buf, len, "%s", strerror(e));
    if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
        buf[0] = (char)(buf[0] - 'A' + 'a');
}

static void
set_error(aps_outcome *o, aps_run_status status, const char *fmt, ...)
{
    char msg[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    o->status = status;
    free(o->error);
    o->error = strdup(msg);
}

/* 2000000 -> "2s", 1500000 -> "1500ms". */
static void
fmt_duration(int64_t us, char *buf, size_t len)
{
    if (us % 1000000 == 0)
        snprintf(buf, len, "%llds", (long long)(us / 1000000));
    else if (us % 1000 == 0)
        snprintf(buf, len, "%lldms", (long long)(us / 1000));
    else
        snprintf(buf, len, "%lldus", (long long)us);
}

/* ---- what to run: environment, executable, allow-list ----------------------- */

/* 1 if "K=..." entries a and b have the same key. */
static int
same_key(const char *a, const char *b)
{
    while (*a && *a != '=' && *a == *b) {
        a++;
        b++;
    }
    return (*a == '=' || *a == '\0') && (*b == '=' || *b == '\0');
}

static int
key_in(char *const *v, size_t n, const char *kv)
{
    for (size_t i = 0; i < n; i++) {
        if (same_key(v[i], kv))
            return 1;
    }
    return 0;
}

/* The child's environment: the base entries the job does not override, then
 * the job's (the last of repeated keys wins). Strings are borrowed. */
static char **
build_env(const procpool *pp, const aps_target *t)
{
    char *const *je = t->u.command.env;
    size_t nj = je ? t->u.command.envc : 0, n = 0;
    char **v = malloc((pp->n_base_env + nj + 1) * sizeof(*v));

    if (v == NULL)
        return NULL;
    for (size_t i = 0; i < pp->n_base_env; i++) {
        if (!key_in(je, nj, pp->base_env[i]))
            v[n++] = pp->base_env[i];
    }
    for (size_t i = 0; i < nj; i++) {
        if (!key_in(je + i + 1, nj - i - 1, je[i]))
            v[n++] = je[i];
    }
    v[n] = NULL;
    return v;
}

static const char *
env_get(char *const *envp, const char *key)
{
    size_t kl = strlen(key);
    for (; *envp; envp++) {
        if (strncmp(*envp, key, kl) == 0 && (*envp)[kl] == '=')
            return *envp + kl + 1;
    }
    return NULL;
}

/* 0 if `p` is an executable regular file, else the errno exec would give. */
static int
check_exe(const char *p)
{
    struct stat st;
    if (stat(p, &st) != 0)
        return errno;
    if (S_ISDIR(st.st_mode))
        return EISDIR;
    if (!S_ISREG(st.st_mode))
        return EACCES;
    return access(p, X_OK) == 0 ? 0 : errno;
}

/* Joins dir and name into out (PATH_MAX). 0 or ENAMETOOLONG. */
static int
join_path(char *out, const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    int n = snprintf(out, PATH_MAX, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", name);
    return n < 0 || n >= PATH_MAX ? ENAMETOOLONG : 0;
}

/*
 * Finds the program as execvp would, but with the child's PATH (a job may
 * set its own; the allow-list judges the result either way), and relative
 * names against the child's cwd. `real` gets the canonical path: what the
 * allow-list checks and what is executed, so a symlink swapped after the
 * check does not change the program.
 */
static int
resolve_exe(const char *argv0, const char *cwd, char *const *envp, char *real, char *msg,
            size_t msglen)
{
    char cand[PATH_MAX], why[128];
    int e = 0;

    if (strchr(argv0, '/') != NULL) {
        if (argv0[0] != '/')
            e = join_path(cand, cwd, argv0);
        else if (snprintf(cand, sizeof(cand), "%s", argv0) >= (int)sizeof(cand))
            e = ENAMETOOLONG;
        if (e == 0)
            e = check_exe(cand);
        if (e != 0) {
            errno_text(e, why, sizeof(why));
            snprintf(msg, msglen, "%s: %s", argv0, why);
            return -1;
        }
    } else {
        const char *path = env_get(envp, "PATH");
        int found = 0, denied = 0;
        if (path == NULL)
            path = "/bin:/usr/bin"; /* execvp's default */
        while (!found) {
            const char *colon = strchr(path, ':');
            size_t dl = colon ? (size_t)(colon - path) : strlen(path);
            char dir[PATH_MAX], rel[PATH_MAX];
            if (dl < sizeof(dir)) {
                memcpy(dir, path, dl);
                dir[dl] = '\0';
                /* An empty entry is the cwd, as in execvp. */
                const char *d = dir;
                if (dir[0] != '/') {
                    if (join_path(rel, cwd, dl ? dir : ".") != 0)
                        rel[0] = '\0';
                    d = rel;
                }
                if (d[0] != '\0' && join_path(cand, d, argv0) == 0) {
                    e = check_exe(cand);
                    if (e == 0)
                        found = 1;
                    else if (e == EACCES)
                        denied = 1;
                }
            }
            if (colon == NULL)
                break;
            path = colon + 1;
        }
        if (!found) {
            snprintf(msg, msglen, "%s: %s", argv0, denied ? "permission denied" : "not found in PATH");
            return -1;
        }
    }
    if (realpath(cand, real) == NULL) {
        errno_text(errno, why, sizeof(why));
        snprintf(msg, msglen, "%s: %s", argv0, why);
        return -1;
    }
    return 0;
}

int
aps_env_allowed(const char *const *keys, size_t n_keys, const char *entry)
{
    size_t kl = strcspn(entry, "=");
    for (size_t i = 0; keys != NULL && i < n_keys; i++) {
        size_t n = strlen(keys[i]);
        if (n > 0 && keys[i][n - 1] == '*' ? kl >= n - 1 && strncmp(entry, keys[i], n - 1) == 0
                                           : kl == n && strncmp(entry, keys[i], n) == 0)
            return 1;
    }
    return 0;
}

static int
allowed(const procpool *pp, const char *real)
{
    if (pp->n_allow == 0)
        return 1;
    for (size_t i = 0; i < pp->n_allow; i++) {
        const char *a = pp->allow[i];
        size_t al = strlen(a);
        if (a[al - 1] == '/') {
            /* A file directly in it: not one in a subdirectory. */
            if (strncmp(real, a, al) == 0 && real[al] != '\0' && strchr(real + al, '/') == NULL)
                return 1;
        } else if (strcmp(real, a) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- starting a child --------------------------------------------------------- */

/* A pipe with both ends close-on-exec and above 2 (a daemon started with
 * stdio closed would otherwise get them back as 0-2, and the dup2s in the
 * child would clobber each other). Only the read end is non-blocking: the
 * child's end must block like a normal stdout. */
static int
make_pipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0)
        return errno;
    for (int i = 0; i < 2; i++) {
        if (p[i] < 3) {
            int fd = fcntl(p[i], F_DUPFD_CLOEXEC, 3);
            if (fd < 0) {
                int e = errno;
                close(p[0]);
                close(p[1]);
                p[0] = p[1] = -1;
                return e;
            }
            close(p[i]);
            p[i] = fd;
        }
    }
    if (fcntl(p[0], F_SETFL, O_NONBLOCK) != 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        p[0] = p[1] = -1;
        return e;
    }
    return 0;
}

static int
spawn_posix(const procpool *pp, const char *path, char *const argv[], char *const envp[],
            const char *cwd, int outw, int errw, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    int e;

    e = posix_spawn_file_actions_init(&fa);
    if (e != 0)
        return e;
    e = posix_spawnattr_init(&at);
    if (e != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return e;
    }
    sigemptyset(&none);
    sigfillset(&all);
    e = posix_spawn_file_actions_adddup2(&fa, pp->devnull, 0);
    if (e == 0)
        e = posix_spawn_file_actions_adddup2(&fa, outw, 1);
    if (e == 0)
        e = posix_spawn_file_actions_adddup2(&fa, errw, 2);
    /* Whatever another part of the program opened without O_CLOEXEC. */
    if (e == 0)
        e = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (e == 0)
        e = posix_spawn_file_actions_addchdir_np(&fa, cwd);
    /* Own process group (killed as one); no blocked signals and default
     * dispositions: the daemon's SIG_IGN for SIGPIPE must not make `yes |
     * head` spin, and the loop thread blocks everything. */
    if (e == 0)
        e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                              POSIX_SPAWN_SETSIGDEF);
    if (e == 0)
        e = posix_spawnattr_setpgroup(&at, 0);
    if (e == 0)
        e = posix_spawnattr_setsigmask(&at, &none);
    if (e == 0)
        e = posix_spawnattr_setsigdefault(&at, &all);
    if (e == 0)
        e = posix_spawn(pid, path, &fa, &at, argv, envp);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return e;
}

typedef struct child_req {
    const procpool *pp;
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int outw, errw, errpipe;
    int max_fd; /* descriptors to mark close-on-exec without close_range */
} child_req;

/* The fork path's child: async-signal-safe calls only (the parent has
 * threads), raw syscalls for the credentials so glibc's all-threads setxid
 * machinery is not involved. Reports (stage, errno) on errpipe on failure. */
static void __attribute__((noreturn))
child_main(const child_req *rq)
{
    const procpool *pp = rq->pp;
    struct sigaction sa;
    sigset_t none;
    int stage = ST_SETUP;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        (void)sigaction(sig, &sa, NULL); /* SIGKILL, SIGSTOP and glibc's own refuse: fine */
    if (setpgid(0, 0) != 0)
        goto fail;
    if (dup2(pp->devnull, 0) < 0 || dup2(rq->outw, 1) < 0 || dup2(rq->errw, 2) < 0)
        goto fail;
    /* Close-on-exec, not close: errpipe must survive until execve. Without
     * close_range's flag (Linux before 5.11, a seccomp filter) fd by fd:
     * the daemon's descriptors (the store's data file is not
     * close-on-exec) must not reach a child, least of all one run as
     * another user. */
    int cloexec_done = 0;
#ifdef SYS_close_range
    cloexec_done = syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == 0;
#endif
    for (int fd = 3; !cloexec_done && fd < rq->max_fd; fd++) {
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC))
            (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    stage = ST_RLIMIT;
    for (size_t i = 0; i < pp->n_rlim; i++) {
        int res = pp->rlim[i].resource;
        rlim_t v = pp->rlim[i].value;
        struct rlimit rl = {v, v}, cur;
        if (setrlimit(res, &rl) == 0)
            continue;
        /* Raising a hard limit needs privilege: keep the lower one. Some
         * environments (valgrind) only let the soft limit move. */
        if (getrlimit(res, &cur) != 0)
            goto fail;
        rl.rlim_cur = rl.rlim_max = v < cur.rlim_max ? v : cur.rlim_max;
        if (setrlimit(res, &rl) == 0)
            continue;
        rl.rlim_max = cur.rlim_max;
        if (setrlimit(res, &rl) != 0)
            goto fail;
    }
    if (pp->run_as) {
        stage = ST_SETGROUPS;
        if (syscall(SYS_setgroups, pp->n_groups, pp->groups) != 0)
            goto fail;
        stage = ST_SETGID;
        if (syscall(SYS_setresgid, pp->gid, pp->gid, pp->gid) != 0)
            goto fail;
        stage = ST_SETUID;
        if (syscall(SYS_setresuid, pp->uid, pp->uid, pp->uid) != 0)
            goto fail;
    }
    /* As the run-as user: a cwd under a directory that user cannot enter
     * must fail, not be reached by the daemon's own rights. */
    stage = ST_CHDIR;
    if (chdir(rq->cwd) != 0)
        goto fail;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    stage = ST_EXEC;
    execve(rq->path, rq->argv, rq->envp);
fail:;
    int report[2] = {stage, errno};
    ssize_t w = write(rq->errpipe, report, sizeof(report));
    (void)w;
    _exit(127);
}

/* fork+exec; the parent learns of a failure before execve through a
 * close-on-exec pipe (EOF = the exec happened). */
static int
spawn_fork(const procpool *pp, const char *path, char *const argv[], char *const envp[],
           const char *cwd, int outw, int errw, pid_t *pid, int *stage)
{
    int ep[2], report[2];
    ssize_t n;
    long open_max = sysconf(_SC_OPEN_MAX);
    child_req rq = {pp,   path, argv,
                    envp, cwd,  outw,
                    errw, -1,   open_max > 0 && open_max < INT_MAX ? (int)open_max : 65536};

    if (pipe2(ep, O_CLOEXEC) != 0)
        return errno;
    rq.errpipe = ep[1];
    pid_t p = fork();
    if (p < 0) {
        int e = errno;
        close(ep[0]);
        close(ep[1]);
        return e;
    }
    if (p == 0)
        child_main(&rq);
    close(ep[1]);
    do {
        n = read(ep[0], report, sizeof(report));
    } while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n == (ssize_t)sizeof(report)) {
        while (waitpid(p, NULL, 0) < 0 && errno == EINTR) {
        }
        *stage = report[0];
        return report[1] ? report[1] : EIO;
    }
    *pid = p;
    return 0;
}

static void
watch(procpool *pp, int fd, size_t idx, uint32_t gen, int which)
{
    struct epoll_event ee;
    memset(&ee, 0, sizeof(ee));
    ee.events = EPOLLIN;
    ee.data.u64 = ((uint64_t)gen << 32) | ((uint64_t)idx << 2) | (uint64_t)which;
    if (epoll_ctl(pp->epfd, EPOLL_CTL_ADD, fd, &ee) != 0) {
        slot *sl = &pp->slots[idx];
        /* Out of kernel memory: lose the stream (or fall back to polling
         * for the exit) rather than the run. */
        close(fd);
        if (which == W_PID)
            sl->pidfd = -1;
        else
            sl->fd[which] = -1;
    }
}

/* Unregisters (explicitly: a forked copy of the fd elsewhere would keep a
 * closed fd's registration alive) and closes. */
static void
unwatch(procpool *pp, int *fd)
{
    if (*fd >= 0) {
        epoll_ctl(pp->epfd, EPOLL_CTL_DEL, *fd, NULL);
        close(*fd);
        *fd = -1;
    }
}

/* ---- notes of running children ------------------------------------------------ */

/* Fields 5 (process group) and 22 (start time, clock ticks after boot) of
 * /proc/<pid>/stat. 0, or -1 if the process is gone. */
static int
proc_identity(pid_t pid, long *pgrp, unsigned long long *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields count from
     * the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL || sscanf(p + 1,
                            " %*c %*d %ld %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                            "%*d %*d %llu",
                            pgrp, start) != 2)
        return -1;
    return 0;
}

static void
note_path(const procpool *pp, pid_t pid, char *out, size_t len)
{
    snprintf(out, len, "%s/%d", pp->note_dir, (int)pid);
}

/* Notes a started child (its pid names the file, its start time tells a
 * reused pid apart). Best effort: a run is not refused for a note. */
static void
note_child(procpool *pp, pid_t pid)
{
    char path[PATH_MAX], text[64];
    long pgrp;
    unsigned long long start;
    if (pp->note_dir == NULL || proc_identity(pid, &pgrp, &start) != 0)
        return;
    note_path(pp, pid, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int n = snprintf(text, sizeof text, "%llu\n", start);
    ssize_t w = write(fd, text, (size_t)n);
    (void)w;
    close(fd);
}

/* Before the child is reaped, so that its pid cannot have been reused. */
static void
forget_child(procpool *pp, pid_t pid)
{
    char path[PATH_MAX];
    if (pp->note_dir == NULL)
        return;
    note_path(pp, pid, path, sizeof path);
    unlink(path);
}

/* Stops the commands a crashed predecessor noted and left running: those
 * whose process still leads its group and started when the note says (a
 * reused pid does not match), with SIGKILL to the group. Every note goes. */
static void
stop_leftovers(procpool *pp)
{
    DIR *d = opendir(pp->note_dir);
    struct dirent *e;
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char *end, path[PATH_MAX], text[64];
        long pid = strtol(e->d_name, &end, 10);
        if (e->d_name[0] == '.' || *end != '\0' || pid <= 1 || pid > INT32_MAX)
            continue;
        note_path(pp, (pid_t)pid, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
        if (fd >= 0)
            close(fd);
        unlink(path);
        if (n <= 0)
            continue;
        text[n] = '\0';
        unsigned long long noted = strtoull(text, NULL, 10), start;
        long pgrp;
        if (proc_identity((pid_t)pid, &pgrp, &start) == 0 && start == noted && pgrp == pid &&
            kill(-(pid_t)pid, SIGKILL) == 0)
            pp->stopped_leftovers++;
    }
    closedir(d);
}

static int set_err(aps_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Creates `dir`/`name` (and `dir`); the executor's note directory. */
static int
setup_notes(procpool *pp, const char *dir, aps_error *err)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", dir, pp->base.name);
    if (n < 0 || (size_t)n >= sizeof path)
        return set_err(err, APS_EINVAL, "executors[%s].state_dir: path too long", pp->base.name);
    if ((mkdir(dir, 0700) != 0 && errno != EEXIST) || (mkdir(path, 0700) != 0 && errno != EEXIST))
        return set_err(err, APS_EIO, "executors[%s].state_dir: %s: %s", pp->base.name, path,
                       strerror(errno));
    pp->note_dir = strdup(path);
    if (pp->note_dir == NULL)
        return set_err(err, APS_ENOMEM, "executors[%s]: out of memory", pp->base.name);
    stop_leftovers(pp);
    return 0;
}

/*
 * Starts the child for the slot's current run time. 0: it runs. Otherwise
 * the run time's result is SPAWN_FAILED with a message a user can act on.
 */
static int
spawn_child(procpool *pp, slot *sl, aps__run_result *res)
{
    const aps_target *t = &sl->run->target;
    char msg[PATH_MAX + 160], real[PATH_MAX], why[128];
    char **envp = NULL, **argv = NULL;
    int outp[2] = {-1, -1}, errp[2] = {-1, -1};
    int stage = ST_EXEC, e;
    pid_t pid = 0;
    const char *cwd;

    res->started = aps__scheduler_now(pp->sched);
    res->outcome.start_time = res->started;
    if (t->kind != APS_TARGET_COMMAND || t->u.command.argc == 0 || t->u.command.argv == NULL) {
        snprintf(msg, sizeof(msg), "executor \"%s\": a processpool executor runs command "
                 "targets only", pp->base.name);
        goto fail;
    }
    cwd = t->u.command.cwd ? t->u.command.cwd : pp->cwd;
    envp = build_env(pp, t);
    argv = malloc((t->u.command.argc + 1) * sizeof(*argv));
    if (envp == NULL || argv == NULL) {
        snprintf(msg, sizeof(msg), "out of memory");
        goto fail;
    }
    memcpy(argv, t->u.command.argv, t->u.command.argc * sizeof(*argv));
    argv[t->u.command.argc] = NULL;
    if (resolve_exe(argv[0], cwd, envp, real, msg, sizeof(msg)) != 0)
        goto fail;
    if (!allowed(pp, real)) {
        if (strcmp(argv[0], real) == 0)
            snprintf(msg, sizeof(msg), "%s: not on the allow-list", real);
        else
            snprintf(msg, sizeof(msg), "%s (%s): not on the allow-list", argv[0], real);
        goto fail;
    }
    for (size_t i = 0; pp->n_allow > 0 && i < t->u.command.envc; i++) {
        const char *kv = t->u.command.env[i];
        if (!aps_env_allowed((const char *const *)pp->allow_env, pp->n_allow_env, kv)) {
            snprintf(msg, sizeof(msg),
                     "env %.*s: not on the environment allow-list (with a command allow-list, "
                     "a job sets only the keys allowed)",
                     (int)strcspn(kv, "="), kv);
            goto fail;
        }
    }
    /* Checked here so that a missing cwd is not reported as a missing
     * program (posix_spawn returns ENOENT for both). */
    struct stat st;
    e = stat(cwd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
    if (e != 0) {
        errno_text(e, why, sizeof(why));
        snprintf(msg, sizeof(msg), "cwd %s: %s", cwd, why);
        goto fail;
    }
    e = make_pipe(outp);
    if (e == 0)
        e = make_pipe(errp);
    if (e != 0) {
        errno_text(e, why, sizeof(why));
        snprintf(msg, sizeof(msg), "pipe: %s", why);
        goto fail;
    }
    if (pp->use_fork)
        e = spawn_fork(pp, real, argv, envp, cwd, outp[1], errp[1], &pid, &stage);
    else
        e = spawn_posix(pp, real, argv, envp, cwd, outp[1], errp[1], &pid);
    close(outp[1]);
    close(errp[1]);
    outp[1] = errp[1] = -1;
    if (e != 0) {
        static const char *const stages[] = {
            [ST_SETUP] = "child setup", [ST_CHDIR] = "cwd",      [ST_RLIMIT] = "setrlimit",
            [ST_SETGROUPS] = "setgroups", [ST_SETGID] = "setgid", [ST_SETUID] = "setuid",
        };
        errno_text(e, why, sizeof(why));
        if (stage == ST_EXEC)
            snprintf(msg, sizeof(msg), "%s: %s", argv[0], why);
        else if (stage == ST_CHDIR)
            snprintf(msg, sizeof(msg), "cwd %s: %s", cwd, why);
        else
            snprintf(msg, sizeof(msg), "%s: %s",
                     stage > 0 && stage < ST_EXEC ? stages[stage] : "child setup", why);
        goto fail;
    }
    free(envp);
    free(argv);

    size_t idx = (size_t)(sl - pp->slots);
    int64_t now = aps__mono_us();
    uint32_t cap = t->u.command.max_output ? t->u.command.max_output : pp->max_output;
    if (cap > pp->max_output_limit)
        cap = pp->max_output_limit; /* the job layer cannot know this executor's limit */
    sl->gen++;
    sl->pid = pid;
    sl->exited = sl->lost = sl->killed = 0;
    sl->term = sl->pending = TERM_NONE;
    sl->fd[W_OUT] = outp[0];
    sl->fd[W_ERR] = errp[0];
    tail_reset(&sl->out[W_OUT], cap);
    tail_reset(&sl->out[W_ERR], cap);
    sl->started = res->started;
    /* A timeout past the clock's range is none (now + it would overflow). */
    sl->timeout_at = t->u.command.timeout_us > 0 && t->u.command.timeout_us < INT64_MAX - now
                         ? now + t->u.command.timeout_us
                         : 0;
    sl->kill_at = sl->drain_at = 0;
    sl->pidfd = -1;
    if (pp->reaper == APS__REAP_PIDFD)
        sl->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    watch(pp, sl->fd[W_OUT], idx, sl->gen, W_OUT);
    watch(pp, sl->fd[W_ERR], idx, sl->gen, W_ERR);
    if (sl->pidfd >= 0)
        watch(pp, sl->pidfd, idx, sl->gen, W_PID);
    if (sl->pidfd < 0 && (pp->next_poll == 0 || pp->next_poll > now + POLL_TICK_US))
        pp->next_poll = now + POLL_TICK_US;
    note_child(pp, pid);
    pthread_mutex_lock(&pp->mu);
    pp->children++;
    if (pp->children > pp->peak)
        pp->peak = pp->children;
    pp->spawned++;
    pthread_mutex_unlock(&pp->mu);
    return 0;

fail:
    for (int i = 0; i < 2; i++) {
        if (outp[i] >= 0)
            close(outp[i]);
        if (errp[i] >= 0)
            close(errp[i]);
    }
    free(envp);
    free(argv);
    res->outcome.end_time = aps__scheduler_now(pp->sched);
    set_error(&res->outcome, APS_RUN_SPAWN_FAILED, "%s", msg);
    pthread_mutex_lock(&pp->mu);
    pp->spawn_failed++;
    pthread_mutex_unlock(&pp->mu);
    return -1;
}

/* ---- the life of a run -------------------------------------------------------- */

static void next_run_time(procpool *pp, slot *sl);

/* Signals the child's process group; the child itself too, in case it left
 * the group. */
static void
signal_group(pid_t pid, int sig)
{
    if (kill(-pid, sig) != 0)
        (void)kill(pid, sig);
}

/* SIGTERM now, SIGKILL after the grace. Pipes get the whole grace to reach
 * EOF: terminating processes may still be writing their last words. */
static void
begin_term(procpool *pp, slot *sl, enum term why, int64_t now)
{
    if (sl->pid <= 0 || sl->term != TERM_NONE)
        return;
    sl->term = why;
    if (!sl->lost)
        signal_group(sl->pid, SIGTERM);
    sl->kill_at = now + pp->kill_grace_us;
    if (sl->exited)
        sl->drain_at = sl->kill_at + DRAIN_US;
}

static void
check_exit(procpool *pp, slot *sl)
{
    siginfo_t si;

    if (sl->pid <= 0 || sl->exited)
        return;
    memset(&si, 0, sizeof(si));
    /* WNOWAIT: the zombie keeps the pid (= the group id) ours until the run
     * time is recorded. */
    if (waitid(P_PID, (id_t)sl->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
        if (errno != ECHILD)
            return;
        sl->lost = 1; /* SIGCHLD set to SIG_IGN, or a waitpid(-1) elsewhere */
    } else if (si.si_pid == 0) {
        return;
    }
    sl->exited = 1;
    sl->wcode = si.si_code;
    sl->wstatus = si.si_status;
    unwatch(pp, &sl->pidfd);
    int64_t now = aps__mono_us();
    if (sl->term != TERM_NONE && !sl->killed)
        sl->drain_at = sl->kill_at + DRAIN_US;
    else
        sl->drain_at = now + DRAIN_US;
}

static void
read_pipe(procpool *pp, slot *sl, int which)
{
    for (int i = 0; i < READS_PER_EVENT && sl->fd[which] >= 0; i++) {
        ssize_t n = read(sl->fd[which], pp->scratch, READ_CHUNK);
        if (n > 0) {
            tail_append(&sl->out[which], pp->scratch, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        unwatch(pp, &sl->fd[which]); /* EOF, or an error: the stream is over */
    }
}

static void
fill_outcome(procpool *pp, slot *sl, aps__run_result *res)
{
    aps_outcome *o = &res->outcome;
    char how[128], dur[32];

    res->started = sl->started;
    o->start_time = sl->started;
    o->end_time = aps__scheduler_now(pp->sched);
    tail_take(&sl->out[W_OUT], &o->stdout_tail, &o->stdout_len, &o->stdout_truncated);
    tail_take(&sl->out[W_ERR], &o->stderr_tail, &o->stderr_len, &o->stderr_truncated);
    int ok = 0;
    if (sl->lost) {
        snprintf(how, sizeof(how), "exit status unknown: the child was reaped elsewhere");
    } else if (sl->wcode == CLD_EXITED) {
        o->has_exit_code = 1;
        o->exit_code = sl->wstatus;
        ok = sl->wstatus == 0;
        snprintf(how, sizeof(how), "exit status %d", sl->wstatus);
    } else {
        const char *abbrev = sigabbrev_np(sl->wstatus);
        o->signal = sl->wstatus;
        snprintf(how, sizeof(how), "killed by signal %d%s%s%s%s", sl->wstatus,
                 abbrev ? " (SIG" : "", abbrev ? abbrev : "", abbrev ? ")" : "",
                 sl->wcode == CLD_DUMPED ? " (core dumped)" : "");
    }
    switch (sl->term) {
    case TERM_TIMEOUT:
        fmt_duration(sl->run->target.u.command.timeout_us, dur, sizeof(dur));
        set_error(o, APS_RUN_TIMED_OUT, "timed out after %s", dur);
        break;
    case TERM_CANCEL:
        set_error(o, APS_RUN_CANCELLED, "cancelled");
        break;
    case TERM_SHUTDOWN:
        set_error(o, APS_RUN_INTERRUPTED, "interrupted: the executor shut down while it ran");
        break;
    case TERM_NONE:
        if (ok)
            o->status = APS_RUN_SUCCEEDED;
        else
            set_error(o, APS_RUN_FAILED, "%s", how);
        break;
    }
}

/* The child exited and its pipes are closed: reap it, record the run time,
 * go on with the next one. */
static void
complete_child(procpool *pp, slot *sl)
{
    unwatch(pp, &sl->fd[W_OUT]);
    unwatch(pp, &sl->fd[W_ERR]);
    unwatch(pp, &sl->pidfd);
    forget_child(pp, sl->pid);
    if (!sl->lost) {
        /* A terminated run leaves nothing behind: stragglers that closed
         * their pipes and ignored SIGTERM. The zombie leader still holds the
         * group id, so this cannot reach another process. */
        if (sl->term != TERM_NONE)
            signal_group(sl->pid, SIGKILL);
        while (waitpid(sl->pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    fill_outcome(pp, sl, &sl->run->results[sl->rt]);
    pthread_mutex_lock(&pp->mu);
    pp->children--;
    pthread_mutex_unlock(&pp->mu);
    sl->pid = 0;
    sl->term = sl->pending = TERM_NONE;
    sl->rt++;
    next_run_time(pp, sl);
}

static void
maybe_complete(procpool *pp, slot *sl)
{
    if (sl->pid > 0 && sl->exited && sl->fd[W_OUT] < 0 && sl->fd[W_ERR] < 0)
        complete_child(pp, sl);
}

/* Hands the slot's run back to the scheduler and frees the slot. */
static void
finish_run(procpool *pp, slot *sl)
{
    aps__run *run = sl->run;
    pthread_mutex_lock(&pp->mu);
    sl->run = NULL;
    pp->busy--;
    pthread_mutex_unlock(&pp->mu);
    aps__run_finished(run);
}

/* Runs the slot's next run time that should run: the misfire rule is
 * applied as each starts (APScheduler's run_job), so a run that waited for
 * a slot is judged by its real lateness. Finishes the run after the last. */
static void
next_run_time(procpool *pp, slot *sl)
{
    aps__run *run = sl->run;

    while (sl->rt < run->n_run_times) {
        aps__run_result *res = &run->results[sl->rt];
        aps_time now = aps__scheduler_now(pp->sched);
        pthread_mutex_lock(&pp->mu);
        int cancelled = run->cancelled, kill_all = pp->kill_all;
        pthread_mutex_unlock(&pp->mu);
        res->run_time = run->run_times[sl->rt];
        if (kill_all || cancelled) {
            res->started = now;
            res->outcome.start_time = res->outcome.end_time = now;
            if (kill_all)
                set_error(&res->outcome, APS_RUN_INTERRUPTED,
                          "interrupted: the executor shut down before this run time started");
            else
                set_error(&res->outcome, APS_RUN_CANCELLED, "cancelled");
        } else if (aps__run_is_missed(run, res->run_time, now)) {
            res->missed = 1;
            res->started = now;
        } else if (spawn_child(pp, sl, res) == 0) {
            return;
        }
        sl->rt++;
    }
    finish_run(pp, sl);
}

/* ---- the loop ------------------------------------------------------------------- */

/* Escalations, drain windows and completions that are due. */
static void
fire_timers(procpool *pp, int64_t now)
{
    for (size_t i = 0; i < pp->base.max_workers; i++) {
        slot *sl = &pp->slots[i];
        if (sl->pid <= 0)
            continue;
        if (!sl->exited && sl->term == TERM_NONE && sl->timeout_at && now >= sl->timeout_at)
            begin_term(pp, sl, TERM_TIMEOUT, now);
        if (sl->term != TERM_NONE && !sl->killed && now >= sl->kill_at) {
            if (!sl->lost)
                signal_group(sl->pid, SIGKILL);
            sl->killed = 1;
            if (sl->exited && sl->drain_at > now + DRAIN_US)
                sl->drain_at = now + DRAIN_US;
        }
        if (sl->exited && now >= sl->drain_at) {
            unwatch(pp, &sl->fd[W_OUT]);
            unwatch(pp, &sl->fd[W_ERR]);
        }
        maybe_complete(pp, sl);
    }
}

/* The earliest deadline of any child, INT64_MAX if none. A linear scan: at
 * most max_workers slots, cheaper than keeping a heap in step at this size. */
static int64_t
next_deadline(procpool *pp)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < pp->base.max_workers; i++) {
        slot *sl = &pp->slots[i];
        if (sl->pid <= 0)
            continue;
        if (!sl->exited && sl->term == TERM_NONE && sl->timeout_at && sl->timeout_at < next)
            next = sl->timeout_at;
        if (sl->term != TERM_NONE && !sl->killed && sl->kill_at < next)
            next = sl->kill_at;
        if (sl->exited && sl->drain_at < next)
            next = sl->drain_at;
        if (!sl->exited && sl->pidfd < 0 && pp->next_poll < next)
            next = pp->next_poll;
    }
    return next;
}

/* Fallback reaping: asks every child not watched by a pidfd. */
static void
poll_exits(procpool *pp, int64_t now)
{
    pp->next_poll = now + POLL_TICK_US;
    for (size_t i = 0; i < pp->base.max_workers; i++) {
        slot *sl = &pp->slots[i];
        if (sl->pid > 0 && !sl->exited && sl->pidfd < 0) {
            check_exit(pp, sl);
            maybe_complete(pp, sl);
        }
    }
}

/* Starts queued runs while slots are free, turns cancel requests and a
 * shutdown without wait into terminations. 1 when the loop should end. */
static int
take_work(procpool *pp, int64_t now)
{
    pthread_mutex_lock(&pp->mu);
    while (pp->count > 0 && pp->busy < pp->base.max_workers) {
        slot *sl = pp->slots;
        while (sl->run != NULL)
            sl++;
        sl->run = pp->queue[pp->head];
        sl->rt = 0;
        pp->head = (pp->head + 1) % pp->qcap;
        pp->count--;
        pp->busy++;
        pthread_mutex_unlock(&pp->mu);
        next_run_time(pp, sl);
        pthread_mutex_lock(&pp->mu);
    }
    int any = 0;
    if (pp->cancel_pending || pp->kill_all) {
        for (size_t i = 0; i < pp->base.max_workers; i++) {
            slot *sl = &pp->slots[i];
            if (sl->run == NULL || sl->pid <= 0 || sl->term != TERM_NONE)
                continue;
            if (pp->kill_all)
                sl->pending = TERM_SHUTDOWN;
            else if (sl->run->cancelled)
                sl->pending = TERM_CANCEL;
            any |= sl->pending != TERM_NONE;
        }
        pp->cancel_pending = 0;
    }
    int done = pp->stopping && pp->count == 0 && pp->busy == 0;
    pthread_mutex_unlock(&pp->mu);
    for (size_t i = 0; any && i < pp->base.max_workers; i++) {
        slot *sl = &pp->slots[i];
        if (sl->pending != TERM_NONE) {
            begin_term(pp, sl, sl->pending, now);
            sl->pending = TERM_NONE;
        }
    }
    return done;
}

static void
dispatch(procpool *pp, uint64_t data)
{
    if (data == EV_WAKE) {
        uint64_t v;
        ssize_t r = read(pp->wakefd, &v, sizeof(v));
        (void)r;
        return;
    }
    if (data == EV_SIGNAL) {
        struct signalfd_siginfo si;
        while (read(pp->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        }
        pp->next_poll = 0; /* poll the children now */
        return;
    }
    uint32_t gen = (uint32_t)(data >> 32);
    size_t idx = (size_t)((data >> 2) & 0x3fffffffu);
    int which = (int)(data & 3u);
    if (idx >= pp->base.max_workers)
        return;
    slot *sl = &pp->slots[idx];
    if (sl->pid <= 0 || sl->gen != gen)
        return; /* an event of a child already completed */
    if (which == W_PID)
        check_exit(pp, sl);
    else
        read_pipe(pp, sl, which);
    maybe_complete(pp, sl);
}

static void *
loop_main(void *arg)
{
    procpool *pp = arg;
    struct epoll_event evs[EV_BATCH];

    for (;;) {
        fire_timers(pp, aps__mono_us());
        if (take_work(pp, aps__mono_us()))
            break;
        int64_t next = next_deadline(pp), now = aps__mono_us();
        int timeout = -1;
        if (next != INT64_MAX) {
            int64_t ms = next <= now ? 0 : (next - now + 999) / 1000;
            timeout = ms > INT_MAX ? INT_MAX : (int)ms;
        }
        int n = epoll_wait(pp->epfd, evs, EV_BATCH, timeout);
        for (int i = 0; i < n; i++)
            dispatch(pp, evs[i].data.u64);
        now = aps__mono_us();
        if (pp->next_poll != INT64_MAX && now >= pp->next_poll)
            poll_exits(pp, now);
    }
    return NULL;
}

/* ---- the executor ops -------------------------------------------------------------- */

static void
end_unstarted(aps__run *run, aps_run_status status, const char *msg)
{
    aps_time now = aps__scheduler_now(run->sched);
    for (size_t i = 0; i < run->n_run_times; i++) {
        aps__run_result *res = &run->results[i];
        res->run_time = run->run_times[i];
        res->started = now;
        res->outcome.start_time = res->outcome.end_time = now;
        set_error(&res->outcome, status, "%s", msg);
    }
    aps__run_finished(run);
}

static int
pp_submit(aps__executor *ex, aps__run *run)
{
    procpool *pp = (procpool *)ex;
    int rc = 0;

    pthread_mutex_lock(&pp->mu);
    if (pp->stopping) {
        rc = APS_ESTATE;
    } else if (pp->count >= pp->base.max_queue + (pp->base.max_workers - pp->busy)) {
        /* max_queue counts runs waiting for a slot; runs a free slot is
         * about to take do not. */
        rc = APS_ELIMIT;
    } else {
        pp->queue[(pp->head + pp->count) % pp->qcap] = run;
        pp->count++;
    }
    pthread_mutex_unlock(&pp->mu);
    if (rc == 0)
        wake(pp);
    return rc;
}

static int
pp_cancel(aps__executor *ex, const char *run_id)
{
    procpool *pp = (procpool *)ex;
    aps__run *queued = NULL;
    int rc = APS_ENOENT;

    pthread_mutex_lock(&pp->mu);
    for (size_t i = 0; i < pp->count; i++) {
        aps__run *r = pp->queue[(pp->head + i) % pp->qcap];
        if (strcmp(r->run_id, run_id) != 0)
            continue;
        /* Out of the FIFO at once: it must not wait for a slot to end. */
        for (size_t k = i; k + 1 < pp->count; k++)
            pp->queue[(pp->head + k) % pp->qcap] = pp->queue[(pp->head + k + 1) % pp->qcap];
        pp->count--;
        r->cancelled = 1;
        queued = r;
        rc = 0;
        break;
    }
    for (size_t i = 0; queued == NULL && i < pp->base.max_workers; i++) {
        aps__run *r = pp->slots[i].run;
        if (r != NULL && strcmp(r->run_id, run_id) == 0) {
            r->cancelled = 1;
            pp->cancel_pending = 1;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&pp->mu);
    if (queued != NULL)
        end_unstarted(queued, APS_RUN_CANCELLED, "cancelled");
    else if (rc == 0)
        wake(pp);
    return rc;
}

static void
pp_shutdown(aps__executor *ex, int wait)
{
    procpool *pp = (procpool *)ex;

    pthread_mutex_lock(&pp->mu);
    pp->stopping = 1;
    if (!wait)
        pp->kill_all = 1;
    /* With `wait`, queued runs still run (the loop ends once they are
     * done), as concurrent.futures' (and so APScheduler's) shutdown(wait=True)
     * does: a date job's run is its only one. Else they never start and
     * finish as interrupted. */
    while (!wait && pp->count > 0) {
        aps__run *run = pp->queue[pp->head];
        pp->head = (pp->head + 1) % pp->qcap;
        pp->count--;
        pthread_mutex_unlock(&pp->mu);
        end_unstarted(run, APS_RUN_INTERRUPTED,
                      "interrupted: the scheduler shut down before the run started");
        pthread_mutex_lock(&pp->mu);
    }
    int join = pp->have_thread && !pp->join_claimed;
    if (join)
        pp->join_claimed = 1;
    pthread_mutex_unlock(&pp->mu);
    wake(pp);
    if (join) {
        pthread_join(pp->thread, NULL);
        pthread_mutex_lock(&pp->mu);
        pp->have_thread = 0;
        pthread_mutex_unlock(&pp->mu);
    }
}

static void
pp_free(procpool *pp)
{
    for (size_t i = 0; i < pp->n_base_env; i++)
        free(pp->base_env[i]);
    free(pp->base_env);
    for (size_t i = 0; i < pp->n_allow; i++)
        free(pp->allow[i]);
    free(pp->allow);
    for (size_t i = 0; i < pp->n_allow_env; i++)
        free(pp->allow_env[i]);
    free(pp->allow_env);
    if (pp->slots != NULL) {
        for (size_t i = 0; i < pp->base.max_workers; i++) {
            free(pp->slots[i].out[0].buf);
            free(pp->slots[i].out[1].buf);
        }
    }
    free(pp->slots);
    free(pp->groups);
    free(pp->cwd);
    free(pp->note_dir);
    free(pp->queue);
    free(pp->scratch);
    if (pp->epfd >= 0)
        close(pp->epfd);
    if (pp->wakefd >= 0)
        close(pp->wakefd);
    if (pp->sigfd >= 0)
        close(pp->sigfd);
    if (pp->devnull >= 0)
        close(pp->devnull);
    free(pp);
}

static void
pp_destroy(aps__executor *ex)
{
    procpool *pp = (procpool *)ex;
    if (pp == NULL)
        return;
    pp_shutdown(ex, 0);
    pthread_mutex_destroy(&pp->mu);
    pp_free(pp);
}

static void
pp_stats(aps__executor *ex, aps_executor_info *out)
{
    procpool *pp = (procpool *)ex;
    pthread_mutex_lock(&pp->mu);
    out->running = pp->busy;
    out->pending = (uint32_t)pp->count;
    pthread_mutex_unlock(&pp->mu);
    out->connected_workers = 0;
    out->stopped_leftovers = pp->stopped_leftovers;
}

static const aps__executor_ops process_ops = {
    .submit = pp_submit,
    .cancel = pp_cancel,
    .shutdown = pp_shutdown,
    .destroy = pp_destroy,
    .stats = pp_stats,
};

int
aps__executor_process_stats(aps__executor *ex, aps__process_stats *out)
{
    procpool *pp = (procpool *)ex;
    if (ex == NULL || ex->ops != &process_ops)
        return APS_EINVAL;
    pthread_mutex_lock(&pp->mu);
    out->children = pp->children;
    out->peak_children = pp->peak;
    out->busy = pp->busy;
    out->queued = (uint32_t)pp->count;
    out->spawned = pp->spawned;
    out->spawn_failed = pp->spawn_failed;
    out->reaper = pp->reaper;
    pthread_mutex_unlock(&pp->mu);
    return 0;
}

void
aps__executor_process_force_signalfd(int on)
{
    force_signalfd = on;
}

/* ---- create ------------------------------------------------------------------------- */

static int
set_err(aps_error *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

/* getpwnam_r/getgrnam_r with a growing buffer. 0, APS_ENOENT or APS_ENOMEM. */
static int
lookup_user(const char *name, uid_t *uid, gid_t *gid)
{
    size_t sz = 16384;
    for (;;) {
        struct passwd pw, *res = NULL;
        char *buf = malloc(sz);
        if (buf == NULL)
            return APS_ENOMEM;
        int e = getpwnam_r(name, &pw, buf, sz, &res);
        if (e == 0 && res != NULL) {
            *uid = pw.pw_uid;
            *gid = pw.pw_gid;
        }
        free(buf);
        if (e == ERANGE && sz < (1u << 22)) {
            sz *= 2;
            continue;
        }
        return e == 0 && res != NULL ? 0 : APS_ENOENT;
    }
}

static int
lookup_group(const char *name, gid_t *gid)
{
    size_t sz = 16384;
    for (;;) {
        struct group gr, *res = NULL;
        char *buf = malloc(sz);
        if (buf == NULL)
            return APS_ENOMEM;
        int e = getgrnam_r(name, &gr, buf, sz, &res);
        if (e == 0 && res != NULL)
            *gid = gr.gr_gid;
        free(buf);
        if (e == ERANGE && sz < (1u << 22)) {
            sz *= 2;
            continue;
        }
        return e == 0 && res != NULL ? 0 : APS_ENOENT;
    }
}

/* Credentials of run_as_user/run_as_group, resolved once at create. */
static int
setup_run_as(procpool *pp, const aps_executor_def *def, aps_error *err)
{
    uid_t uid = geteuid();
    gid_t gid = getegid();
    int rc;

    /* A group alone would keep the daemon's user: root, with every
     * capability, which is no drop at all. */
    if (def->run_as_group != NULL && def->run_as_user == NULL)
        return set_err(err, APS_EINVAL,
                       "executors[%s].run_as_group: needs run_as_user too (a group alone "
                       "leaves commands running as the daemon's user)",
                       def->name);
    if (def->run_as_user != NULL) {
        rc = lookup_user(def->run_as_user, &uid, &gid);
        if (rc != 0)
            return rc == APS_ENOMEM ? set_err(err, rc, "out of memory")
                                    : set_err(err, APS_EINVAL,
                                              "executors[%s].run_as_user: unknown user \"%s\"",
                                              def->name, def->run_as_user);
    }
    if (def->run_as_group != NULL) {
        rc = lookup_group(def->run_as_group, &gid);
        if (rc != 0)
            return rc == APS_ENOMEM ? set_err(err, rc, "out of memory")
                                    : set_err(err, APS_EINVAL,
                                              "executors[%s].run_as_group: unknown group \"%s\"",
                                              def->name, def->run_as_group);
    }
    if (geteuid() != 0) {
        /* Only root can switch; refusing beats silently running as the
         * daemon's own user when a drop of privileges was asked for. */
        if (uid == geteuid() && gid == getegid())
            return 0;
        return set_err(err, APS_EINVAL,
                       "executors[%s].run_as_user: the daemon is not root, so it cannot run "
                       "children as %s%s%s", def->name,
                       def->run_as_user ? def->run_as_user : "",
                       def->run_as_user && def->run_as_group ? ":" : "",
                       def->run_as_group ? def->run_as_group : "");
    }
    /* Supplementary groups: the user's, or just the group. */
    int n = 32;
    for (;;) {
        gid_t *g = realloc(pp->groups, (size_t)n * sizeof(*g));
        if (g == NULL)
            return set_err(err, APS_ENOMEM, "out of memory");
        pp->groups = g;
        if (def->run_as_user == NULL) {
            g[0] = gid;
            n = 1;
            break;
        }
        int want = n;
        if (getgrouplist(def->run_as_user, gid, g, &want) >= 0) {
            n = want;
            break;
        }
        if (want <= n || want > 65536)
            return set_err(err, APS_EINVAL, "executors[%s].run_as_user: cannot list the "
                           "groups of \"%s\"", def->name, def->run_as_user);
        n = want;
    }
    pp->n_groups = (size_t)n;
    pp->uid = uid;
    pp->gid = gid;
    pp->run_as = 1;
    return 0;
}

static int
copy_config(procpool *pp, const aps_executor_def *def, aps_error *err)
{
    size_t nb = def->base_env ? def->n_base_env : 0;

    pp->base_env = calloc(nb ? nb : 1, sizeof(*pp->base_env));
    if (pp->base_env == NULL)
        return set_err(err, APS_ENOMEM, "out of memory");
    for (size_t i = 0; i < nb; i++) {
        const char *kv = def->base_env[i];
        if (kv == NULL || strchr(kv, '=') == NULL || kv[0] == '=')
            return set_err(err, APS_EINVAL, "executors[%s].base_env[%zu]: must be KEY=VALUE",
                           def->name, i);
        if ((pp->base_env[pp->n_base_env] = strdup(kv)) == NULL)
            return set_err(err, APS_ENOMEM, "out of memory");
        pp->n_base_env++;
    }
    if (nb == 0) {
        if ((pp->base_env[0] = strdup(DEFAULT_PATH)) == NULL)
            return set_err(err, APS_ENOMEM, "out of memory");
        pp->n_base_env = 1;
    }
    if (def->cwd != NULL && def->cwd[0] != '/')
        return set_err(err, APS_EINVAL, "executors[%s].cwd: must be an absolute path",
                       def->name);
    if ((pp->cwd = strdup(def->cwd ? def->cwd : "/")) == NULL)
        return set_err(err, APS_ENOMEM, "out of memory");

    size_t na = def->allow ? def->n_allow : 0;
    pp->allow = calloc(na ? na : 1, sizeof(*pp->allow));
    if (pp->allow == NULL)
        return set_err(err, APS_ENOMEM, "out of memory");
    for (size_t i = 0; i < na; i++) {
        const char *a = def->allow[i];
        char real[PATH_MAX + 1];
        if (a == NULL || a[0] != '/')
            return set_err(err, APS_EINVAL, "executors[%s].allow[%zu]: must be an absolute "
                           "path", def->name, i);
        size_t al = strlen(a);
        int dir = a[al - 1] == '/';
        /* Compared with the realpath of what a job runs, so canonical too
         * (on merged-/usr systems /bin/true is /usr/bin/true). An entry
         * that does not exist yet is kept as written. */
        if (realpath(a, real) == NULL)
            snprintf(real, sizeof(real), "%s", a);
        size_t rl = strlen(real);
        if (dir && real[rl - 1] != '/' && rl + 1 < sizeof(real)) {
            real[rl] = '/';
            real[rl + 1] = '\0';
        }
        if ((pp->allow[i] = strdup(real)) == NULL)
            return set_err(err, APS_ENOMEM, "out of memory");
        pp->n_allow++;
    }
    size_t ne = def->allow_env ? def->n_allow_env : 0;
    pp->allow_env = calloc(ne ? ne : 1, sizeof(*pp->allow_env));
    if (pp->allow_env == NULL)
        return set_err(err, APS_ENOMEM, "out of memory");
    for (size_t i = 0; i < ne; i++) {
        if (def->allow_env[i] == NULL || def->allow_env[i][0] == '\0')
            return set_err(err, APS_EINVAL, "executors[%s].allow_env[%zu]: must not be empty",
                           def->name, i);
        if ((pp->allow_env[i] = strdup(def->allow_env[i])) == NULL)
            return set_err(err, APS_ENOMEM, "out of memory");
        pp->n_allow_env++;
    }
    return 0;
}

int
aps__executor_process_create(aps_scheduler *s, const aps_executor_def *def,
                             aps__executor **out, aps_error *err)
{
    procpool *pp = calloc(1, sizeof(*pp));
    sigset_t all, old;
    int rc;

    if (pp == NULL)
        return set_err(err, APS_ENOMEM, "executors[%s]: out of memory", def->name);
    pp->epfd = pp->wakefd = pp->sigfd = pp->devnull = -1;
    pp->next_poll = INT64_MAX;
    pp->sched = s;
    pp->base.ops = &process_ops;
    snprintf(pp->base.name, sizeof(pp->base.name), "%s", def->name);
    snprintf(pp->base.type, sizeof(pp->base.type), "processpool");
    pp->base.max_workers = def->max_workers ? def->max_workers : DEFAULT_MAX_WORKERS;
    pp->base.max_queue = def->max_queue ? def->max_queue : DEFAULT_MAX_QUEUE;
    pp->max_output_limit = def->max_output_limit ? def->max_output_limit : DEFAULT_OUTPUT_LIMIT;
    pp->max_output = def->max_output ? def->max_output : DEFAULT_MAX_OUTPUT;
    if (def->max_output == 0 && pp->max_output > pp->max_output_limit)
        pp->max_output = pp->max_output_limit; /* a small limit lowers the default too */
    pp->kill_grace_us = def->kill_grace_us ? def->kill_grace_us : DEFAULT_GRACE_US;
    if (pthread_mutex_init(&pp->mu, NULL) != 0) {
        free(pp);
        return set_err(err, APS_ENOMEM, "executors[%s]: out of memory", def->name);
    }
    if (pp->base.max_workers > MAX_WORKERS) {
        rc = set_err(err, APS_EINVAL, "executors[%s].max_workers: %u is more than %u",
                     def->name, pp->base.max_workers, MAX_WORKERS);
        goto fail;
    }
    if (pp->max_output > pp->max_output_limit) {
        rc = set_err(err, APS_EINVAL, "executors[%s].max_output: %u is more than "
                     "max_output_limit %u", def->name, pp->max_output, pp->max_output_limit);
        goto fail;
    }
    if (pp->kill_grace_us < 0 || pp->kill_grace_us > MAX_GRACE_US) {
        rc = set_err(err, APS_EINVAL, "executors[%s].kill_grace: must be 0 to 86400 seconds",
                     def->name);
        goto fail;
    }
    rc = copy_config(pp, def, err);
    if (rc != 0)
        goto fail;
    if (def->state_dir != NULL) {
        rc = setup_notes(pp, def->state_dir, err);
        if (rc != 0)
            goto fail;
    }
    if (def->run_as_user != NULL || def->run_as_group != NULL) {
        rc = setup_run_as(pp, def, err);
        if (rc != 0)
            goto fail;
    }
    static const int resources[3] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_NOFILE};
    const uint64_t values[3] = {def->rlimit_cpu_s, def->rlimit_as, def->rlimit_nofile};
    for (size_t i = 0; i < 3; i++) {
        if (values[i] != 0) {
            pp->rlim[pp->n_rlim].resource = resources[i];
            pp->rlim[pp->n_rlim].value = (rlim_t)values[i];
            pp->n_rlim++;
        }
    }
    pp->use_fork = pp->run_as || pp->n_rlim > 0;

    pp->qcap = (size_t)pp->base.max_queue + pp->base.max_workers;
    pp->queue = calloc(pp->qcap, sizeof(*pp->queue));
    pp->slots = calloc(pp->base.max_workers, sizeof(*pp->slots));
    pp->scratch = malloc(READ_CHUNK);
    if (pp->queue == NULL || pp->slots == NULL || pp->scratch == NULL) {
        rc = set_err(err, APS_ENOMEM, "executors[%s]: out of memory", def->name);
        goto fail;
    }
    for (size_t i = 0; i < pp->base.max_workers; i++) {
        pp->slots[i].pidfd = pp->slots[i].fd[0] = pp->slots[i].fd[1] = -1;
        pp->slots[i].out[0].cap = pp->slots[i].out[1].cap = 1;
    }
    pp->devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (pp->devnull >= 0 && pp->devnull < 3) {
        int fd = fcntl(pp->devnull, F_DUPFD_CLOEXEC, 3);
        close(pp->devnull);
        pp->devnull = fd;
    }
    pp->epfd = epoll_create1(EPOLL_CLOEXEC);
    pp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (pp->devnull < 0 || pp->epfd < 0 || pp->wakefd < 0) {
        rc = set_err(err, APS_EIO, "executors[%s]: /dev/null, epoll or eventfd: %s", def->name,
                     strerror(errno));
        goto fail;
    }
    struct epoll_event ee;
    memset(&ee, 0, sizeof(ee));
    ee.events = EPOLLIN;
    ee.data.u64 = EV_WAKE;
    epoll_ctl(pp->epfd, EPOLL_CTL_ADD, pp->wakefd, &ee);

    int probe = force_signalfd ? -1 : (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (probe >= 0) {
        close(probe);
        pp->reaper = APS__REAP_PIDFD;
    } else {
        /* SIGCHLD is blocked in the loop thread (below), so the signalfd
         * sees it when it is directed there; a process-directed SIGCHLD may
         * go to another thread instead, hence the poll as well. */
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        pp->sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
        if (pp->sigfd >= 0) {
            ee.data.u64 = EV_SIGNAL;
            epoll_ctl(pp->epfd, EPOLL_CTL_ADD, pp->sigfd, &ee);
        }
        pp->reaper = APS__REAP_SIGNALFD;
    }

    /* The loop thread blocks asynchronous signals: the program's handlers
     * do not run on it and its syscalls see no EINTR (children get an
     * empty mask). Faults stay unblocked so crashes are still reported. */
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGABRT);
    sigdelset(&all, SIGTRAP);
    sigdelset(&all, SIGSYS);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&pp->thread, NULL, loop_main, pp);
    if (e == 0)
        pthread_setname_np(pp->thread, "aps-procs"); /* top -H, perf: whose CPU */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        rc = set_err(err, APS_ENOMEM, "executors[%s]: cannot start a thread: %s", def->name,
                     strerror(e));
        goto fail;
    }
    pp->have_thread = 1;
    *out = &pp->base;
    return 0;

fail:
    pthread_mutex_destroy(&pp->mu);
    pp_free(pp);
    return rc;
}
