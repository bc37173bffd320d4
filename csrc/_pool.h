/* nnfast's thread team for the training step and prediction: the calling thread plus up
 * to NNF_MAX_THREADS - 1 workers run one task together, with spin barriers between its
 * phases.
 *
 * Why a team of our own: in a training step everything that is not a matrix product
 * (optimizer, gather, bias, activations, reductions) is memory-bound and ran on one core
 * while OpenBLAS's second thread spun idle. With this team, every phase - the matrix
 * products too, each thread calling single-threaded BLAS on its block - is split over
 * the cores, and there is only one pool: nnfast's OpenBLAS always runs single-threaded
 * (nnfast._threads), so its own workers never spin against ours.
 *
 * One team per process, any number of callers: nnf_team_run holds the team for one
 * task, so a second Python thread's step waits for the first one's to end (it never
 * shares the team's state with it); a task on one thread needs no team and runs at once.
 *
 * Waiting: between tasks a worker spins for NNF_SPIN_NS (a training loop calls the next
 * step within microseconds), then sleeps on a condition variable, so an idle team costs
 * nothing. After fork() the child has no workers; they are started again on demand.
 *
 * Denormals: every task runs with flush-to-zero and denormals-are-zero (MXCSR) on each
 * of its threads. A denormal operand takes a microcode path ~100x slower than a normal
 * one: measured, inputs of ~1e-40 made fit 60x and predict 75x slower. Values below the
 * smallest normal (1.2e-38 float32, 2.2e-308 float64) are read and written as zero.
 */
#ifndef NNFAST_POOL_H
#define NNFAST_POOL_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define NNF_MAX_THREADS 64
#define NNF_SPIN_NS 200000          /* 0.2 ms of spinning before a worker sleeps */
#define NNF_SPINS_BEFORE_YIELD 4096 /* then a waiting thread yields its core each turn */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NNF_PAUSE() _mm_pause()
#define NNF_MXCSR_FTZ_DAZ 0x8040u
static unsigned nnf_flush_denormals(void)      /* returns the previous mode */
{
    unsigned before = _mm_getcsr();
    _mm_setcsr(before | NNF_MXCSR_FTZ_DAZ);
    return before;
}
static void nnf_restore_denormals(unsigned before) { _mm_setcsr(before); }
#else
#define NNF_PAUSE() ((void)0)
static unsigned nnf_flush_denormals(void) { return 0; }
static void nnf_restore_denormals(unsigned before) { (void)before; }
#endif

typedef void (*nnf_task_fn)(void *ctx, int tid, int nthreads);

typedef struct {
    int started;                        /* workers running */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_ulong gen;                   /* bumped for every task */
    atomic_int sleeping;                /* workers inside cond_wait */
    atomic_int pending;                 /* workers still inside the current task */
    nnf_task_fn fn;
    void *ctx;
    int nthreads;                       /* of the current task, caller included */
    atomic_int bar_count;
    atomic_uint bar_sense;
    unsigned long start_gen[NNF_MAX_THREADS];   /* gen when worker tid was created */
} nnf_pool_t;

static nnf_pool_t nnf_pool = {0, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
static pthread_mutex_t nnf_team_mu = PTHREAD_MUTEX_INITIALIZER;   /* held for one task */

static long long nnf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *nnf_worker(void *arg)
{
    const int tid = (int)(intptr_t)arg;
    nnf_flush_denormals();              /* a worker runs nothing but nnfast's tasks */
    /* Not atomic_load(&gen): the caller may already have posted the first task. */
    unsigned long seen = nnf_pool.start_gen[tid];
    for (;;) {
        long long spin_start = nnf_now_ns();
        unsigned long g;
        int spins = 0;
        while ((g = atomic_load(&nnf_pool.gen)) == seen) {
            NNF_PAUSE();
            if (++spins % 256 == 0 && nnf_now_ns() - spin_start > NNF_SPIN_NS) {
                pthread_mutex_lock(&nnf_pool.mu);
                atomic_fetch_add(&nnf_pool.sleeping, 1);
                while (atomic_load(&nnf_pool.gen) == seen)
                    pthread_cond_wait(&nnf_pool.cv, &nnf_pool.mu);
                atomic_fetch_sub(&nnf_pool.sleeping, 1);
                pthread_mutex_unlock(&nnf_pool.mu);
            }
        }
        seen = g;
        if (tid < nnf_pool.nthreads)
            nnf_pool.fn(nnf_pool.ctx, tid, nnf_pool.nthreads);
        atomic_fetch_sub(&nnf_pool.pending, 1);
    }
    return NULL;
}

static void nnf_pool_after_fork(void)
{
    /* The child process has only the forking thread: forget the workers. */
    pthread_mutex_init(&nnf_pool.mu, NULL);
    pthread_cond_init(&nnf_pool.cv, NULL);
    pthread_mutex_init(&nnf_team_mu, NULL);
    nnf_pool.started = 0;
    atomic_store(&nnf_pool.sleeping, 0);
    atomic_store(&nnf_pool.pending, 0);
}

/* Start workers so that nthreads - 1 exist. Returns the number of threads a task can
 * use (nthreads, or fewer if a thread could not be created). Call with nnf_team_mu held. */
static int nnf_pool_reserve(int nthreads)
{
    static int atfork_done = 0;
    if (nthreads > NNF_MAX_THREADS)
        nthreads = NNF_MAX_THREADS;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, nnf_pool_after_fork);
        atfork_done = 1;
    }
    while (nnf_pool.started < nthreads - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        nnf_pool.start_gen[nnf_pool.started + 1] = atomic_load(&nnf_pool.gen);
        int rc = pthread_create(&th, &attr, nnf_worker, (void *)(intptr_t)(nnf_pool.started + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break;
        nnf_pool.started++;
    }
    return nnf_pool.started + 1 < nthreads ? nnf_pool.started + 1 : nthreads;
}

/* Run fn(ctx, tid, nthreads) on the caller (tid 0) and nthreads - 1 workers; return when
 * all are done. nthreads must not exceed what nnf_pool_reserve returned; nnf_team_mu is
 * held. */
static void nnf_parallel(nnf_task_fn fn, void *ctx, int nthreads)
{
    if (nthreads <= 1 || nnf_pool.started == 0) {
        fn(ctx, 0, 1);
        return;
    }
    nnf_pool.fn = fn;
    nnf_pool.ctx = ctx;
    nnf_pool.nthreads = nthreads;
    atomic_store(&nnf_pool.bar_count, 0);
    atomic_store(&nnf_pool.pending, nnf_pool.started);
    atomic_fetch_add(&nnf_pool.gen, 1);                 /* seq_cst: before the load below */
    if (atomic_load(&nnf_pool.sleeping) > 0) {
        pthread_mutex_lock(&nnf_pool.mu);
        pthread_cond_broadcast(&nnf_pool.cv);
        pthread_mutex_unlock(&nnf_pool.mu);
    }
    fn(ctx, 0, nthreads);
    int spins = 0;
    while (atomic_load(&nnf_pool.pending) > 0) {
        NNF_PAUSE();
        if (++spins > NNF_SPINS_BEFORE_YIELD)
            sched_yield();              /* a worker was descheduled: let it run */
    }
}

/* Run fn on a team of up to `want` threads (the caller included), with denormals
 * flushed, and return the team size it ran on: 1 when want <= 1 (no team needed: runs at
 * once, beside other callers), else the team is held for the task, so a concurrent
 * caller waits for it. Call without the GIL. */
static int nnf_team_run(nnf_task_fn fn, void *ctx, int want)
{
    unsigned mode = nnf_flush_denormals();
    int used = 1;
    if (want <= 1) {
        fn(ctx, 0, 1);
    } else {
        pthread_mutex_lock(&nnf_team_mu);
        used = nnf_pool_reserve(want);
        nnf_parallel(fn, ctx, used);
        pthread_mutex_unlock(&nnf_team_mu);
    }
    nnf_restore_denormals(mode);
    return used;
}

/* All nthreads threads of the current task meet here (sense-reversing spin barrier). */
static void nnf_barrier(int nthreads)
{
    if (nthreads <= 1)
        return;
    unsigned sense = atomic_load(&nnf_pool.bar_sense);
    if (atomic_fetch_add(&nnf_pool.bar_count, 1) == nthreads - 1) {
        atomic_store(&nnf_pool.bar_count, 0);
        atomic_store(&nnf_pool.bar_sense, sense ^ 1u);
    } else {
        int spins = 0;
        while (atomic_load(&nnf_pool.bar_sense) == sense) {
            NNF_PAUSE();
            if (++spins > NNF_SPINS_BEFORE_YIELD)
                sched_yield();          /* another thread of the team lost its core */
        }
    }
}

/* [*begin, *end) of n items for thread tid of nthreads, in blocks of `align` items
 * (64-byte lines of float32 for align 16), so that threads do not share cache lines. */
static void nnf_part(ptrdiff_t n, int tid, int nthreads, ptrdiff_t align, ptrdiff_t *begin,
                     ptrdiff_t *end)
{
    ptrdiff_t chunk = (n + nthreads - 1) / nthreads;
    chunk = (chunk + align - 1) / align * align;
    ptrdiff_t b = chunk * tid;
    *begin = b < n ? b : n;
    *end = b + chunk < n ? b + chunk : n;
}

#endif
