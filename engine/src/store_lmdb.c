/*
 * Job store, LMDB backend.
 *
 * Layout (one environment in the data directory, see DESIGN.md):
 *   jobs    id -> [sortable next_run (8) | record]
 *   due     [sortable next_run (8) | id] -> empty; jobs without a next run
 *           are absent
 *   events  big-endian seq (8) -> [sortable time (8) | bytes]
 *   meta    key -> value; "store/schema" (u32 BE), "store/event_seq" (u64 BE)
 * "Sortable" is big-endian with the sign bit flipped (aps__store_time_encode).
 *
 * Group commit: callers enqueue a request and sleep on their own
 * semaphore. One writer thread takes every queued request, begins one write
 * transaction, runs each callback in a nested transaction (a failing one is
 * aborted alone), prunes the event log, commits once (one fsync for the whole
 * batch), then wakes every caller with its result. A durable commit costs
 * ~0.5 ms on this machine whatever its size, so batching is the only way to
 * go past ~2k writes/s. Before a batch the writer may wait a little for the
 * callers of the last one to come back (batch_wait), so that callers
 * writing one after another share a commit per round.
 *
 * Map growth: on MDB_MAP_FULL the writer aborts the batch, doubles the map
 * with mdb_env_set_mapsize and reruns the batch (write callbacks are
 * documented to be rerunnable). LMDB requires that no transaction be active
 * in this process during mdb_env_set_mapsize; the writer is the only one
 * that writes, and readers hold `maplock` for reading for the whole life of
 * their read transaction, while the writer holds it for writing around
 * mdb_env_set_mapsize. (The write window's read transaction, below, is
 * the writer's own and is ended before.) The env is opened with MDB_NOTLS
 * so a read transaction is not tied to a thread's reader slot (and several
 * stores or thread pools do not collide on LMDB's thread-local slot).
 *
 * Write window: LMDB writes a commit's pages into the lowest free pages of
 * the file, which after a while lie scattered between pages in use, so a
 * commit of 64 adds at 64 places in `jobs` writes ~130 pages in ~65
 * separate runs. Where scattered writes are slow (an HDD; this machine's
 * virtual disk: 128 scattered 4 KiB pages flushed in 4.4 ms, contiguous in
 * 0.9), the writer may hold a read transaction open (`pin`) while the file
 * grows by up to write_window bytes: pages freed meanwhile cannot be reused,
 * so commits take new pages at the file's end, in one run, and when the pin
 * is renewed the pages freed under it come back as long runs. The cost is
 * disk: the file grows by up to about twice the window beyond what it would
 * take, and keeps that size (LMDB never shrinks a file). The pin is dropped
 * before anything that needs no transaction open (map growth, recovery,
 * close) and after a failed commit: a write that finds the disk full is
 * run again in the pages held back before the disk reserve (below) is
 * given, and none are held while the reserve is out or missing, nor for
 * PIN_FULL_PAUSE_S after a full disk (without a reserve, the only sign).
 *
 * Disk reserve: `dir/reserve` holds reserve_bytes of allocated blocks, made
 * when twice that is free. The first write that fails for want of space
 * truncates it to nothing and runs again, and the store reports low space
 * (aps__store_space_low) until the file can be made whole anew: meanwhile
 * the scheduler refuses new jobs, while runs go on being committed (and
 * jobs can be removed) in the space given back. Without it, a full disk
 * would stop every job: a run is committed before it is handed on. The
 * empty file stays as the mark of a reserve given back, so that a store
 * reopened before space came back is low on space from the start, rather
 * than a store without a reserve that takes new jobs onto a full disk.
 *
 * Exclusivity: `dir/apsd.lock` is flock()ed (released by the kernel when the
 * process dies) and holds the owner's pid for the EBUSY message. flock locks
 * belong to the open file description, so a second open in the same process
 * is refused too (LMDB forbids opening one environment twice in a process).
 * A directory on a network file system is refused (check_fs): LMDB's lock
 * file works within one host.
 *
 * Runs handed on: the scheduler raises `mark`, in a page of shared
 * memory, to a run's time before it hands the run to its executor
 * (aps__store_handed). The page is a file in /dev/shm (tmpfs: no disk
 * behind it, so the store never waits on the disk's journal the way a
 * write fault on a page of a disk file can), named by a random token kept
 * in the lock file's second page. It outlives a process that dies (a
 * crash, SIGKILL), not the machine: on the next open, a run recorded as
 * running whose time is past the mark was never handed on, and never
 * started. The page is trusted only under the boot id it was written in
 * and with its token. `carried` keeps the bound of the processes before
 * until the scheduler has recovered their runs (a process that opens the
 * store without doing so, or dies first, passes it on). A page exists
 * only while it says more than "unknown": from that recovery (made then)
 * to a close, and while it carries such a bound. Without it (no /dev/shm,
 * another boot, an older apsd's lock file) the bound is unknown: such
 * runs are reported interrupted.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "store_backend.h"

#define DEFAULT_MAP_SIZE ((size_t)256 << 20)
#define MIN_MAP_SIZE ((size_t)64 << 10)
/* Doublings tried for one batch before giving up with APS_ENOSPC. */
#define MAX_GROW_PER_BATCH 24
#define MAX_READERS 1024
#define LOCK_FILE "apsd.lock"
/* The lock file's second page holds the token of the page of runs handed
 * on (top comment); mmap wants offsets that are multiples of the page
 * size. */
#define HANDED_OFF ((off_t)sysconf(_SC_PAGESIZE))
#define HANDED_PAGE_LEN ((size_t)sysconf(_SC_PAGESIZE))
#define LOCK_MAGIC "APSDLCK1"
#define HANDED_MAGIC "APSDHND2"
#define HANDED_DIR "/dev/shm"
#define BOOT_ID_FILE "/proc/sys/kernel/random/boot_id"
#define RESERVE_FILE "reserve"
/* Without the reserve: how often a caller's check tries to make it again. */
#define RESERVE_RETRY_NS 1000000000L
/* The reserve is in place; there was no room for it (or none is configured);
 * it was given back to a write that found the disk full (space is low). */
enum { RESERVE_HELD, RESERVE_MISSING, RESERVE_GIVEN };

/* A queued write. A synchronous one lives on its caller's stack and the
 * caller sleeps on `done` until the writer posts it; an asynchronous one
 * (`cb` set) is allocated, and the writer calls cb then frees it. */
typedef struct lreq {
    aps_write_fn fn;
    void *arg;
    int rc;
    sem_t done;
    aps_write_done_fn cb;
    void *cb_arg;
    int out; /* failed: left out of its batch (run_batch) */
    int lazy; /* aps__store_write_lazy: may wait up to LAZY_GAP_NS */
    struct lreq *next;
} lreq;

/* How long after a commit a batch of lazy writes alone waits for more.
 * Back to back, the events of a volatile store's runs made a durable
 * commit (an fdatasync pair) per ~1 ms, ~1,000 flushes/s at 10,000 runs/s;
 * in a VM such a flush storm stalls every vCPU for milliseconds (the
 * firing p99 went from 0.2 ms to 6-10 ms). 10 ms: at most ~100 commits/s,
 * and events published at most 10 ms later. */
#define LAZY_GAP_NS 10000000L

/* The default of batch_wait_us (batch_wait). */
#define BATCH_WAIT_NS 1000000L

/* The lock file's second page (top comment). */
typedef struct lock_page {
    char magic[8];  /* LOCK_MAGIC */
    char token[33]; /* 32 hex digits: the page of runs handed on */
    uint64_t dev, ino; /* the lock file's (a copy of the directory is not it) */
} lock_page;

/* The page of runs handed on (top comment), in HANDED_DIR/apsd-<token>. */
typedef struct handed_page {
    char magic[8];    /* HANDED_MAGIC, written last */
    char boot_id[40]; /* the boot it was written in */
    char token[33];   /* its own name's */
    uint64_t dev, ino; /* its store's lock file */
    int64_t mark;     /* runs of this process: the latest time handed on */
    int64_t carried;  /* runs of the processes before: the same bound */
} handed_page;

typedef struct lmdb_store {
    aps_store base;
    char *dir;
    int lock_fd;
    /* Runs handed on (top comment). */
    handed_page *handed;       /* mapped (atomic pointer); NULL: none */
    char *handed_path;         /* its file; NULL: none can be made */
    uint64_t lock_dev, lock_ino; /* the lock file's, which the page names */
    int64_t handed_local;      /* this process's mark (atomic), page or not */
    int handed_unknown;        /* (atomic) the bound of those before is unknown */
    pthread_mutex_t handed_mu; /* making the page */
    MDB_env *env; /* NULL only if recovery from MDB_PANIC failed */
    MDB_dbi jobs, due, events, meta;
    pthread_rwlock_t maplock; /* see the top comment */
    size_t map_size;          /* guarded by maplock */

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* the writer waits here for requests */
    lreq *head, *tail;
    int writer_idle; /* the writer is waiting on cv */
    int stopping;
    size_t n_eager;              /* queued requests that are not lazy */
    int lazy_waiting;            /* the writer is in lazy_wait */
    size_t batch_want;           /* batch_wait: writes it waits for */
    int batch_waiting;           /* the writer is in batch_wait */
    struct timespec last_commit; /* CLOCK_MONOTONIC; the writer's own */
    int64_t batch_until_ns;      /* the writer's own: when batch_wait ends */
    int64_t batch_wait_ns;       /* the most batch_wait waits; 0 = never */
    aps_store_stats stats;

    /* The disk reserve (top comment). reserve_mu guards the file and
     * reserve_tried; reserve_state is read without it. */
    pthread_mutex_t reserve_mu;
    int reserve_state;             /* atomic: RESERVE_HELD, _MISSING, _GIVEN */
    struct timespec reserve_tried; /* CLOCK_MONOTONIC: last try to make it */

    pthread_t writer;
    /* The write window (top comment), the writer's own: the read
     * transaction held, and the writer's bytes written when it was taken. */
    MDB_txn *pin;
    int64_t pin_wchar;
    struct timespec pin_full; /* CLOCK_MONOTONIC: the disk last found full */
} lmdb_store;

/* Longest job id whose stored next run time a callback remembers. */
#define KNOWN_ID_MAX 256

typedef struct lmdb_txn {
    aps_txn base;
    lmdb_store *s;
    MDB_txn *txn;
    int mdb_err; /* first LMDB failure in this callback's transaction */
    int writes;  /* write operations the callback started */
    /* The event counter while the callback appends: read once, written
     * back once (seq_flush), not a get and a put of `meta` per event. */
    uint64_t seq;
    int seq_known, seq_dirty;
    /* The job this callback last read or wrote, and the next run time
     * stored with it, so that writing it back needs no second lookup to
     * find its `due` entry: a run reads and writes its job each time. */
    char known_id[KNOWN_ID_MAX];
    size_t known_len; /* 0: none */
    aps_time known_next;
    /* The callback's cursor on `jobs`, at the known job while there is
     * one: writing it back replaces it in place (MDB_CURRENT), without a
     * second descent of the B-tree. Closed when the callback returns. */
    MDB_cursor *jobs_cur;
    /* Its cursors on `meta`, `events` and `due` (one for the entries it
     * removes, one for those it adds: a batch of due jobs removes entries
     * in time order at one place and adds them at another): a put or
     * delete next to the previous one (run index entries, time-ordered;
     * appended events; due entries in time order) is found on the
     * cursor's page, without a descent from the root. */
    MDB_cursor *meta_cur, *events_cur, *due_del_cur, *due_put_cur;
} lmdb_txn;

static lmdb_store *
L(aps_store *s)
{
    return (lmdb_store *)s;
}

/* Maps an LMDB or errno code to an APS_E* code. */
static int
map_rc(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return APS_ENOENT;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
        return APS_ENOSPC;
    case ENOMEM:
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
        return APS_ENOMEM;
    case MDB_READERS_FULL:
    case MDB_DBS_FULL:
        return APS_ELIMIT;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
    case MDB_BAD_VALSIZE:
    case MDB_KEYEXIST:
        return APS_ECORRUPT;
    case EINVAL:
        return APS_EINVAL;
    case EBUSY:
    case EAGAIN:
        return APS_EBUSY;
    default:
        return APS_EIO;
    }
}

/* Bytes this process may still write on the store's file system. */
static int
disk_avail(const lmdb_store *s, unsigned long long *avail)
{
    struct statvfs sv;

    if (statvfs(s->dir, &sv))
        return errno;
    /* root may write into the reserved blocks too */
    *avail = (unsigned long long)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize;
    return 0;
}

/* LMDB reports a short write ("filesystem full?") as EIO, and a write
 * that fills the disk is short rather than failed. When the file system
 * is (nearly) out of space, call it what it is, so callers see ENOSPC and
 * know a retry after freeing space will work. */
static int
refine_io_error(const lmdb_store *s, int rc)
{
    unsigned long long avail = 0;

    if (rc != EIO || disk_avail(s, &avail))
        return rc;
    return avail < (1ull << 20) ? ENOSPC : rc;
}

/* ---- the disk reserve (top comment) ------------------------------------- */

static void
reserve_path(const lmdb_store *s, char *path, size_t cap)
{
    snprintf(path, cap, "%s/" RESERVE_FILE, s->dir);
}

/* Makes the reserve file whole, if twice its size is free (half stays for
 * everyone else), or removes it when no reserve is configured. 1 if the
 * reserve is in place, 0 if not. reserve_mu held. */
static int
reserve_make(lmdb_store *s)
{
    size_t want = s->base.cfg.reserve_bytes;
    unsigned long long avail = 0, have = 0;
    char path[PATH_MAX + 16];
    struct stat st;
    int fd, ok, marked = 0;

    reserve_path(s, path, sizeof path);
    if (want == 0) {
        unlink(path);
        return 0;
    }
    if (stat(path, &st) == 0) {
        marked = st.st_size == 0;
        have = (unsigned long long)st.st_blocks * 512;
        if ((size_t)st.st_size == want && have >= want)
            return 1;
    }
    if (disk_avail(s, &avail) || avail + have < 2 * (unsigned long long)want)
        return 0;
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0;
    /* Allocated blocks, not a hole: truncating the file must give them
     * back. A partial one would only take space: the mark of a reserve
     * given back (reserve_given) stays a mark, anything else goes. */
    ok = ftruncate(fd, 0) == 0 && posix_fallocate(fd, 0, (off_t)want) == 0;
    if (!ok && (!marked || ftruncate(fd, 0) != 0))
        unlink(path);
    close(fd);
    return ok;
}

/* 1 if the reserve was given back and not made again since: its file is
 * there, empty (reserve_give); 0 when no reserve is configured. reserve_mu
 * held. */
static int
reserve_given(const lmdb_store *s)
{
    char path[PATH_MAX + 16];
    struct stat st;

    if (s->base.cfg.reserve_bytes == 0)
        return 0;
    reserve_path(s, path, sizeof path);
    return stat(path, &st) == 0 && st.st_size == 0;
}

/* A write failed for want of space: empties the reserve so that the batch
 * can run again in the space given back; low space from now on, across a
 * reopen too (reserve_given). 1 if there was a reserve to give back.
 * Writer thread. */
static int
reserve_give(lmdb_store *s)
{
    char path[PATH_MAX + 16];

    if (__atomic_load_n(&s->reserve_state, __ATOMIC_ACQUIRE) != RESERVE_HELD)
        return 0; /* nothing to give: the write fails, as it would without */
    reserve_path(s, path, sizeof path);
    pthread_mutex_lock(&s->reserve_mu);
    if (truncate(path, 0) != 0)
        unlink(path);
    __atomic_store_n(&s->reserve_state, RESERVE_GIVEN, __ATOMIC_RELEASE);
    clock_gettime(CLOCK_MONOTONIC, &s->reserve_tried);
    pthread_mutex_unlock(&s->reserve_mu);
    pthread_mutex_lock(&s->mu);
    s->stats.reserve_releases++;
    pthread_mutex_unlock(&s->mu);
    return 1;
}

/* Tries to make the reserve when it is not in place, no more than once per
 * RESERVE_RETRY_NS, on the caller's thread. 1 while it is given (space is
 * low). */
static int
l_space_low(aps_store *bs)
{
    lmdb_store *s = L(bs);
    struct timespec now;
    int64_t since;
    int state;

    if (__atomic_load_n(&s->reserve_state, __ATOMIC_ACQUIRE) == RESERVE_HELD ||
        s->base.cfg.reserve_bytes == 0)
        return 0;
    pthread_mutex_lock(&s->reserve_mu);
    clock_gettime(CLOCK_MONOTONIC, &now);
    since = (int64_t)(now.tv_sec - s->reserve_tried.tv_sec) * 1000000000L +
            (now.tv_nsec - s->reserve_tried.tv_nsec);
    state = s->reserve_state;
    if (state != RESERVE_HELD && since >= RESERVE_RETRY_NS) {
        s->reserve_tried = now;
        if (reserve_make(s)) {
            state = RESERVE_HELD;
            __atomic_store_n(&s->reserve_state, state, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&s->reserve_mu);
    return state == RESERVE_GIVEN;
}

/* Records the first LMDB failure of a callback's transaction: the writer
 * looks at it after the callback (MAP_FULL means "grow and rerun"; any
 * other failure means the nested transaction can not be committed). */
static int
txn_fail(lmdb_txn *t, int rc)
{
    if (!t->mdb_err)
        t->mdb_err = rc;
    return map_rc(rc);
}

/* ---- reads: one read transaction under maplock ------------------------ */

static int
rd_begin(lmdb_store *s, MDB_txn **txn)
{
    int rc;

    pthread_rwlock_rdlock(&s->maplock);
    if (!s->env) {
        pthread_rwlock_unlock(&s->maplock);
        return APS_EIO;
    }
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc) {
        pthread_rwlock_unlock(&s->maplock);
        return map_rc(rc);
    }
    return 0;
}

static void
rd_end(lmdb_store *s, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->maplock);
}

/* A read transaction with a cursor on `dbi`, for the scans below. On
 * failure nothing is left open. */
static int
rd_cursor(lmdb_store *s, MDB_dbi dbi, MDB_txn **txn, MDB_cursor **cur)
{
    int rc;

    rc = rd_begin(s, txn);
    if (rc)
        return rc;
    rc = mdb_cursor_open(*txn, dbi, cur);
    if (rc) {
        rd_end(s, *txn);
        return map_rc(rc);
    }
    return 0;
}

/* Ends what rd_cursor began and gives the scan's result: `rc`, or else the
 * LMDB code `mrc` that ended it, where running off the end (MDB_NOTFOUND)
 * is no error. */
static int
rd_cursor_end(lmdb_store *s, MDB_txn *txn, MDB_cursor *cur, int rc, int mrc)
{
    mdb_cursor_close(cur);
    rd_end(s, txn);
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = map_rc(mrc);
    return rc;
}

/* Hands out a malloc'd copy of a value read in a transaction (the bytes
 * live in the map only until it ends); either pointer may be NULL. */
static int
copy_out(const void *p, size_t n, void **data, size_t *len)
{
    if (data) {
        *data = aps__store_memdup(p, n);
        if (!*data)
            return APS_ENOMEM;
    }
    if (len)
        *len = n;
    return 0;
}

/* Splits a stored job value. */
static int
job_decode(const MDB_val *v, const void **data, size_t *len, aps_time *next)
{
    if (v->mv_size < APS_STORE_TIME_LEN)
        return APS_ECORRUPT;
    if (next)
        *next = aps__store_time_decode(v->mv_data);
    if (data)
        *data = (const unsigned char *)v->mv_data + APS_STORE_TIME_LEN;
    if (len)
        *len = v->mv_size - APS_STORE_TIME_LEN;
    return 0;
}

static int
l_job_get(aps_store *bs, const char *id, size_t idlen, void **data, size_t *len, aps_time *next_run)
{
    lmdb_store *s = L(bs);
    MDB_val k = {idlen, (void *)id}, v;
    const void *p;
    size_t n;
    aps_time nr;
    MDB_txn *txn;
    int rc;

    rc = rd_begin(s, &txn);
    if (rc)
        return rc;
    rc = map_rc(mdb_get(txn, s->jobs, &k, &v));
    if (rc)
        goto out;
    rc = job_decode(&v, &p, &n, &nr);
    if (rc)
        goto out;
    rc = copy_out(p, n, data, len);
    if (!rc && next_run)
        *next_run = nr;
out:
    rd_end(s, txn);
    return rc;
}

static int
l_jobs_get(aps_store *bs, const char *const *ids, size_t n, aps_store_jobs_cb cb, void *arg)
{
    lmdb_store *s = L(bs);
    MDB_txn *txn;
    int rc = rd_begin(s, &txn);

    if (rc)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        MDB_val k = {strlen(ids[i]), (void *)ids[i]}, v;
        const void *data = NULL;
        size_t len = 0;
        aps_time next = APS_TIME_NONE;
        int mrc = mdb_get(txn, s->jobs, &k, &v);
        if (mrc == MDB_NOTFOUND)
            continue;
        rc = mrc ? map_rc(mrc) : job_decode(&v, &data, &len, &next);
        if (rc)
            break;
        aps__store_cb_enter();
        rc = cb(arg, i, data, len, next);
        aps__store_cb_leave();
    }
    rd_end(s, txn);
    return rc;
}

/* Calls a job visitor with a NUL-terminated copy of the id. */
static int
visit_job(aps_store_job_cb cb, void *arg, const void *id, size_t idlen, const MDB_val *v, int *stop)
{
    char idz[APS_STORE_ID_MAX + 1];
    const void *data;
    size_t len;
    aps_time next;
    int rc;

    if (idlen == 0 || idlen > APS_STORE_ID_MAX)
        return APS_ECORRUPT;
    rc = job_decode(v, &data, &len, &next);
    if (rc)
        return rc;
    memcpy(idz, id, idlen);
    idz[idlen] = '\0';
    aps__store_cb_enter();
    rc = cb(arg, idz, data, len, next);
    aps__store_cb_leave();
    *stop = rc != 0;
    return rc;
}

static int
l_job_list(aps_store *bs, const char *after, size_t afterlen, size_t limit, aps_store_job_cb cb,
           void *arg)
{
    lmdb_store *s = L(bs);
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    MDB_txn *txn;
    size_t seen = 0;
    int rc, mrc, stop = 0;

    rc = rd_cursor(s, s->jobs, &txn, &cur);
    if (rc)
        return rc;
    if (after) {
        k.mv_size = afterlen;
        k.mv_data = (void *)after;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (mrc == 0 && aps__store_keycmp(k.mv_data, k.mv_size, after, afterlen) == 0)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else {
        mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    for (; mrc == 0 && !(limit && seen >= limit); seen++) {
        rc = visit_job(cb, arg, k.mv_data, k.mv_size, &v, &stop);
        if (rc || stop)
            goto out;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
out:
    return rd_cursor_end(s, txn, cur, rc, mrc);
}

/* l_due from the first entry, or from the one after `from` (a `due` key). */
static int
due_from(aps_store *bs, const unsigned char *from, size_t fromlen, aps_time before, size_t limit,
         aps_store_job_cb cb, void *arg)
{
    lmdb_store *s = L(bs);
    MDB_cursor *cur = NULL;
    MDB_val k, v, jk, jv;
    MDB_txn *txn;
    aps_time t, jt;
    size_t seen = 0;
    int rc, mrc, stop = 0;

    rc = rd_cursor(s, s->due, &txn, &cur);
    if (rc)
        return rc;
    if (from) {
        k.mv_size = fromlen;
        k.mv_data = (void *)from;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (mrc == 0 && aps__store_keycmp(k.mv_data, k.mv_size, from, fromlen) == 0)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else {
        mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    for (; mrc == 0 && !(limit && seen >= limit);
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), seen++) {
        if (k.mv_size <= APS_STORE_TIME_LEN || k.mv_size > APS_STORE_DUE_KEY_MAX) {
            rc = APS_ECORRUPT;
            goto out;
        }
        t = aps__store_time_decode(k.mv_data);
        if (t > before)
            break;
        jk.mv_size = k.mv_size - APS_STORE_TIME_LEN;
        jk.mv_data = (unsigned char *)k.mv_data + APS_STORE_TIME_LEN;
        mrc = mdb_get(txn, s->jobs, &jk, &jv);
        if (mrc == MDB_NOTFOUND) {
            rc = APS_ECORRUPT; /* the index names a job that is gone */
            goto out;
        }
        if (mrc) {
            rc = map_rc(mrc);
            goto out;
        }
        rc = job_decode(&jv, NULL, NULL, &jt);
        if (rc == 0 && jt != t)
            rc = APS_ECORRUPT; /* the index and the job disagree */
        if (rc)
            goto out;
        rc = visit_job(cb, arg, jk.mv_data, jk.mv_size, &jv, &stop);
        if (rc || stop)
            goto out;
    }
out:
    return rd_cursor_end(s, txn, cur, rc, mrc);
}

static int
l_due(aps_store *bs, aps_time before, size_t limit, aps_store_job_cb cb, void *arg)
{
    return due_from(bs, NULL, 0, before, limit, cb, arg);
}

static int
l_due_after(aps_store *bs, aps_time after, const char *after_id, size_t idlen, aps_time before,
            size_t limit, aps_store_job_cb cb, void *arg)
{
    unsigned char key[APS_STORE_DUE_KEY_MAX];
    size_t n = aps__store_due_key(after, after_id, idlen, key);

    return due_from(bs, key, n, before, limit, cb, arg);
}

static int
l_next_due(aps_store *bs, aps_time *out)
{
    lmdb_store *s = L(bs);
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    MDB_txn *txn;
    int rc, mrc;

    rc = rd_cursor(s, s->due, &txn, &cur);
    if (rc)
        return rc;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (mrc == MDB_NOTFOUND)
        *out = APS_TIME_NONE;
    else if (!mrc && k.mv_size <= APS_STORE_TIME_LEN)
        rc = APS_ECORRUPT;
    else if (!mrc)
        *out = aps__store_time_decode(k.mv_data);
    return rd_cursor_end(s, txn, cur, rc, mrc);
}

static int
l_count(aps_store *bs, size_t *jobs, size_t *scheduled)
{
    lmdb_store *s = L(bs);
    MDB_stat st, dst;
    MDB_txn *txn;
    int rc;

    rc = rd_begin(s, &txn);
    if (rc)
        return rc;
    rc = map_rc(mdb_stat(txn, s->jobs, &st));
    if (!rc && scheduled)
        rc = map_rc(mdb_stat(txn, s->due, &dst));
    if (!rc) {
        *jobs = st.ms_entries;
        if (scheduled)
            *scheduled = dst.ms_entries;
    }
    rd_end(s, txn);
    return rc;
}

static int
l_events(aps_store *bs, uint64_t after_seq, size_t limit, aps_store_event_cb cb, void *arg)
{
    lmdb_store *s = L(bs);
    unsigned char kb[8];
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    MDB_txn *txn;
    size_t seen = 0;
    int rc, mrc;

    if (after_seq == UINT64_MAX)
        return 0;
    rc = rd_cursor(s, s->events, &txn, &cur);
    if (rc)
        return rc;
    aps__store_u64_encode(after_seq + 1, kb);
    k.mv_size = sizeof kb;
    k.mv_data = kb;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0 && !(limit && seen >= limit);
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), seen++) {
        if (k.mv_size != 8 || v.mv_size < APS_STORE_TIME_LEN) {
            rc = APS_ECORRUPT;
            goto out;
        }
        aps__store_cb_enter();
        rc = cb(arg, aps__store_u64_decode(k.mv_data), aps__store_time_decode(v.mv_data),
                (unsigned char *)v.mv_data + APS_STORE_TIME_LEN, v.mv_size - APS_STORE_TIME_LEN);
        aps__store_cb_leave();
        if (rc)
            goto out;
    }
out:
    return rd_cursor_end(s, txn, cur, rc, mrc);
}

/* Reads the event sequence counter in any transaction. */
static int
read_event_seq(lmdb_store *s, MDB_txn *txn, uint64_t *last)
{
    MDB_val k = {sizeof APS_STORE_META_EVENT_SEQ - 1, (void *)APS_STORE_META_EVENT_SEQ};
    MDB_val v;
    int rc = mdb_get(txn, s->meta, &k, &v);

    if (rc == MDB_NOTFOUND) {
        *last = 0;
        return 0;
    }
    if (rc)
        return rc;
    if (v.mv_size != 8)
        return MDB_CORRUPTED;
    *last = aps__store_u64_decode(v.mv_data);
    return 0;
}

static int
l_event_bounds(aps_store *bs, uint64_t *first, uint64_t *last)
{
    lmdb_store *s = L(bs);
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    MDB_txn *txn;
    int rc, mrc = 0;

    rc = rd_cursor(s, s->events, &txn, &cur);
    if (rc)
        return rc;
    rc = map_rc(read_event_seq(s, txn, last));
    if (rc)
        goto out;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (mrc == MDB_NOTFOUND)
        *first = *last ? *last + 1 : 0;
    else if (!mrc && k.mv_size != 8)
        rc = APS_ECORRUPT;
    else if (!mrc)
        *first = aps__store_u64_decode(k.mv_data);
out:
    return rd_cursor_end(s, txn, cur, rc, mrc);
}

static int
l_meta_get(aps_store *bs, const char *key, size_t keylen, void **data, size_t *len)
{
    lmdb_store *s = L(bs);
    MDB_val k = {keylen, (void *)key}, v;
    MDB_txn *txn;
    int rc;

    rc = rd_begin(s, &txn);
    if (rc)
        return rc;
    rc = map_rc(mdb_get(txn, s->meta, &k, &v));
    if (!rc)
        rc = copy_out(v.mv_data, v.mv_size, data, len);
    rd_end(s, txn);
    return rc;
}

static int
l_meta_scan(aps_store *bs, const char *prefix, size_t prefixlen, aps_store_meta_cb cb, void *arg)
{
    lmdb_store *s = L(bs);
    char key[APS_STORE_META_KEY_MAX + 1];
    MDB_cursor *cur = NULL;
    MDB_val k = {prefixlen, (void *)prefix}, v;
    MDB_txn *txn;
    int rc, mrc;

    rc = rd_cursor(s, s->meta, &txn, &cur);
    if (rc)
        return rc;
    /* Keys with the prefix are contiguous and start at the prefix itself. */
    for (mrc = mdb_cursor_get(cur, &k, &v, prefixlen ? MDB_SET_RANGE : MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < prefixlen || memcmp(k.mv_data, prefix, prefixlen))
            break;
        if (k.mv_size > APS_STORE_META_KEY_MAX) {
            rc = APS_ECORRUPT;
            goto out;
        }
        memcpy(key, k.mv_data, k.mv_size);
        key[k.mv_size] = '\0';
        aps__store_cb_enter();
        rc = cb(arg, key, v.mv_data, v.mv_size);
        aps__store_cb_leave();
        if (rc)
            goto out;
    }
out:
    return rd_cursor_end(s, txn, cur, rc, mrc);
}

static int
l_stats(aps_store *bs, aps_store_stats *out)
{
    lmdb_store *s = L(bs);

    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
    out->space_low = __atomic_load_n(&s->reserve_state, __ATOMIC_ACQUIRE) == RESERVE_GIVEN;
    pthread_rwlock_rdlock(&s->maplock);
    out->map_size = s->map_size;
    pthread_rwlock_unlock(&s->maplock);
    return 0;
}

/* ---- write-transaction operations ------------------------------------- */

static lmdb_txn *
T(aps_txn *t)
{
    return (lmdb_txn *)t;
}

/* Reads `k` of `dbi` in a callback's transaction: APS_ENOENT when absent
 * (no LMDB failure: the batch goes on), any other failure recorded. */
static int
lt_get(lmdb_txn *t, MDB_dbi dbi, MDB_val *k, MDB_val *v)
{
    int rc = mdb_get(t->txn, dbi, k, v);

    if (rc == MDB_NOTFOUND)
        return APS_ENOENT;
    return rc ? txn_fail(t, rc) : 0;
}

/* Remembers that job `id` is stored with next run time `next`. */
static void
known_set(lmdb_txn *t, const char *id, size_t idlen, aps_time next)
{
    if (idlen == 0 || idlen > sizeof t->known_id) {
        t->known_len = 0;
        return;
    }
    memcpy(t->known_id, id, idlen);
    t->known_len = idlen;
    t->known_next = next;
}

static int
known_is(const lmdb_txn *t, const char *id, size_t idlen)
{
    return t->known_len != 0 && t->known_len == idlen && memcmp(t->known_id, id, idlen) == 0;
}

/* The callback's cursor *cur on `dbi` (opened on first use); an LMDB code. */
static int
txn_cursor(lmdb_txn *t, MDB_dbi dbi, MDB_cursor **cur)
{
    return *cur ? 0 : mdb_cursor_open(t->txn, dbi, cur);
}

static int
jobs_cursor(lmdb_txn *t)
{
    return txn_cursor(t, t->s->jobs, &t->jobs_cur);
}

/* Closes the callback's cursors: before any abort, which would free them
 * under us. */
static void
txn_cursors_close(lmdb_txn *t)
{
    if (t->jobs_cur)
        mdb_cursor_close(t->jobs_cur);
    if (t->meta_cur)
        mdb_cursor_close(t->meta_cur);
    if (t->events_cur)
        mdb_cursor_close(t->events_cur);
    if (t->due_del_cur)
        mdb_cursor_close(t->due_del_cur);
    if (t->due_put_cur)
        mdb_cursor_close(t->due_put_cur);
    t->jobs_cur = t->meta_cur = t->events_cur = t->due_del_cur = t->due_put_cur = NULL;
}

static int
lt_job_get(aps_txn *bt, const char *id, size_t idlen, const void **data, size_t *len,
           aps_time *next_run)
{
    lmdb_txn *t = T(bt);
    MDB_val k = {idlen, (void *)id}, v;
    aps_time next;
    int rc;

    t->known_len = 0; /* the cursor moves */
    rc = jobs_cursor(t);
    if (rc == 0)
        rc = mdb_cursor_get(t->jobs_cur, &k, &v, MDB_SET_KEY);
    if (rc == MDB_NOTFOUND)
        return APS_ENOENT;
    if (rc)
        return txn_fail(t, rc);
    rc = job_decode(&v, data, len, &next);
    if (rc)
        return rc;
    known_set(t, id, idlen, next);
    if (next_run)
        *next_run = next;
    return 0;
}

/* Removes every `due` entry of `id` by a full scan. Only for a job whose
 * stored value is too damaged to tell its next run time. */
static int
due_scrub(lmdb_txn *t, const char *id, size_t idlen)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    rc = mdb_cursor_open(t->txn, t->s->due, &cur);
    if (rc)
        return txn_fail(t, rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size == APS_STORE_TIME_LEN + idlen &&
            memcmp((unsigned char *)k.mv_data + APS_STORE_TIME_LEN, id, idlen) == 0) {
            rc = mdb_cursor_del(cur, 0);
            if (rc)
                break;
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : txn_fail(t, rc);
}

/* Removes the due entry of a job stored with next run time `next`. */
static int
due_remove_at(lmdb_txn *t, const char *id, size_t idlen, aps_time next)
{
    unsigned char dk[APS_STORE_DUE_KEY_MAX];
    MDB_val k, v;
    int rc;

    if (next == APS_TIME_NONE)
        return 0;
    k.mv_size = aps__store_due_key(next, id, idlen, dk);
    k.mv_data = dk;
    rc = txn_cursor(t, t->s->due, &t->due_del_cur);
    if (rc == 0)
        rc = mdb_cursor_get(t->due_del_cur, &k, &v, MDB_SET);
    if (rc == 0)
        rc = mdb_cursor_del(t->due_del_cur, 0);
    /* A missing entry is tolerated: the put or delete repairs the index. */
    if (rc && rc != MDB_NOTFOUND)
        return txn_fail(t, rc);
    return 0;
}

/* Removes the due entry of a job whose stored value is `old`. */
static int
due_remove(lmdb_txn *t, const char *id, size_t idlen, const MDB_val *old)
{
    aps_time next;

    if (job_decode(old, NULL, NULL, &next))
        return due_scrub(t, id, idlen);
    return due_remove_at(t, id, idlen, next);
}

static int
lt_job_put(aps_txn *bt, const char *id, size_t idlen, const void *data, size_t len,
           aps_time next_run)
{
    lmdb_txn *t = T(bt);
    unsigned char dk[APS_STORE_DUE_KEY_MAX];
    MDB_val k = {idlen, (void *)id}, v, ck, cv, empty = {0, NULL};
    aps_time old_next = APS_TIME_NONE;
    int rc, had_old = 0;

    t->writes++;
    if (known_is(t, id, idlen)) {
        /* Read (or written) by this callback: stored, with this next run. */
        had_old = 1;
        old_next = t->known_next;
        if (old_next != next_run) {
            rc = due_remove_at(t, id, idlen, old_next);
            if (rc)
                return rc;
        }
    } else if ((rc = mdb_get(t->txn, t->s->jobs, &k, &v)) == 0) {
        had_old = 1;
        if (job_decode(&v, NULL, NULL, &old_next)) {
            rc = due_scrub(t, id, idlen);
            if (rc)
                return rc;
            had_old = 0;
        } else if (old_next != next_run) {
            rc = due_remove(t, id, idlen, &v);
            if (rc)
                return rc;
        }
    } else if (rc != MDB_NOTFOUND) {
        return txn_fail(t, rc);
    }
    /* MDB_RESERVE: build the value in place, no temporary buffer. */
    unsigned flags = MDB_RESERVE;
    if (len > SIZE_MAX - APS_STORE_TIME_LEN)
        return APS_EINVAL;
    rc = jobs_cursor(t);
    if (rc)
        return txn_fail(t, rc);
    /* A known job is where the cursor is (read or written last): replace
     * it there. MDB_CURRENT ignores the key, so check the cursor's first. */
    if (had_old && known_is(t, id, idlen) &&
        mdb_cursor_get(t->jobs_cur, &ck, &cv, MDB_GET_CURRENT) == 0 && ck.mv_size == idlen &&
        memcmp(ck.mv_data, id, idlen) == 0)
        flags |= MDB_CURRENT;
    t->known_len = 0; /* until the put below is done */
    v.mv_size = APS_STORE_TIME_LEN + len;
    v.mv_data = NULL;
    rc = mdb_cursor_put(t->jobs_cur, &k, &v, flags);
    if (rc)
        return txn_fail(t, rc);
    aps__store_time_encode(next_run, v.mv_data);
    if (len)
        memcpy((unsigned char *)v.mv_data + APS_STORE_TIME_LEN, data, len);
    if (next_run != APS_TIME_NONE && !(had_old && old_next == next_run)) {
        k.mv_size = aps__store_due_key(next_run, id, idlen, dk);
        k.mv_data = dk;
        rc = txn_cursor(t, t->s->due, &t->due_put_cur);
        if (rc == 0)
            rc = mdb_cursor_put(t->due_put_cur, &k, &empty, 0);
        if (rc)
            return txn_fail(t, rc);
    }
    known_set(t, id, idlen, next_run);
    return 0;
}

static int
lt_job_del(aps_txn *bt, const char *id, size_t idlen)
{
    lmdb_txn *t = T(bt);
    MDB_val k = {idlen, (void *)id}, v;
    int rc;

    t->writes++;
    t->known_len = 0;
    rc = lt_get(t, t->s->jobs, &k, &v);
    if (rc)
        return rc;
    rc = due_remove(t, id, idlen, &v);
    if (rc)
        return rc;
    rc = mdb_del(t->txn, t->s->jobs, &k, NULL);
    if (rc)
        return txn_fail(t, rc);
    return 0;
}

static int
lt_job_del_all(aps_txn *bt, size_t *removed)
{
    lmdb_txn *t = T(bt);
    MDB_stat st;
    int rc;

    t->writes++;
    t->known_len = 0;
    rc = mdb_stat(t->txn, t->s->jobs, &st);
    if (rc)
        return txn_fail(t, rc);
    /* mdb_drop(.., 0) empties a database and keeps its handle. */
    rc = mdb_drop(t->txn, t->s->jobs, 0);
    if (rc)
        return txn_fail(t, rc);
    rc = mdb_drop(t->txn, t->s->due, 0);
    if (rc)
        return txn_fail(t, rc);
    *removed = st.ms_entries;
    return 0;
}

/* Writes the event counter back if this callback's appends moved it; run
 * after the callback, and before it reads or writes `meta` itself. */
static int
seq_flush(lmdb_txn *t)
{
    unsigned char sb[8];
    MDB_val sk = {sizeof APS_STORE_META_EVENT_SEQ - 1, (void *)APS_STORE_META_EVENT_SEQ};
    MDB_val sv = {sizeof sb, sb};
    int rc;

    if (!t->seq_dirty)
        return 0;
    aps__store_u64_encode(t->seq, sb);
    rc = mdb_put(t->txn, t->s->meta, &sk, &sv, 0);
    if (rc)
        return txn_fail(t, rc);
    t->seq_dirty = 0;
    return 0;
}

static int
lt_event_append(aps_txn *bt, aps_time at, const void *data, size_t len, uint64_t *seq)
{
    lmdb_txn *t = T(bt);
    unsigned char kb[8];
    MDB_val k = {sizeof kb, kb}, v;
    uint64_t last;
    int rc;

    t->writes++;
    /* The counter, not the last key, gives the next sequence: pruning may
     * have emptied the log, and a sequence must never be reused. */
    if (t->seq_known) {
        last = t->seq;
    } else {
        rc = read_event_seq(t->s, t->txn, &last);
        if (rc == MDB_CORRUPTED)
            return APS_ECORRUPT;
        if (rc)
            return txn_fail(t, rc);
    }
    if (len > SIZE_MAX - APS_STORE_TIME_LEN)
        return APS_EINVAL;
    aps__store_u64_encode(last + 1, kb);
    v.mv_size = APS_STORE_TIME_LEN + len;
    v.mv_data = NULL;
    /* MDB_APPEND: keys only grow, and appended pages are filled completely
     * instead of split in half. A smaller key already there means the
     * counter went backwards: corruption (MDB_KEYEXIST). */
    rc = txn_cursor(t, t->s->events, &t->events_cur);
    if (rc == 0)
        rc = mdb_cursor_put(t->events_cur, &k, &v, MDB_RESERVE | MDB_APPEND);
    if (rc)
        return txn_fail(t, rc);
    aps__store_time_encode(at, v.mv_data);
    if (len)
        memcpy((unsigned char *)v.mv_data + APS_STORE_TIME_LEN, data, len);
    t->seq = last + 1;
    t->seq_known = t->seq_dirty = 1;
    *seq = last + 1;
    return 0;
}

static int
lt_meta_get(aps_txn *bt, const char *key, size_t keylen, const void **data, size_t *len)
{
    lmdb_txn *t = T(bt);
    MDB_val k = {keylen, (void *)key}, v;
    int rc = seq_flush(t);

    if (rc == 0)
        rc = lt_get(t, t->s->meta, &k, &v);
    if (rc)
        return rc;
    if (data)
        *data = v.mv_data;
    if (len)
        *len = v.mv_size;
    return 0;
}

/* Before a callback's own put or delete in `meta`: the event counter
 * written back first, then read again by later appends (the callback may
 * write it itself), and the meta cursor opened. 0 or an APS_E* code. */
static int
meta_write_begin(lmdb_txn *t)
{
    t->writes++;
    int rc = seq_flush(t);
    if (rc)
        return rc;
    t->seq_known = 0;
    rc = txn_cursor(t, t->s->meta, &t->meta_cur);
    return rc ? txn_fail(t, rc) : 0;
}

static int
lt_meta_put(aps_txn *bt, const char *key, size_t keylen, const void *data, size_t len)
{
    lmdb_txn *t = T(bt);
    MDB_val k = {keylen, (void *)key}, v = {len, (void *)data};

    int rc = meta_write_begin(t);
    if (rc)
        return rc;
    rc = mdb_cursor_put(t->meta_cur, &k, &v, 0);
    return rc ? txn_fail(t, rc) : 0;
}

static int
lt_meta_del(aps_txn *bt, const char *key, size_t keylen)
{
    lmdb_txn *t = T(bt);
    MDB_val k = {keylen, (void *)key}, v;

    int rc = meta_write_begin(t);
    if (rc)
        return rc;
    rc = mdb_cursor_get(t->meta_cur, &k, &v, MDB_SET);
    if (rc == MDB_NOTFOUND)
        return APS_ENOENT;
    if (rc == 0)
        rc = mdb_cursor_del(t->meta_cur, 0);
    return rc ? txn_fail(t, rc) : 0;
}

/* ---- the writer --------------------------------------------------------- */

/* Drops the oldest events while there are more than event_max_count, or
 * while they are older than event_max_age_us. Only a prefix is removed, so
 * the retained log never has a hole. Returns an LMDB code. */
static int
prune_events(lmdb_store *s, MDB_txn *txn)
{
    size_t max = s->base.cfg.event_max_count;
    aps_time age = s->base.cfg.event_max_age_us;
    aps_time cutoff = age ? aps__store_clock_now(&s->base) - age : 0;
    MDB_cursor *cur;
    MDB_stat st;
    MDB_val k, v;
    size_t n;
    int rc;

    if (!max && !age)
        return 0;
    rc = mdb_stat(txn, s->events, &st);
    if (rc)
        return rc;
    n = st.ms_entries;
    rc = mdb_cursor_open(txn, s->events, &cur);
    if (rc)
        return rc;
    while (n && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
        /* A damaged (too short) event counts as old: it can only go. */
        int old =
            age && (v.mv_size < APS_STORE_TIME_LEN || aps__store_time_decode(v.mv_data) < cutoff);

        if (!(max && n > max) && !old)
            break;
        rc = mdb_cursor_del(cur, 0);
        if (rc)
            break;
        n--;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* After a write found the disk full: how long the write window holds
 * nothing back (with no disk reserve, the only sign of low space). */
#define PIN_FULL_PAUSE_S 60

/* Ends the write window's read transaction (top comment), if any. */
static void
pin_drop(lmdb_store *s)
{
    if (s->pin != NULL)
        mdb_txn_abort(s->pin);
    s->pin = NULL;
}

static int env_open(lmdb_store *s, int exact, aps_error *err);

/* Doubles the map. No transaction of this process may be active: the
 * writer has aborted its own, and maplock keeps readers out. */
static int
grow_map(lmdb_store *s)
{
    MDB_envinfo info;
    size_t size;
    int rc;

    pin_drop(s); /* the map is remapped: no transaction may stay open */
    pthread_rwlock_wrlock(&s->maplock);
    if (s->map_size > SIZE_MAX / 2) {
        rc = MDB_MAP_FULL;
        goto out;
    }
    size = s->map_size * 2;
    rc = mdb_env_set_mapsize(s->env, size);
    if (rc) {
        /* LMDB unmapped the old map before mapping the new one, and left
         * none: the environment is unusable (its next transaction would
         * read unmapped pages). Open it again at the size it had; failing
         * that, s->env is NULL (readers get APS_EIO, the next batch tries
         * again, as after MDB_PANIC). */
        mdb_env_close(s->env);
        s->env = NULL;
        (void)env_open(s, 1, NULL);
        goto out;
    }
    /* LMDB may round the size; keep what it really uses. */
    mdb_env_info(s->env, &info);
    s->map_size = info.me_mapsize;
out:
    pthread_rwlock_unlock(&s->maplock);
    if (!rc) {
        pthread_mutex_lock(&s->mu);
        s->stats.map_grows++;
        pthread_mutex_unlock(&s->mu);
    }
    return rc;
}

/* After MDB_PANIC (a failed meta-page write, e.g. the disk filled at the
 * worst moment) the environment refuses every transaction until reopened.
 * The writer reopens it with readers held off by maplock; the last commit
 * on disk is intact, so nothing acknowledged is lost. */
static int
env_recover(lmdb_store *s)
{
    int rc;

    pin_drop(s); /* the environment is closed */
    pthread_rwlock_wrlock(&s->maplock);
    if (s->env) {
        mdb_env_close(s->env);
        s->env = NULL;
    }
    rc = env_open(s, 0, NULL);
    pthread_rwlock_unlock(&s->maplock);
    return rc ? MDB_PANIC : 0;
}

/* Whether the environment refuses transactions after a failed commit
 * (MDB_PANIC: a meta page could not be written). It does so for readers
 * too, so recovery cannot wait for the next write: the scheduler's loop
 * reads before it writes, and an idle store would stay unreadable. Writer
 * thread only (no write transaction open). */
static int
panicked(lmdb_store *s)
{
    MDB_txn *txn = NULL;
    int rc;

    pthread_rwlock_rdlock(&s->maplock);
    rc = s->env ? mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) : MDB_PANIC;
    if (rc == 0)
        mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->maplock);
    return rc == MDB_PANIC;
}

/* Bytes the calling thread has passed to write(2) and its kin
 * (/proc/thread-self/io, wchar); -1 if unknown. */
static int64_t
thread_wchar(void)
{
    char buf[512];
    int fd = open("/proc/thread-self/io", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    const char *p;

    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    p = strstr(buf, "wchar: ");
    return p != NULL ? strtoll(p + 7, NULL, 10) : -1;
}

/* After a batch: takes the write window's read transaction, or renews it
 * once this thread (the writer: every page of a commit) has written the
 * window's bytes since it was taken. Counted in bytes written, not in the
 * file's growth: the pages freed under one pin are reused under the next,
 * so the file stops growing once a window's writes fit in what the window
 * before freed (a rule on growth would renew only after growth, and the
 * pool of freed pages, and the file, would grow by a window every time). */
static void
pin_update(lmdb_store *s)
{
    int64_t w, window = (int64_t)s->base.cfg.write_window;

    if (window == 0 || s->env == NULL)
        return;
    /* Low on space (the reserve given back, or no room for it; or the
     * disk found full lately): every freed page is reused, the file grows
     * no more than it must. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((s->base.cfg.reserve_bytes > 0 &&
         __atomic_load_n(&s->reserve_state, __ATOMIC_ACQUIRE) != RESERVE_HELD) ||
        (s->pin_full.tv_sec != 0 && now.tv_sec - s->pin_full.tv_sec < PIN_FULL_PAUSE_S)) {
        pin_drop(s);
        return;
    }
    w = thread_wchar();
    if (w < 0) {
        pin_drop(s); /* no measure: LMDB's own reuse */
        return;
    }
    if (s->pin != NULL && w - s->pin_wchar < window)
        return;
    pin_drop(s);
    /* Without it, commits reuse freed pages as LMDB does by default. */
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->pin) != 0)
        s->pin = NULL;
    s->pin_wchar = w;
}

/* Runs one batch: every request's callback in the batch's transaction,
 * then one commit. Sets each request's rc.
 *
 * No nested transaction per callback (LMDB allocates 3 MB for each and
 * merges its dirty pages into the parent's list, a third of the writer's
 * CPU): a callback that fails before writing anything left nothing to undo,
 * and one that fails after writing, or hits an LMDB error (which may leave
 * the transaction unusable), is taken out of the batch, which is then run
 * again from the start without it. Callbacks may run more than once anyway
 * (a grown map), so each starts from scratch. */
static void
run_batch(lmdb_store *s, lreq *batch)
{
    int grows = 0, rc, code;
    int pinned = s->pin != NULL; /* the write window held pages back */
    MDB_txn *parent;
    lreq *r;

    for (r = batch; r; r = r->next)
        r->out = 0;
retry:
    for (r = batch; r; r = r->next)
        if (!r->out)
            r->rc = 0;
    parent = NULL;
    if (!s->env) {
        rc = MDB_PANIC;
    } else {
        rc = mdb_txn_begin(s->env, NULL, 0, &parent);
    }
    if (rc == MDB_PANIC)
        pin_drop(s);
    if (rc == MDB_PANIC && env_recover(s) == 0)
        rc = mdb_txn_begin(s->env, NULL, 0, &parent);
    if (rc)
        goto fail;

    for (r = batch; r; r = r->next) {
        lmdb_txn t;

        if (r->out)
            continue;
        memset(&t, 0, sizeof t);
        t.base.store = &s->base;
        t.s = s;
        t.txn = parent;
        aps__store_cb_enter();
        r->rc = r->fn(&t.base, r->arg);
        aps__store_cb_leave();
        txn_cursors_close(&t);
        if (r->rc == 0)
            r->rc = seq_flush(&t);
        if (t.mdb_err == MDB_MAP_FULL) {
            rc = MDB_MAP_FULL;
            goto fail_abort;
        }
        if (t.mdb_err && r->rc == 0)
            r->rc = map_rc(t.mdb_err);
        if (r->rc == 0)
            continue;
        r->out = 1;
        if (t.mdb_err || t.writes) {
            mdb_txn_abort(parent);
            goto retry;
        }
    }
    rc = prune_events(s, parent);
    if (rc)
        goto fail_abort;
    /* One durable commit for the whole batch. LMDB frees the transaction
     * even when the commit fails; it must not be used again. */
    rc = mdb_txn_commit(parent);
    parent = NULL;
    if (rc)
        pin_drop(s);
    if (rc && panicked(s))
        (void)env_recover(s); /* failing, s->env is NULL: the next batch tries */
    if (rc)
        goto fail;
    pthread_mutex_lock(&s->mu);
    s->stats.commits++;
    pthread_mutex_unlock(&s->mu);
    return;

fail_abort:
    mdb_txn_abort(parent);
    parent = NULL;
fail:
    /* A full map or disk, or a reopening: every freed page again. */
    pin_drop(s);
    rc = refine_io_error(s, rc);
    if (rc == ENOSPC || rc == EDQUOT) {
        clock_gettime(CLOCK_MONOTONIC, &s->pin_full);
        if (pinned) {
            /* First in the pages the window held back: they may be room
             * enough, without the disk reserve. (A full map grows: it is
             * address space, not disk.) */
            pinned = 0;
            goto retry;
        }
    }
    if (rc == MDB_MAP_FULL && grows < MAX_GROW_PER_BATCH && grow_map(s) == 0) {
        grows++;
        goto retry;
    }
    if ((rc == ENOSPC || rc == EDQUOT) && reserve_give(s))
        goto retry; /* once: the reserve is gone now */
    code = map_rc(rc);
    for (r = batch; r; r = r->next)
        if (r->rc == 0)
            r->rc = code;
}

/* Only lazy writes are queued: waits (mu held) until LAZY_GAP_NS after the
 * last commit, or a wake-up (an eager write, stopping). 1 if it waited,
 * 0 if the gap is over. */
static int
lazy_wait(lmdb_store *s)
{
    struct timespec now, until = s->last_commit;

    clock_gettime(CLOCK_MONOTONIC, &now);
    until.tv_nsec += LAZY_GAP_NS;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    if (now.tv_sec > until.tv_sec || (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec))
        return 0;
    s->lazy_waiting = 1;
    pthread_cond_timedwait(&s->cv, &s->mu, &until);
    s->lazy_waiting = 0;
    return 1;
}

static int64_t
ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* Fewer eager requests are queued than s->batch_want (the callers the last
 * batch woke that wait for their writes, and the eager requests queued
 * then): waits (mu held) until that many are queued, or until
 * batch_until_ns (as long after the wake-up as that batch took, at most
 * batch_wait_ns). A thread that writes and waits mostly comes straight
 * back with its next write (threads adding jobs one after another).
 * Started at once, the next batch holds only those that came during the
 * commit, the others make a batch of their own, and the two groups take
 * turns: two fsyncs per round instead of one (64 threads adding made
 * batches of ~40). Waiting no longer than a commit takes costs at most the
 * commit it saves. Asynchronous writes (the scheduler's runs, the daemon's
 * adds) do not count: nobody is known to come back. */
static void
batch_wait(lmdb_store *s)
{
    struct timespec until = {(time_t)(s->batch_until_ns / 1000000000),
                             (long)(s->batch_until_ns % 1000000000)};

    s->batch_waiting = 1;
    while (s->n_eager < s->batch_want && !s->stopping)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until))
            break;
    s->batch_waiting = 0;
}

/* Set on every store's writer thread (aps__store_on_writer). */
static _Thread_local int on_writer;

int
aps__store_on_writer(void)
{
    return on_writer;
}

static void *
writer_main(void *arg)
{
    lmdb_store *s = arg;
    lreq *batch, *r, *next;
    struct timespec t0, now;
    int64_t took;
    uint64_t n, n_sync;

    on_writer = 1;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stopping) {
            s->writer_idle = 1;
            pthread_cond_wait(&s->cv, &s->mu);
            s->writer_idle = 0;
        }
        if (!s->head)
            break; /* stopping, and the queue is drained */
        if (s->n_eager == 0 && !s->stopping && lazy_wait(s))
            continue; /* woken or timed out: look again */
        if (s->n_eager > 0 && s->n_eager < s->batch_want && !s->stopping) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (ts_ns(&now) < s->batch_until_ns)
                batch_wait(s);
        }
        s->batch_want = 0;
        batch = s->head;
        s->head = s->tail = NULL;
        s->n_eager = 0;
        pthread_mutex_unlock(&s->mu);

        clock_gettime(CLOCK_MONOTONIC, &t0);
        run_batch(s, batch);
        clock_gettime(CLOCK_MONOTONIC, &s->last_commit);
        pin_update(s);

        /* Count the batch before waking anyone, so that a caller that
         * returns sees its write in the stats. */
        n = n_sync = 0;
        for (r = batch; r; r = r->next) {
            n++;
            n_sync += r->cb == NULL;
        }
        pthread_mutex_lock(&s->mu);
        s->stats.writes += n;
        s->batch_want = n_sync > 0 ? n_sync + s->n_eager : 0;
        pthread_mutex_unlock(&s->mu);
        /* Wake the callers without holding the mutex: a caller woken while
         * we hold it would only block again on it (two context switches per
         * write instead of one, which dominated the CPU profile with 64
         * writers). A request lives on its caller's stack and may be gone
         * as soon as it is posted, so read `next` first. */
        for (r = batch; r; r = next) {
            next = r->next;
            if (r->cb != NULL) {
                r->cb(r->cb_arg, r->rc);
                free(r);
            } else {
                sem_post(&r->done);
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        took = ts_ns(&s->last_commit) - ts_ns(&t0);
        s->batch_until_ns = ts_ns(&now) + (took < s->batch_wait_ns ? took : s->batch_wait_ns);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    pin_drop(s); /* before the environment is closed (l_close) */
    return NULL;
}

/* Queues `r`; 0, or APS_ESTATE when the store is closing. */
static int
enqueue(lmdb_store *s, lreq *r)
{
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return APS_ESTATE;
    }
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    if (!r->lazy)
        s->n_eager++;
    /* A busy writer takes the whole queue when it is done: no wake-up. A
     * lazy write does not cut the writer's lazy wait short. */
    if (s->writer_idle || (s->lazy_waiting && !r->lazy) ||
        (s->batch_waiting && s->n_eager >= s->batch_want))
        pthread_cond_broadcast(&s->cv); /* not signal: glibc bug 25847 */
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int
l_write(aps_store *bs, aps_write_fn fn, void *arg)
{
    lmdb_store *s = L(bs);
    lreq r;
    int rc;

    /* From an asynchronous write's completion: the writer would wait for
     * itself. */
    if (pthread_equal(pthread_self(), s->writer))
        return APS_ESTATE;
    memset(&r, 0, sizeof r);
    r.fn = fn;
    r.arg = arg;
    if (sem_init(&r.done, 0, 0))
        return APS_ENOMEM;
    rc = enqueue(s, &r);
    if (rc == 0) {
        /* glibc >= 2.21: sem_post does not touch the semaphore after
         * waking us, so destroying it right after sem_wait returns is safe. */
        while (sem_wait(&r.done) && errno == EINTR)
            ;
        rc = r.rc;
    }
    sem_destroy(&r.done);
    return rc;
}

static void
queue_async(aps_store *bs, aps_write_fn fn, void *arg, aps_write_done_fn done, void *done_arg,
            int lazy)
{
    lmdb_store *s = L(bs);
    lreq *r = calloc(1, sizeof(*r));
    int rc = APS_ENOMEM;

    if (r != NULL) {
        r->lazy = lazy;
        r->fn = fn;
        r->arg = arg;
        r->cb = done;
        r->cb_arg = done_arg;
        rc = enqueue(s, r);
        if (rc == 0)
            return;
        free(r);
    }
    done(done_arg, rc);
}

static void
l_write_async(aps_store *bs, aps_write_fn fn, void *arg, aps_write_done_fn done, void *done_arg)
{
    queue_async(bs, fn, arg, done, done_arg, 0);
}

static void
l_write_lazy(aps_store *bs, aps_write_fn fn, void *arg, aps_write_done_fn done, void *done_arg)
{
    queue_async(bs, fn, arg, done, done_arg, 1);
}

/* ---- open / close -------------------------------------------------------- */

/* Opens the named databases and checks (or, for a new store, writes) the
 * schema version. */
static int
env_setup(lmdb_store *s, aps_error *err)
{
    MDB_val k = {sizeof APS_STORE_META_SCHEMA - 1, (void *)APS_STORE_META_SCHEMA};
    unsigned char vb[4];
    MDB_val v;
    MDB_stat sj, se;
    MDB_txn *txn = NULL;
    uint32_t ver;
    int rc;

    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        goto fail;
    if ((rc = mdb_dbi_open(txn, "jobs", MDB_CREATE, &s->jobs)) ||
        (rc = mdb_dbi_open(txn, "due", MDB_CREATE, &s->due)) ||
        (rc = mdb_dbi_open(txn, "events", MDB_CREATE, &s->events)) ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)))
        goto fail;
    rc = mdb_get(txn, s->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        if ((rc = mdb_stat(txn, s->jobs, &sj)) || (rc = mdb_stat(txn, s->events, &se)))
            goto fail;
        if (sj.ms_entries || se.ms_entries) {
            mdb_txn_abort(txn);
            aps__store_seterr(err, APS_ECORRUPT, "store has data but no schema version (%s)",
                              s->dir);
            return APS_ECORRUPT;
        }
        ver = 0; /* new: written below */
    } else if (rc) {
        goto fail;
    } else {
        const unsigned char *p = v.mv_data;

        if (v.mv_size != 4) {
            mdb_txn_abort(txn);
            aps__store_seterr(err, APS_ECORRUPT, "store schema version is unreadable (%s)", s->dir);
            return APS_ECORRUPT;
        }
        ver = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (ver < APS_STORE_SCHEMA_MIN || ver > APS_STORE_SCHEMA_VERSION) {
            mdb_txn_abort(txn);
            aps__store_seterr(
                err, APS_ECORRUPT,
                "store schema version %u is not supported: "
                "this apsd reads versions %u to %u%s (%s)",
                ver, APS_STORE_SCHEMA_MIN, APS_STORE_SCHEMA_VERSION,
                ver > APS_STORE_SCHEMA_VERSION ? "; the store was written by a newer apsd" : "",
                s->dir);
            return APS_ECORRUPT;
        }
    }
    if (ver != APS_STORE_SCHEMA_VERSION) {
        /* A new store, or an older one upgraded in place: from now on an
         * apsd that cannot read what this one writes refuses it. */
        vb[0] = (unsigned char)(APS_STORE_SCHEMA_VERSION >> 24);
        vb[1] = (unsigned char)(APS_STORE_SCHEMA_VERSION >> 16);
        vb[2] = (unsigned char)(APS_STORE_SCHEMA_VERSION >> 8);
        vb[3] = (unsigned char)APS_STORE_SCHEMA_VERSION;
        v.mv_size = sizeof vb;
        v.mv_data = vb;
        rc = mdb_put(txn, s->meta, &k, &v, 0);
        if (rc)
            goto fail;
    }
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc)
        goto fail;
    return 0;

fail:
    if (txn)
        mdb_txn_abort(txn);
    aps__store_seterr(err, map_rc(rc), "store: %s (%s)", mdb_strerror(rc), s->dir);
    return map_rc(rc);
}

/* LMDB takes a missing or empty data file for a new store. Where a reserve
 * file is (made only after a store's first commit), the store was in use:
 * its data is lost (a restore that forgot it, a copy that wrote nothing),
 * and starting empty would hide that behind a working daemon. */
static int
check_lost(const lmdb_store *s, const char *path, aps_error *err)
{
    char rpath[PATH_MAX + 16];
    struct stat st;

    reserve_path(s, rpath, sizeof rpath);
    if (stat(rpath, &st) != 0 || (stat(path, &st) == 0 && st.st_size > 0))
        return 0;
    aps__store_seterr(err, APS_ECORRUPT,
                      "store: its data file is missing or empty, but the store was in use (its "
                      "`reserve` is there): restore data.mdb from a copy, or move the directory "
                      "away to start with an empty store (%s)",
                      s->dir);
    return APS_ECORRUPT;
}

/* Creates and opens the environment (s->env) and its databases, at
 * s->map_size or (unless `exact`) twice the data file's size when that is
 * more. */
static int
env_open(lmdb_store *s, int exact, aps_error *err)
{
    unsigned flags = MDB_NOTLS | (s->base.cfg.no_sync ? MDB_NOSYNC : 0);
    char path[PATH_MAX];
    MDB_envinfo info;
    struct stat st;
    int rc, dead;

    snprintf(path, sizeof path, "%s/data.mdb", s->dir);
    rc = check_lost(s, path, err);
    if (rc)
        return rc;
    rc = mdb_env_create(&s->env);
    if (rc) {
        s->env = NULL;
        goto fail;
    }
    /* LMDB maps max(configured size, used size): reopening a grown store
     * with the configured size would make the first write hit MAP_FULL and
     * grow again. Start with room to double instead. */
    if (!exact && stat(path, &st) == 0 && st.st_size > 0 && (size_t)st.st_size <= SIZE_MAX / 2 &&
        s->map_size < 2 * (size_t)st.st_size)
        s->map_size = 2 * (size_t)st.st_size;
    if ((rc = mdb_env_set_maxdbs(s->env, 4)) ||
        (rc = mdb_env_set_maxreaders(s->env, MAX_READERS)) ||
        (rc = mdb_env_set_mapsize(s->env, s->map_size)))
        goto fail;
    rc = mdb_env_open(s->env, s->dir, flags, 0600);
    if (rc)
        goto fail;
    /* Reader slots of dead processes (a killed previous owner) would pin
     * old pages forever. We hold the directory lock: all others are dead. */
    mdb_reader_check(s->env, &dead);
    /* An existing file may carry a bigger map than asked for. */
    mdb_env_info(s->env, &info);
    s->map_size = info.me_mapsize;
    rc = env_setup(s, err);
    if (rc) {
        mdb_env_close(s->env);
        s->env = NULL;
        return rc;
    }
    return 0;

fail:
    if (s->env)
        mdb_env_close(s->env);
    s->env = NULL;
    aps__store_seterr(err, map_rc(rc), "store: %s (%s)", mdb_strerror(rc), s->dir);
    return map_rc(rc);
}

/* mkdir -p with mode 0700 for the components that are missing. */
static int
make_dirs(const char *dir, aps_error *err)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);

    if (n == 0 || n >= sizeof path) {
        aps__store_seterr(err, APS_EINVAL, "store: bad directory path");
        return APS_EINVAL;
    }
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        path[i] = '\0';
        if (mkdir(path, 0700) && errno != EEXIST) {
            int e = errno;

            aps__store_seterr(err, e == ENOSPC ? APS_ENOSPC : APS_EIO,
                              "store: cannot create directory: %s (%s)", strerror(e), path);
            return e == ENOSPC ? APS_ENOSPC : APS_EIO;
        }
        path[i] = i == n ? '\0' : '/';
    }
    return 0;
}

unsigned long aps__store_fs_type_test;

/* Network and cluster file systems, by statfs f_type: those coreutils'
 * stat tags "remote" (src/stat.c, the source of its fs-is-local.h), less
 * those that are mostly local or not where a store goes: FUSE and fusectl
 * (FUSE is told apart by subtype, remote_fuse), overlayfs (a container's
 * root), aufs, VxFS, pipefs, nfsd. 9p is left out
 * too: gVisor reports it for local disks. LMDB says not to use them: its
 * lock file's reader table and mutexes are shared memory, which holds
 * within one host, and flock may be local to a host or missing there, so
 * two daemons on two hosts could both own a store. The values are
 * literals: <linux/magic.h> has only some of them, and CIFS, SMB2 and Ceph
 * only since Linux 5.17. */
static const struct {
    unsigned long type;
    const char *name;
} remote_fs[] = {
    {0x00006969, "NFS"},    {0x0000517B, "SMB"},   {0xFF534D42, "CIFS"},   {0xFE534D42, "SMB2"},
    {0x5346414F, "AFS"},    {0x6B414653, "AFS"},   {0x00C36400, "CephFS"}, {0x73757245, "Coda"},
    {0x7461636F, "OCFS2"},  {0x01161970, "GFS2"},  {0x0BD00BD0, "Lustre"}, {0x47504653, "GPFS"},
    {0x19830326, "BeeGFS"}, {0xAAD7AAEA, "PanFS"}, {0x61636673, "ACFS"},   {0x013111A8, "IBRIX"},
    {0x0000564C, "NCP"},    {0xBEEFDEAD, "SNFS"},  {0x786F4256, "vboxsf"}, {0xBACBACBC, "vmhgfs"},
    {0x7C7C6673, "prl_fs"},
};

/* FUSE file systems that reach another host (by the subtype mountinfo
 * gives them, "fuse.<subtype>"): the rest of FUSE is often local (ntfs-3g,
 * bindfs, encfs, squashfuse), so FUSE as such is not refused. */
#define FUSE_SUPER_MAGIC 0x65735546UL
static const char *const remote_fuse[] = {
    "sshfs",     "glusterfs", "ceph-fuse", "cephfs",    "s3fs",         "rclone",
    "gcsfuse",   "goofys",    "juicefs",   "mfs",       "lizardfs",     "blobfuse",
    "blobfuse2", "smbnetfs",  "curlftpfs", "seaweedfs", "alluxio-fuse",
};

const char *aps__store_mountinfo_test;

/* The nearest directory of `dir` that exists (dir itself, or the closest
 * ancestor that does), into path: the store's directory is checked before
 * it is created, so that nothing is made on a refused file system. */
static void
existing_dir(const char *dir, char *path, size_t cap)
{
    struct stat st;

    snprintf(path, cap, "%s", dir);
    while (stat(path, &st) != 0 && errno == ENOENT) {
        char *slash = strrchr(path, '/');

        if (slash == NULL) {
            snprintf(path, cap, ".");
            return;
        }
        if (slash == path) {
            path[1] = '\0';
            return;
        }
        *slash = '\0';
    }
}

/* The FUSE subtype of the mount of device `dev` (from /proc/self/mountinfo:
 * "id parent major:minor root mountpoint ... - fuse.<subtype> source
 * options"), into sub; "" if it has none or cannot be read. */
static void
fuse_subtype(dev_t dev, char *sub, size_t cap)
{
    const char *path =
        aps__store_mountinfo_test ? aps__store_mountinfo_test : "/proc/self/mountinfo";
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t len = 0;

    sub[0] = '\0';
    if (f == NULL)
        return;
    while (getline(&line, &len, f) > 0) {
        unsigned maj, mnr;
        const char *sep = strstr(line, " - ");

        if (sscanf(line, "%*d %*d %u:%u", &maj, &mnr) != 2 || maj != major(dev) ||
            mnr != minor(dev) || sep == NULL || strncmp(sep + 3, "fuse.", 5) != 0)
            continue;
        snprintf(sub, cap, "%.*s", (int)strcspn(sep + 8, " \n"), sep + 8);
        break;
    }
    free(line);
    fclose(f);
}

/* Refuses a directory on a file system of remote_fs, or a FUSE one of
 * remote_fuse, unless allowed. The directory may not exist yet: its
 * nearest existing ancestor is checked. */
static int
check_fs(const char *dir, int allow, aps_error *err)
{
    char path[PATH_MAX], sub[64], what[80];
    const char *name = NULL;
    struct statfs sf;
    struct stat st;
    unsigned long type;

    if (allow)
        return 0;
    existing_dir(dir, path, sizeof path);
    if (aps__store_fs_type_test != 0)
        type = aps__store_fs_type_test;
    else if (statfs(path, &sf) == 0)
        type = (unsigned long)sf.f_type;
    else
        return 0; /* the open that follows says what is wrong */
    for (size_t i = 0; i < sizeof remote_fs / sizeof remote_fs[0] && name == NULL; i++)
        if (remote_fs[i].type == type)
            name = remote_fs[i].name;
    if (name == NULL && type == FUSE_SUPER_MAGIC && stat(path, &st) == 0) {
        fuse_subtype(st.st_dev, sub, sizeof sub);
        for (size_t i = 0; i < sizeof remote_fuse / sizeof remote_fuse[0] && name == NULL; i++)
            if (strcmp(sub, remote_fuse[i]) == 0) {
                snprintf(what, sizeof what, "FUSE %s", sub);
                name = what;
            }
    }
    if (name == NULL)
        return 0;
    aps__store_seterr(err, APS_EINVAL,
                      "store: the directory is on a network file system (%s), where LMDB "
                      "is not safe: use a local disk, or allow_network_fs if no other "
                      "host ever opens the store (%s)",
                      name, dir);
    return APS_EINVAL;
}

const char *aps__store_boot_id_test;

/* This boot's id (the kernel's random boot_id) into out; 0 if unknown. */
static int
boot_id(char out[40])
{
    char buf[64];
    ssize_t got = -1;
    memset(out, 0, 40);
    if (aps__store_boot_id_test != NULL) {
        snprintf(buf, sizeof buf, "%s", aps__store_boot_id_test);
        got = (ssize_t)strlen(buf);
    } else {
        int fd = open(BOOT_ID_FILE, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            got = read(fd, buf, sizeof buf - 1);
            close(fd);
        }
    }
    while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == ' '))
        got--;
    if (got <= 0 || got > 39)
        return 0;
    memcpy(out, buf, (size_t)got);
    return 1;
}

const char *aps__store_handed_dir_test;

/* *at = max(*at, t), atomically. */
static void
l_handed_raise(int64_t *at, int64_t t)
{
    int64_t cur = __atomic_load_n(at, __ATOMIC_SEQ_CST);
    while (cur < t &&
           !__atomic_compare_exchange_n(at, &cur, t, 1, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
}

/* Maps file `fd` as a page of runs handed on; NULL if it is not a regular
 * file of ours (another user's, in a directory all can write to) or
 * cannot be mapped. Closes fd. */
static handed_page *
handed_map(int fd)
{
    struct stat st;
    void *m = MAP_FAILED;
    /* Its memory allocated now: a write fault on a full tmpfs would be a
     * SIGBUS. */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
        posix_fallocate(fd, 0, (off_t)HANDED_PAGE_LEN) == 0)
        m = mmap(NULL, HANDED_PAGE_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return m == MAP_FAILED ? NULL : m;
}

/* The path of the page named `token` into out (PATH_MAX); 0 if too long. */
static int
handed_name(const char *token, char *out)
{
    const char *dir = aps__store_handed_dir_test ? aps__store_handed_dir_test : HANDED_DIR;
    int n = snprintf(out, PATH_MAX, "%s/apsd-%s", dir, token);
    return n > 0 && n < PATH_MAX;
}

/* At open: the page of runs handed on named in the lock page `lp` (top
 * comment). One that the process before left trusted (this boot, this
 * lock file), with a bound, stays mapped and carries it over: 1. Any
 * other goes: 0, the bound unknown. */
static int
handed_open(lmdb_store *s, const lock_page *lp)
{
    char path[PATH_MAX], boot[40];
    if (!handed_name(lp->token, path))
        return 0;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    handed_page *h = fd >= 0 ? handed_map(fd) : NULL;
    if (h == NULL)
        return 0;
    int64_t c = h->mark > h->carried ? h->mark : h->carried;
    if (boot_id(boot) && memcmp(h->magic, HANDED_MAGIC, sizeof h->magic) == 0 &&
        memcmp(h->boot_id, boot, sizeof boot) == 0 &&
        memcmp(h->token, lp->token, sizeof h->token) == 0 && h->dev == lp->dev &&
        h->ino == lp->ino && c != INT64_MAX) {
        /* carried first, at least as high as before: a crash between the
         * two leaves a page that still bounds every run. */
        __atomic_store_n(&h->carried, c, __ATOMIC_SEQ_CST);
        __atomic_store_n(&h->mark, APS_TIME_NONE, __ATOMIC_SEQ_CST);
        s->handed = h;
        s->handed_unknown = 0;
        return 1;
    }
    munmap(h, HANDED_PAGE_LEN);
    unlink(path);
    return 0;
}

/* After the recovery: the page says from now on that this process's
 * marks are the bound, made if there was none. */
static void
handed_make(lmdb_store *s)
{
    char boot[40];
    pthread_mutex_lock(&s->handed_mu);
    handed_page *h = __atomic_load_n(&s->handed, __ATOMIC_SEQ_CST);
    if (h == NULL && s->handed_path != NULL && boot_id(boot)) {
        /* A fresh token's: one there already is not ours. */
        int fd = open(s->handed_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0 && (h = handed_map(fd)) != NULL) {
            /* Unknown until whole (a crash may come at any step). */
            memset(h->magic, 0, sizeof h->magic);
            __atomic_store_n(&h->carried, INT64_MAX, __ATOMIC_SEQ_CST);
            memcpy(h->boot_id, boot, sizeof h->boot_id);
            memcpy(h->token, strrchr(s->handed_path, '-') + 1, sizeof h->token);
            h->dev = s->lock_dev;
            h->ino = s->lock_ino;
            __atomic_store_n(&h->mark, __atomic_load_n(&s->handed_local, __ATOMIC_SEQ_CST),
                             __ATOMIC_SEQ_CST);
            memcpy(h->magic, HANDED_MAGIC, sizeof h->magic);
            __atomic_store_n(&s->handed, h, __ATOMIC_SEQ_CST);
            /* A mark raised meanwhile saw no page: the page takes it (one of
             * the two sees the other's store). */
            l_handed_raise(&h->mark, __atomic_load_n(&s->handed_local, __ATOMIC_SEQ_CST));
        }
    }
    if (h != NULL)
        __atomic_store_n(&h->carried, APS_TIME_NONE, __ATOMIC_SEQ_CST);
    __atomic_store_n(&s->handed_unknown, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&s->handed_mu);
}

/* Unmaps the page of runs handed on, and removes it unless it carries a
 * bound of processes before that no scheduler has recovered yet. (Without
 * the page the bound is unknown, which is always safe; this process's own
 * mark says nothing more: a scheduler hands every run it committed on
 * before it closes its stores.) */
static void
handed_close(lmdb_store *s)
{
    handed_page *h = s->handed;
    if (h != NULL) {
        int64_t c = __atomic_load_n(&h->carried, __ATOMIC_SEQ_CST);
        if (c == APS_TIME_NONE || c == INT64_MAX)
            unlink(s->handed_path);
        munmap(h, HANDED_PAGE_LEN);
    }
    free(s->handed_path);
    s->handed = NULL;
    s->handed_path = NULL;
}

/* Takes the directory lock, or says who holds it; maps its page of runs
 * handed on (top comment). */
static int
take_lock(lmdb_store *s, aps_error *err)
{
    char path[PATH_MAX], buf[32];
    int fd, n;

    n = snprintf(path, sizeof path, "%s/" LOCK_FILE, s->dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        aps__store_seterr(err, APS_EINVAL, "store: directory path too long");
        return APS_EINVAL;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        aps__store_seterr(err, APS_EIO, "store: cannot open lock file: %s (%s)", strerror(errno),
                          path);
        return APS_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        long pid = 0;
        ssize_t got = 0;

        if (errno != EWOULDBLOCK) {
            aps__store_seterr(err, APS_EIO, "store: cannot lock lock file: %s (%s)",
                              strerror(errno), path);
            close(fd);
            return APS_EIO;
        }
        /* The owner writes its pid right after locking: give it a moment. */
        for (int i = 0; i < 20 && pid <= 0; i++) {
            got = pread(fd, buf, sizeof buf - 1, 0);
            buf[got > 0 ? got : 0] = '\0';
            pid = strtol(buf, NULL, 10);
            if (pid <= 0) {
                struct timespec ts = {0, 1000000};

                nanosleep(&ts, NULL);
            }
        }
        close(fd);
        if (pid > 0)
            aps__store_seterr(err, APS_EBUSY, "store is in use by pid %ld (%s)", pid, s->dir);
        else
            aps__store_seterr(err, APS_EBUSY, "store is in use by another process (%s)", s->dir);
        return APS_EBUSY;
    }
    /* The pid in a field of its own, not truncating the file: the token
     * below must not be lost to a crash. */
    memset(buf, 0, sizeof buf);
    snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf) {
        /* The lock holds without the pid; only the message is poorer. */
    }
    struct stat st;
    lock_page lp;
    int ok = fstat(fd, &st) == 0;
    s->lock_dev = ok ? (uint64_t)st.st_dev : 0;
    s->lock_ino = ok ? (uint64_t)st.st_ino : 0;
    int have = ok && pread(fd, &lp, sizeof lp, HANDED_OFF) == (ssize_t)sizeof lp &&
               memcmp(lp.magic, LOCK_MAGIC, sizeof lp.magic) == 0 && lp.token[32] == '\0' &&
               strspn(lp.token, "0123456789abcdef") == 32 && lp.dev == s->lock_dev &&
               lp.ino == s->lock_ino;
    if (!have || !handed_open(s, &lp)) {
        /* No page kept: a new token, so that no page of another copy of
         * the directory, or left in another /dev/shm, is ever taken. */
        unsigned char r[16];
        memset(&lp, 0, sizeof lp);
        memcpy(lp.magic, LOCK_MAGIC, sizeof lp.magic);
        lp.dev = s->lock_dev;
        lp.ino = s->lock_ino;
        have = ok && getrandom(r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r;
        for (size_t i = 0; have && i < sizeof r; i++)
            snprintf(lp.token + 2 * i, 3, "%02x", r[i]);
    }
    char *page = calloc(1, HANDED_PAGE_LEN);
    if (have && page != NULL) {
        memcpy(page, &lp, sizeof lp);
        if (pwrite(fd, page, HANDED_PAGE_LEN, HANDED_OFF) == (ssize_t)HANDED_PAGE_LEN &&
            handed_name(lp.token, path))
            s->handed_path = strdup(path);
    }
    free(page);
    if (s->handed_path == NULL && s->handed != NULL) {
        /* The page kept is not named where the next open looks. */
        munmap(s->handed, HANDED_PAGE_LEN);
        s->handed = NULL;
        s->handed_unknown = 1;
    }
    s->lock_fd = fd;
    return 0;
}

static void
l_close(aps_store *bs)
{
    lmdb_store *s = L(bs);

    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv); /* not signal: glibc bug 25847 */
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->writer, NULL);
    if (s->env)
        mdb_env_close(s->env);
    /* Closing the descriptor releases the flock. The file stays: removing
     * it would race with a process opening it right now. */
    handed_close(s);
    close(s->lock_fd);
    pthread_rwlock_destroy(&s->maplock);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->reserve_mu);
    pthread_mutex_destroy(&s->handed_mu);
    pthread_cond_destroy(&s->cv);
    free(s->dir);
    free(s);
}

static void
l_handed(aps_store *bs, aps_time t)
{
    lmdb_store *s = L(bs);
    l_handed_raise(&s->handed_local, t);
    handed_page *h = __atomic_load_n(&s->handed, __ATOMIC_SEQ_CST);
    if (h != NULL)
        l_handed_raise(&h->mark, t);
}

static aps_time
l_handed_bound(aps_store *bs)
{
    lmdb_store *s = L(bs);
    if (__atomic_load_n(&s->handed_unknown, __ATOMIC_SEQ_CST))
        return INT64_MAX;
    int64_t m = __atomic_load_n(&s->handed_local, __ATOMIC_SEQ_CST);
    handed_page *h = __atomic_load_n(&s->handed, __ATOMIC_SEQ_CST);
    int64_t c = h != NULL ? __atomic_load_n(&h->carried, __ATOMIC_SEQ_CST) : APS_TIME_NONE;
    return m > c ? m : c;
}

static void
l_handed_recovered(aps_store *bs)
{
    handed_make(L(bs));
}

static const aps_store_ops lmdb_ops = {
    .name = "lmdb",
    .write = l_write,
    .write_async = l_write_async,
    .write_lazy = l_write_lazy,
    .job_get = l_job_get,
    .job_list = l_job_list,
    .jobs_get = l_jobs_get,
    .due = l_due,
    .due_after = l_due_after,
    .next_due = l_next_due,
    .count = l_count,
    .events = l_events,
    .event_bounds = l_event_bounds,
    .meta_get = l_meta_get,
    .meta_scan = l_meta_scan,
    .stats = l_stats,
    .space_low = l_space_low,
    .handed = l_handed,
    .handed_bound = l_handed_bound,
    .handed_recovered = l_handed_recovered,
    .close = l_close,
    .txn_job_get = lt_job_get,
    .txn_job_put = lt_job_put,
    .txn_job_del = lt_job_del,
    .txn_job_del_all = lt_job_del_all,
    .txn_event_append = lt_event_append,
    .txn_meta_get = lt_meta_get,
    .txn_meta_put = lt_meta_put,
    .txn_meta_del = lt_meta_del,
};

int
aps__store_open_lmdb(const char *dir, const aps_store_config *cfg, aps_store **out, aps_error *err)
{
    pthread_rwlockattr_t attr;
    pthread_condattr_t cattr;
    lmdb_store *s = NULL;
    int rc, given, have_rw = 0, have_mu = 0, have_rmu = 0, have_hmu = 0, have_cv = 0;

    if (!dir || !*dir || !out) {
        aps__store_seterr(err, APS_EINVAL, "store: no directory given");
        return APS_EINVAL;
    }
    rc = APS_ENOMEM;
    s = calloc(1, sizeof *s);
    if (!s)
        goto fail_msg;
    s->lock_fd = -1;
    s->handed_unknown = 1; /* until handed_open knows better */
    s->handed_local = APS_TIME_NONE;
    s->base.ops = &lmdb_ops;
    if (cfg)
        s->base.cfg = *cfg;
    s->map_size = s->base.cfg.initial_map_size ? s->base.cfg.initial_map_size : DEFAULT_MAP_SIZE;
    s->batch_wait_ns = s->base.cfg.batch_wait_us < 0         ? 0
                       : s->base.cfg.batch_wait_us == 0      ? BATCH_WAIT_NS
                       : s->base.cfg.batch_wait_us > 1000000 ? 1000000000
                                                             : s->base.cfg.batch_wait_us * 1000;
    if (s->map_size < MIN_MAP_SIZE)
        s->map_size = MIN_MAP_SIZE;
    s->dir = strdup(dir);
    if (!s->dir)
        goto fail_msg;
    /* Writer-preferring: a stream of readers must not starve a map growth
     * (readers never nest: store.c refuses calls from callbacks). */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    have_rw = pthread_rwlock_init(&s->maplock, &attr) == 0;
    pthread_rwlockattr_destroy(&attr);
    have_mu = pthread_mutex_init(&s->mu, NULL) == 0;
    have_rmu = pthread_mutex_init(&s->reserve_mu, NULL) == 0;
    have_hmu = pthread_mutex_init(&s->handed_mu, NULL) == 0;
    /* Monotonic: the writer's lazy wait has a deadline (lazy_wait). */
    have_cv = pthread_condattr_init(&cattr) == 0;
    if (have_cv) {
        have_cv = pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC) == 0 &&
                  pthread_cond_init(&s->cv, &cattr) == 0;
        pthread_condattr_destroy(&cattr);
    }
    if (!have_rw || !have_mu || !have_rmu || !have_hmu || !have_cv)
        goto fail_msg;

    rc = check_fs(dir, s->base.cfg.allow_network_fs, err);
    if (rc)
        goto fail;
    rc = make_dirs(dir, err);
    if (rc)
        goto fail;
    rc = take_lock(s, err);
    if (rc)
        goto fail;
    rc = env_open(s, 0, err);
    if (rc)
        goto fail;
    /* No room for twice its size: tried again later (l_space_low). */
    pthread_mutex_lock(&s->reserve_mu);
    given = reserve_given(s);
    s->reserve_state = reserve_make(s) ? RESERVE_HELD : given ? RESERVE_GIVEN : RESERVE_MISSING;
    clock_gettime(CLOCK_MONOTONIC, &s->reserve_tried);
    pthread_mutex_unlock(&s->reserve_mu);
    if (pthread_create(&s->writer, NULL, writer_main, s)) {
        rc = APS_ENOMEM;
        goto fail_msg;
    }
    pthread_setname_np(s->writer, "aps-lmdb");
    *out = &s->base;
    return 0;

fail_msg:
    aps__store_seterr(err, rc, "store: out of memory (%s)", dir);
fail:
    if (s) {
        if (s->env)
            mdb_env_close(s->env);
        if (s->handed != NULL)
            munmap(s->handed, HANDED_PAGE_LEN);
        free(s->handed_path);
        if (have_hmu)
            pthread_mutex_destroy(&s->handed_mu);
        if (s->lock_fd >= 0)
            close(s->lock_fd);
        if (have_rw)
            pthread_rwlock_destroy(&s->maplock);
        if (have_mu)
            pthread_mutex_destroy(&s->mu);
        if (have_rmu)
            pthread_mutex_destroy(&s->reserve_mu);
        if (have_cv)
            pthread_cond_destroy(&s->cv);
        free(s->dir);
        free(s);
    }
    return rc;
}
