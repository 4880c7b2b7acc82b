/**
 * @file store.h
 * @brief Job stores (internal API): jobs, the due index, the event log and
 *        a small meta space, behind one interface with two backends.
 *
 * A store keeps, per job, an id (1..#APS_STORE_ID_MAX bytes, a C string),
 * its next run time (#APS_TIME_NONE = not due: paused or exhausted) and an
 * opaque encoded job record that the store never interprets. Beside the jobs
 * it keeps an append-only event log (sequence -> opaque bytes, pruned from
 * the oldest end) and a meta key/value space (counters, idempotency records
 * keyed by client request id, ...). Keys starting with #APS_STORE_META_RESERVED
 * belong to the store itself: they can be read but not written.
 *
 * Backends:
 * - LMDB (aps__store_open_lmdb): persistent. Sub-databases `jobs`
 *   (id -> [next_run | record]), `due` (sortable next_run + id -> empty; jobs
 *   with no next run are absent), `events` (big-endian seq -> [time | bytes])
 *   and `meta`. Writes are group-committed by one writer thread.
 * - memory (aps__store_open_memory): volatile, same semantics, no durability.
 *
 * Writes are callbacks run inside a transaction (aps__store_write). The
 * interface is deliberately narrow (get/put/del by id, ordered scans, one
 * transaction per callback) so that a PostgreSQL backend (rows leased with
 * `FOR UPDATE SKIP LOCKED`) can implement it later.
 *
 * Conventions: every function returns 0 or a negative APS_E* code; a failed
 * write changed nothing. Ordering of ids is bytewise (memcmp, a prefix sorts
 * first), the same in every backend.
 *
 * Threading: every function may be called from any thread, concurrently,
 * except aps__store_close. Callbacks (write functions and read visitors) must
 * not call any aps__store_* function: such calls return #APS_ESTATE (inside a
 * write callback, use the aps__txn_* functions instead).
 */
#ifndef APSD_ENGINE_STORE_H
#define APSD_ENGINE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "apsd/engine.h"

/** Longest job id, in bytes (without the NUL). */
#define APS_STORE_ID_MAX 200
/** Longest meta key, in bytes (without the NUL). */
#define APS_STORE_META_KEY_MAX 255
/** Prefix of the meta keys the store keeps for itself (read-only to users). */
#define APS_STORE_META_RESERVED "store/"
/** Meta key of the schema version (4 bytes, big-endian). */
#define APS_STORE_META_SCHEMA "store/schema"
/** Meta key of the last event sequence ever assigned (8 bytes, big-endian). */
#define APS_STORE_META_EVENT_SEQ "store/event_seq"
/** The on-disk schema version this code writes. 2: job records and events
 * in their V2 formats; 3: job records in V3; 4: job records in V4, events
 * in V3 (an apsd reading an older version would take newer records for
 * corrupt ones: it refuses the store instead). */
#define APS_STORE_SCHEMA_VERSION 4u
/** The oldest schema version this code opens; it upgrades it in place (the
 * older records it holds still decode; what it writes from then on is the
 * current formats). */
#define APS_STORE_SCHEMA_MIN 1u

/** A job store. Opaque; created by an aps__store_open_* function. */
typedef struct aps_store aps_store;

/** A write transaction. Valid only inside the write callback it is passed to. */
typedef struct aps_txn aps_txn;

/**
 * A write callback, run inside a transaction by aps__store_write.
 *
 * It may be run more than once for one aps__store_write call (the LMDB
 * backend retries a whole batch after growing its map, or without a
 * callback of the batch that failed after writing), so it must compute
 * everything from the transaction and `arg`, and have no other side effects
 * than writing results into `arg`. It must not block.
 *
 * @param[in] txn  the transaction, valid until the callback returns.
 * @param[in] arg  the caller's argument.
 * @return 0 to keep its changes, or a nonzero (negative APS_E*) value to undo
 *         its own changes (other callers' changes in the same batch commit).
 */
typedef int (*aps_write_fn)(aps_txn *txn, void *arg);

/**
 * A read visitor for jobs. Bytes are borrowed: valid only during the call.
 * @return 0 to continue, nonzero to stop (the scan then returns this value).
 */
typedef int (*aps_store_job_cb)(void *arg, const char *id, const void *data, size_t len,
                                aps_time next_run);

/**
 * A read visitor for jobs asked for by id (aps__store_jobs_get): `i` is the
 * index of the id. Bytes are borrowed: valid only during the call.
 * @return 0 to continue, nonzero to stop (the read then returns this value).
 */
typedef int (*aps_store_jobs_cb)(void *arg, size_t i, const void *data, size_t len,
                                 aps_time next_run);

/**
 * A read visitor for events. Bytes are borrowed: valid only during the call.
 * @return 0 to continue, nonzero to stop (the scan then returns this value).
 */
typedef int (*aps_store_event_cb)(void *arg, uint64_t seq, aps_time at, const void *data,
                                  size_t len);

/**
 * A read visitor for meta entries. `key` is NUL-terminated; bytes are
 * borrowed: valid only during the call.
 * @return 0 to continue, nonzero to stop (the scan then returns this value).
 */
typedef int (*aps_store_meta_cb)(void *arg, const char *key, const void *data, size_t len);

/** Options of a store. A NULL config means all defaults (all zero). */
typedef struct aps_store_config {
    /** Keep at most this many events (the newest); 0 = unlimited. */
    size_t event_max_count;
    /** Prune events older than this (by their time, against `clock` at
     *  write time); 0 = unlimited. */
    aps_time event_max_age_us;
    /** LMDB: initial map size in bytes (0 = 256 MiB). The map grows by
     *  itself (doubling) when full. Ignored by the memory backend. */
    size_t initial_map_size;
    /** LMDB: do not fsync commits (MDB_NOSYNC). Tests and benchmarks only:
     *  a crash of the machine may lose acknowledged writes. */
    int no_sync;
    /** LMDB: bytes of disk kept in `reserve` beside the store (once twice
     *  that is free), given back when a write finds the disk full
     *  (aps__store_space_low); 0 = none. */
    size_t reserve_bytes;
    /** LMDB: the write window in bytes (store_lmdb.c's top comment);
     *  0 = none. */
    size_t write_window;
    /** LMDB: the most the writer waits, before a batch, for the callers
     *  the last batch answered to come back with their next writes
     *  (store_lmdb.c, batch_wait), in microseconds; never longer than the
     *  last batch took. 0 = 1,000; negative = it does not wait. */
    int64_t batch_wait_us;
    /** LMDB: open a directory on a network file system too (refused by
     *  default: LMDB's lock works within one host). */
    int allow_network_fs;
    /** The clock events are pruned by age against: the one that stamps
     *  them (the scheduler's, which a test may inject). now NULL = the
     *  real clock. */
    aps_clock clock;
} aps_store_config;

/** Counters of a store, for tests, benchmarks and metrics. */
typedef struct aps_store_stats {
    uint64_t writes;    /**< aps__store_write calls completed (either outcome) */
    uint64_t commits;   /**< transactions committed (LMDB: one per batch) */
    uint64_t map_grows; /**< LMDB: times the map was grown */
    size_t map_size;    /**< LMDB: current map size in bytes; memory: 0 */
    uint64_t reserve_releases; /**< LMDB: times the disk reserve was given back */
    int space_low;             /**< LMDB: it is given back now (aps__store_space_low) */
} aps_store_stats;

/** @name Lifecycle
 * @{ */

/**
 * Opens (creating if needed) the LMDB store in directory `dir`.
 *
 * The directory is created with mode 0700 if missing. The store takes an
 * exclusive lock (`flock` on `dir/apsd.lock`, which holds the owner's pid);
 * it is released on close or when the process dies, so a store left by a
 * killed process opens cleanly. The store owns one writer thread. A
 * directory on a network file system (NFS, SMB/CIFS, AFS, CephFS, ...,
 * FUSE sshfs, GlusterFS, ...) is refused unless cfg->allow_network_fs,
 * before anything is created there: LMDB's lock works within one host.
 *
 * @param[in]  dir  data directory path (borrowed).
 * @param[in]  cfg  options (copied), or NULL for the defaults.
 * @param[out] out  the store, owned by the caller (aps__store_close).
 * @param[out] err  optional message on failure.
 * @return 0, or:
 *  - #APS_EBUSY: the store is open elsewhere (`store is in use by pid N`),
 *    also for a second open in the same process;
 *  - #APS_ECORRUPT: not an LMDB environment, or a damaged one, or a schema
 *    version this code does not know (newer apsd);
 *  - #APS_EINVAL: bad arguments, or a network file system (message:
 *    which one);
 *  - #APS_EIO, #APS_ENOSPC, #APS_ENOMEM.
 */
int aps__store_open_lmdb(const char *dir, const aps_store_config *cfg, aps_store **out,
                         aps_error *err);

/**
 * Test hook: when non-zero, aps__store_open_lmdb takes it as the statfs
 * f_type of every directory (to test the refusal of network file systems
 * on a machine without one). Never set outside tests.
 */
extern unsigned long aps__store_fs_type_test;

/**
 * Test hook: when set, the path of the file read instead of
 * /proc/self/mountinfo to find a FUSE mount's subtype. Never set outside
 * tests.
 */
extern const char *aps__store_mountinfo_test;

/**
 * Opens an empty volatile store in memory.
 * @param[in]  cfg  options (copied), or NULL for the defaults.
 * @param[out] out  the store, owned by the caller (aps__store_close).
 * @param[out] err  optional message on failure.
 * @return 0, #APS_ENOMEM or #APS_EINVAL.
 */
int aps__store_open_memory(const aps_store_config *cfg, aps_store **out, aps_error *err);

/**
 * Closes a store: waits for queued writes to finish, stops the writer, frees
 * everything and releases the directory lock. No other call on `s` may be in
 * progress or follow. NULL is allowed.
 */
void aps__store_close(aps_store *s);

/**
 * Returns the store's counters.
 * @param[out] out  the counters.
 * @return 0, or #APS_EINVAL.
 */
int aps__store_stats(aps_store *s, aps_store_stats *out);

/**
 * 1 while the store's disk reserve is given back (a write found the disk
 * full), until it can be made again (twice its size free); tries that at
 * most once a second, on the caller's thread, also for a reserve there was
 * no room for at open. The scheduler refuses new jobs meanwhile. 0 for a
 * memory store or without a reserve.
 */
int aps__store_space_low(aps_store *s);

/**
 * Records that runs up to time `t` may be handed to their executors now:
 * call it before handing them on. LMDB: kept in a page of shared memory
 * (a file in /dev/shm named in the lock file) that outlives the process
 * (not a machine restart), so that the next
 * open can tell the runs it recorded as running that never started
 * (aps__store_handed_bound). Never lowers the mark; safe from any thread.
 * A no-op for a memory store.
 */
void aps__store_handed(aps_store *s, aps_time t);

/**
 * The latest run time that a process, this one or one before it, may have
 * handed on (aps__store_handed): a run recorded as running whose time is
 * later never started. INT64_MAX when that is not known: a machine
 * restarted since, a lock file of an older apsd, no /dev/shm, a memory
 * store.
 */
aps_time aps__store_handed_bound(aps_store *s);

/**
 * Says the runs the processes before left as running are all recovered
 * (durably out of the run index): their bound no longer counts, only this
 * process's own aps__store_handed marks do.
 */
void aps__store_handed_recovered(aps_store *s);

/**
 * Test hook: when set, taken as this boot's id instead of the kernel's
 * (to test a store reopened after a machine restart). Never set outside
 * tests.
 */
extern const char *aps__store_boot_id_test;

/**
 * Test hook: when set, the directory of the pages of runs handed on
 * instead of /dev/shm (to test one that cannot be made). Never set
 * outside tests.
 */
extern const char *aps__store_handed_dir_test;
/** @} */

/** @name Writes
 * @{ */

/**
 * Runs `fn` inside a write transaction and makes its changes durable.
 *
 * LMDB: the call is batched with concurrent callers (group commit): one
 * writer thread runs every queued callback in the batch's transaction (one
 * that fails after writing is taken out, and the batch run again without
 * it), prunes the event log, and commits the batch once (fsync unless
 * `no_sync`). Each caller returns only after its change is on disk, or with
 * the error. Memory: callbacks are serialized by a lock.
 *
 * @param[in] s    the store.
 * @param[in] fn   the callback; see #aps_write_fn for its rules (it may run
 *                 more than once, must not block, must not call aps__store_*).
 * @param[in] arg  passed to `fn`.
 * @return 0 (changes committed); fn's nonzero result (its changes undone,
 *         the rest of the batch unaffected); or a store error, with fn's
 *         changes not committed:
 *  - #APS_ENOSPC: the disk is full (reads keep working; later writes
 *    succeed once space returns), or the map could not grow further;
 *  - #APS_EIO, #APS_ENOMEM, #APS_ECORRUPT;
 *  - #APS_ESTATE: called from inside a store callback, or the store is closing;
 *  - #APS_EINVAL: NULL arguments.
 */
int aps__store_write(aps_store *s, aps_write_fn fn, void *arg);

/** Whether the calling thread is an LMDB store's writer thread, where the
 *  completions of asynchronous writes run: it must not wait for anything
 *  that waits for a write. */
int aps__store_on_writer(void);

/** Called once an asynchronous write is committed (rc 0) or failed. */
typedef void (*aps_write_done_fn)(void *done_arg, int rc);

/**
 * aps__store_write without waiting: `fn` joins the next group commit and
 * done(done_arg, rc) is called exactly once with what aps__store_write would
 * have returned. LMDB: done runs on the store's writer thread after the
 * commit, so it must not block and must not write to the same store with
 * aps__store_write (refused there with APS_ESTATE rather than deadlocking).
 * Memory: the write is made and done called before this returns. `arg`
 * must live until done is called.
 */
void aps__store_write_async(aps_store *s, aps_write_fn fn, void *arg, aps_write_done_fn done,
                            void *done_arg);

/**
 * aps__store_write_async for a write nobody waits for: LMDB may hold its
 * commit back for up to 10 ms after the previous one, to share it with
 * the writes of that time (one durable commit for many, not one per
 * ~1 ms); a write that is not lazy, queued meanwhile, is committed at once
 * and takes the lazy ones with it. Other backends: aps__store_write_async.
 */
void aps__store_write_lazy(aps_store *s, aps_write_fn fn, void *arg, aps_write_done_fn done,
                           void *done_arg);

/**
 * Reads a job inside a write transaction.
 * @param[in]  t         the transaction.
 * @param[in]  id        job id (1..#APS_STORE_ID_MAX bytes).
 * @param[out] data      optional: the record, borrowed; valid until the next
 *                       change in this transaction or its end (LMDB's rule).
 * @param[out] len       optional: the record's length.
 * @param[out] next_run  optional: the next run time, or #APS_TIME_NONE.
 * @return 0, #APS_ENOENT, #APS_ECORRUPT (value too short), #APS_EINVAL, or a
 *         store error (the callback should return it).
 */
int aps__txn_job_get(aps_txn *t, const char *id, const void **data, size_t *len,
                     aps_time *next_run);

/**
 * Inserts or replaces a job, keeping the `due` index consistent: the job is
 * in it iff `next_run` is not #APS_TIME_NONE.
 * @param[in] t         the transaction.
 * @param[in] id        job id (1..#APS_STORE_ID_MAX bytes).
 * @param[in] data      the record (copied); may be NULL only if len is 0.
 * @param[in] len       its length.
 * @param[in] next_run  next run time, or #APS_TIME_NONE (not due).
 * @return 0, #APS_EINVAL, or a store error (#APS_ENOSPC, #APS_ENOMEM, ...).
 */
int aps__txn_job_put(aps_txn *t, const char *id, const void *data, size_t len, aps_time next_run);

/**
 * Deletes a job and its `due` entry.
 * @return 0, #APS_ENOENT if missing, #APS_EINVAL, or a store error.
 */
int aps__txn_job_del(aps_txn *t, const char *id);

/**
 * Deletes every job.
 * @param[out] removed  optional: how many jobs there were.
 * @return 0, #APS_EINVAL, or a store error.
 */
int aps__txn_job_del_all(aps_txn *t, size_t *removed);

/**
 * Appends an event. Its sequence is the last one ever assigned plus one: it
 * never repeats or goes backwards, across restarts and pruning.
 * @param[in]  t     the transaction.
 * @param[in]  at    the event's time (used by age pruning).
 * @param[in]  data  the bytes (copied); may be NULL only if len is 0.
 * @param[in]  len   their length.
 * @param[out] seq   optional: the sequence assigned.
 * @return 0, #APS_EINVAL, #APS_ECORRUPT, or a store error.
 */
int aps__txn_event_append(aps_txn *t, aps_time at, const void *data, size_t len, uint64_t *seq);

/**
 * Reads a meta value inside a write transaction.
 * @param[out] data  optional: borrowed, valid as for aps__txn_job_get.
 * @param[out] len   optional: its length.
 * @return 0, #APS_ENOENT, #APS_EINVAL, or a store error.
 */
int aps__txn_meta_get(aps_txn *t, const char *key, const void **data, size_t *len);

/**
 * Sets a meta value (insert or replace).
 * @param[in] key   1..#APS_STORE_META_KEY_MAX bytes, not starting with
 *                  #APS_STORE_META_RESERVED.
 * @param[in] data  the value (copied); may be NULL only if len is 0.
 * @return 0, #APS_EINVAL (bad or reserved key), or a store error.
 */
int aps__txn_meta_put(aps_txn *t, const char *key, const void *data, size_t len);

/**
 * Deletes a meta value.
 * @return 0, #APS_ENOENT if missing, #APS_EINVAL (bad or reserved key), or a
 *         store error.
 */
int aps__txn_meta_del(aps_txn *t, const char *key);
/** @} */

/** @name Write logs
 * A write log is a transaction of no store that records the puts and
 * deletes made through it, to be replayed later into a real transaction
 * in one piece or in ranges. Work that needs no reads (the loop prepares a
 * due job from a snapshot of its record) can then be done on another
 * thread than the store's writer, which only replays it. Reads through a
 * log's transaction, event appends and #aps__txn_job_del_all fail with
 * #APS_ESTATE. A log belongs to one thread at a time.
 * @{ */

/** A write log. */
typedef struct aps_txn_log aps_txn_log;

/** Makes an empty log. @return 0 or #APS_ENOMEM. */
int aps__txn_log_new(aps_txn_log **out);

/** Frees a log (NULL allowed). */
void aps__txn_log_free(aps_txn_log *l);

/** Empties a log, keeping its memory for the next use. */
void aps__txn_log_reset(aps_txn_log *l);

/** The log's transaction: the aps__txn_* writes made through it are
 *  recorded (their bytes copied), in order. */
aps_txn *aps__txn_log_txn(aps_txn_log *l);

/** How many writes the log holds: a mark for aps__txn_log_replay. */
size_t aps__txn_log_mark(const aps_txn_log *l);

/** Drops the writes recorded after `mark` (work given up half-way). */
void aps__txn_log_rewind(aps_txn_log *l, size_t mark);

/**
 * Makes writes [from, to) of the log in transaction `t` (a store's), in
 * the order they were recorded. The log is unchanged: it may be replayed
 * again (a write callback that runs twice). A delete of a job or meta key
 * that is not there is not an error (recorded, it could not know).
 * @return 0, or the first store error (the callback should return it).
 */
int aps__txn_log_replay(aps_txn *t, const aps_txn_log *l, size_t from, size_t to);
/** @} */

/** @name Reads
 * Each read sees one consistent snapshot of the committed state. Visitors
 * get borrowed bytes, valid during the call; they should be quick (LMDB: a
 * running visitor delays a map growth). A `limit` of 0 means no limit.
 * @{ */

/**
 * Reads one job.
 * @param[out] data      optional: a malloc'd copy of the record, owned by
 *                       the caller (free); non-NULL even for an empty record.
 * @param[out] len       optional: its length.
 * @param[out] next_run  optional: next run time, or #APS_TIME_NONE.
 * @return 0, #APS_ENOENT, #APS_ECORRUPT, #APS_ENOMEM, #APS_EINVAL,
 *         #APS_ESTATE (from a callback), #APS_EIO.
 */
int aps__store_job_get(aps_store *s, const char *id, void **data, size_t *len, aps_time *next_run);

/**
 * Reads the jobs ids[0..n) in one snapshot, visiting each that exists, in
 * the order given (one read instead of n: the loop reads the jobs of a
 * pass's finished runs).
 * @return 0 when done, the visitor's nonzero value if it stopped,
 *         #APS_ECORRUPT, #APS_EINVAL (a bad id), #APS_ESTATE, #APS_ENOMEM,
 *         #APS_EIO.
 */
int aps__store_jobs_get(aps_store *s, const char *const *ids, size_t n, aps_store_jobs_cb cb,
                        void *arg);

/**
 * Visits jobs in id order (bytewise), starting after `after_id` (NULL = from
 * the first): pagination passes the last id of the previous page.
 * @return 0 when done, the visitor's nonzero value if it stopped,
 *         #APS_ECORRUPT, #APS_EINVAL, #APS_ESTATE, #APS_EIO.
 */
int aps__store_job_list(aps_store *s, const char *after_id, size_t limit, aps_store_job_cb cb,
                        void *arg);

/**
 * Visits jobs with `next_run <= before` (inclusive), earliest first, ties in
 * id order. Jobs with no next run are never visited.
 * @return as aps__store_job_list; #APS_ECORRUPT also when the `due` index
 *         and the jobs disagree.
 */
int aps__store_due(aps_store *s, aps_time before, size_t limit, aps_store_job_cb cb, void *arg);

/**
 * aps__store_due from the job after (after, after_id) in that order: the
 * next batch while the previous one is still being written. A backend
 * without an ordered index (memory) visits from the first, as
 * aps__store_due: callers must expect to see a job again.
 * @return as aps__store_due.
 */
int aps__store_due_after(aps_store *s, aps_time after, const char *after_id, aps_time before,
                         size_t limit, aps_store_job_cb cb, void *arg);

/**
 * The earliest next run time of any job.
 * @param[out] out  the time, or #APS_TIME_NONE if no job is due ever.
 * @return 0, #APS_ECORRUPT, #APS_EINVAL, #APS_ESTATE, #APS_EIO.
 */
int aps__store_next_due(aps_store *s, aps_time *out);

/**
 * The number of jobs.
 * @return 0, #APS_EINVAL, #APS_ESTATE, #APS_EIO.
 */
int aps__store_count(aps_store *s, size_t *jobs);

/**
 * The number of jobs and how many of them have a next run time (the due
 * index's size; the rest are paused, or finished waiting for queued runs).
 * Constant time in both backends. Either output may be NULL.
 * @return as aps__store_count.
 */
int aps__store_counts(aps_store *s, size_t *jobs, size_t *scheduled);

/**
 * Visits retained events with a sequence greater than `after_seq`, in order.
 * @return as aps__store_job_list.
 */
int aps__store_events(aps_store *s, uint64_t after_seq, size_t limit, aps_store_event_cb cb,
                      void *arg);

/**
 * The range of the event log.
 * @param[out] first  the oldest retained sequence; 0 if no event was ever
 *                    appended; `last + 1` if every event was pruned.
 * @param[out] last   the last sequence ever assigned (0 if none).
 * A reader that resumes after sequence `a` missed events iff `a + 1 < first`.
 * @return 0, #APS_ECORRUPT, #APS_EINVAL, #APS_ESTATE, #APS_EIO.
 */
int aps__store_event_bounds(aps_store *s, uint64_t *first, uint64_t *last);

/**
 * Reads a meta value (reserved keys included).
 * @param[out] data  optional: a malloc'd copy owned by the caller (free).
 * @param[out] len   optional: its length.
 * @return 0, #APS_ENOENT, #APS_ENOMEM, #APS_EINVAL, #APS_ESTATE, #APS_EIO.
 */
int aps__store_meta_get(aps_store *s, const char *key, void **data, size_t *len);

/**
 * Visits the meta entries whose key starts with `prefix`, in key order
 * (bytewise). Reserved keys are visited too when the prefix matches them.
 * @param[in] prefix  0..#APS_STORE_META_KEY_MAX bytes; "" visits every key.
 * @return 0 when done, the visitor's nonzero value if it stopped,
 *         #APS_EINVAL, #APS_ESTATE, #APS_EIO.
 */
int aps__store_meta_scan(aps_store *s, const char *prefix, aps_store_meta_cb cb, void *arg);
/** @} */

#endif /* APSD_ENGINE_STORE_H */
