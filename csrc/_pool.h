/* nnfast's thread team for the training step and prediction: the calling thread plus up
 * to NNF_MAX_THREADS - 1 workers run one task together. A task is phases of items (the
 * blocks of a step's stages); each thread claims the next item, and an item starts once
 * the phases before it are done.
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
 * Claiming instead of dealing out: a thread that loses its core (another process, a
 * busy machine) holds up only the item it is in; the others take the rest of the phase.
 * With a fixed share per thread and barriers, every phase waited for it.
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

#include "_fpmode.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NNF_PAUSE() _mm_pause()
#else
#define NNF_PAUSE() ((void)0)
#endif

typedef void (*nnf_item_fn)(void *ctx, int phase, ptrdiff_t item, int tid);

typedef struct {
    nnf_item_fn fn;
    void *ctx;
    int n_phases;
    const ptrdiff_t *phase_end;         /* items of phases 0..p, cumulative */
} nnf_task_t;

typedef struct {
    int started;                        /* workers running */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_ulong gen;                   /* bumped for every task */
    atomic_int sleeping;                /* workers inside cond_wait */
    atomic_int nthreads;                /* of the current task, caller included */
    /* The claims of the current task: its tag (gen's low 32 bits) above the count of
     * items not yet claimed. A thread claims the next item by decrementing the count in
     * a compare-and-swap that also checks the tag, so a worker that wakes up late, after
     * its task has ended, claims nothing and touches nothing of a later task. */
    atomic_ullong claims;
    atomic_llong done;                  /* items of the current task finished */
    const nnf_task_t *task;             /* read only while holding a claim: valid then */
    unsigned long start_gen[NNF_MAX_THREADS];   /* gen when worker tid was created */
} nnf_pool_t;

static nnf_pool_t nnf_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
static pthread_mutex_t nnf_team_mu = PTHREAD_MUTEX_INITIALIZER;   /* held for one task */

static long long nnf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Wait until `done` items of the current task are finished: spin, then yield the core
 * each turn (the thread we wait for may have lost its own). */
static void nnf_wait_done(long long done)
{
    int spins = 0;
    while (atomic_load(&nnf_pool.done) < done) {
        NNF_PAUSE();
        if (++spins > NNF_SPINS_BEFORE_YIELD)
            sched_yield();
    }
}

/* Claim and run items of the task tagged `tag` until none is left to claim. Items are
 * claimed in order, and each waits only for items claimed before it, so the team never
 * deadlocks, and a thread that is descheduled holds up only the item it is running:
 * the others claim the rest of the phase, and the phases after it. */
static void nnf_work(uint32_t tag, int tid)
{
    int phase = 0;
    unsigned long long seen = atomic_load(&nnf_pool.claims);
    for (;;) {
        if ((uint32_t)(seen >> 32) != tag || (uint32_t)seen == 0)
            return;                     /* a later task, or nothing left to claim */
        if (!atomic_compare_exchange_weak(&nnf_pool.claims, &seen, seen - 1))
            continue;                   /* `seen` now holds the current value */
        /* Our claim keeps the task alive: it cannot end before this item is done. */
        const nnf_task_t *t = nnf_pool.task;
        ptrdiff_t total = t->phase_end[t->n_phases - 1];
        ptrdiff_t i = total - (ptrdiff_t)(uint32_t)seen;
        while (t->phase_end[phase] <= i)
            phase++;
        ptrdiff_t first = phase > 0 ? t->phase_end[phase - 1] : 0;
        nnf_wait_done(first);           /* every item of the earlier phases is done */
        t->fn(t->ctx, phase, i - first, tid);
        atomic_fetch_add(&nnf_pool.done, 1);
        seen = atomic_load(&nnf_pool.claims);
    }
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
        if (tid < atomic_load(&nnf_pool.nthreads))
            nnf_work((uint32_t)g, tid);
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

/* Run the task on the caller (tid 0) and nthreads - 1 workers; return when every item
 * is done (a worker that has not woken up by then claims nothing). nthreads must not
 * exceed what nnf_pool_reserve returned; nnf_team_mu is held. */
static void nnf_parallel(const nnf_task_t *task, int nthreads)
{
    ptrdiff_t total = task->phase_end[task->n_phases - 1];
    unsigned long g = atomic_load(&nnf_pool.gen) + 1;
    nnf_pool.task = task;
    atomic_store(&nnf_pool.nthreads, nthreads);
    atomic_store(&nnf_pool.done, 0);
    atomic_store(&nnf_pool.claims, (unsigned long long)(uint32_t)g << 32 | (uint32_t)total);
    atomic_store(&nnf_pool.gen, g);                     /* seq_cst: before the load below */
    if (atomic_load(&nnf_pool.sleeping) > 0) {
        pthread_mutex_lock(&nnf_pool.mu);
        pthread_cond_broadcast(&nnf_pool.cv);
        pthread_mutex_unlock(&nnf_pool.mu);
    }
    nnf_work((uint32_t)g, 0);
    nnf_wait_done(total);
}

/* The task's items in order on the calling thread alone. */
static void nnf_run_alone(const nnf_task_t *task)
{
    ptrdiff_t i = 0;
    for (int p = 0; p < task->n_phases; p++)
        for (ptrdiff_t first = i; i < task->phase_end[p]; i++)
            task->fn(task->ctx, p, i - first, 0);
}

/* Run the task on a team of up to `want` threads (the caller included), with denormals
 * flushed, and return the team size it ran on: 1 when want <= 1 (no team needed: runs at
 * once, beside other callers), else the team is held for the task, so a concurrent
 * caller waits for it. A task has fewer than 2^32 items. Call without the GIL. */
static int nnf_team_run(const nnf_task_t *task, int want)
{
    unsigned mode = nnf_flush_denormals();
    int used = 1;
    if (want <= 1 || task->phase_end[task->n_phases - 1] <= 1) {
        nnf_run_alone(task);
    } else {
        pthread_mutex_lock(&nnf_team_mu);
        used = nnf_pool_reserve(want);
        if (used > 1)
            nnf_parallel(task, used);
        else
            nnf_run_alone(task);
        pthread_mutex_unlock(&nnf_team_mu);
    }
    nnf_restore_denormals(mode);
    return used;
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
