/* A stress test of the thread team (csrc/_pool.h), outside Python, so that it can run
 * under ThreadSanitizer (tools/sanitize.sh tsan) as well as a plain build
 * (tests/test_pool.py).
 *
 * Several caller threads post tasks of random shapes (phases of 0-9 items, teams of 1 to
 * 4) at once. Each item checks that every item of the earlier phases of its task is
 * done, and marks itself; after the task, every item must have run exactly once. Items
 * sometimes yield or sleep, to stand in for a thread that loses its core, and one item
 * of a test task sleeps on a worker while the caller must take over the rest of its
 * phase. Exits 0 when all checks pass, else prints the first failure and exits 1.
 *
 * Build: cc -O2 -pthread -I csrc tools/pool_stress.c -o pool_stress
 * Usage: pool_stress [tasks per caller (default 2000)] [callers (default 3)]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "_pool.h"

#define MAX_PHASES 8
#define MAX_ITEMS 72

typedef struct {
    nnf_task_t task;
    ptrdiff_t phase_end[MAX_PHASES];
    atomic_int runs[MAX_ITEMS];         /* how often item i ran */
    atomic_int by_worker[MAX_ITEMS];    /* ... on a worker (tid > 0) */
    unsigned seed;
    int slow_phase;                     /* the takeover test: phase whose first item sleeps */
    int calm;                           /* no random delays */
} stress_task_t;

static atomic_int failures;

static void fail(const char *what, int phase, ptrdiff_t item)
{
    if (atomic_fetch_add(&failures, 1) == 0)
        fprintf(stderr, "pool_stress: %s (phase %d, item %td)\n", what, phase, item);
}

static void stress_item(void *ctx, int phase, ptrdiff_t item, int tid)
{
    stress_task_t *s = ctx;
    ptrdiff_t first = phase > 0 ? s->phase_end[phase - 1] : 0;
    ptrdiff_t i = first + item;
    if (i >= s->phase_end[phase] || item < 0)
        fail("item out of its phase", phase, item);
    for (ptrdiff_t e = 0; e < first; e++)
        if (atomic_load(&s->runs[e]) != 1)
            fail("an item started before an earlier phase was done", phase, item);
    if (phase == s->slow_phase && item == 0 && tid > 0)
        usleep(20000);                  /* a worker that lost its core inside an item */
    if (s->slow_phase > 0 && phase == 0)
        usleep(1000);                   /* time for the worker to wake up and claim */
    unsigned r = (unsigned)(i * 2654435761u) ^ s->seed;
    if (s->calm)
        ;
    else if (r % 97 == 0)
        usleep(200);
    else if (r % 13 == 0)
        sched_yield();
    atomic_fetch_add(&s->runs[i], 1);
    if (tid > 0)
        atomic_fetch_add(&s->by_worker[i], 1);
}

static void make_task(stress_task_t *s, unsigned *rng)
{
    memset(s, 0, sizeof *s);
    s->seed = rand_r(rng);
    s->slow_phase = -1;
    int phases = 1 + rand_r(rng) % MAX_PHASES;
    ptrdiff_t total = 0;
    for (int p = 0; p < phases; p++) {
        total += rand_r(rng) % 10;       /* a phase may have no items */
        s->phase_end[p] = total;
    }
    s->task.fn = stress_item;
    s->task.ctx = s;
    s->task.n_phases = phases;
    s->task.phase_end = s->phase_end;
}

static int check_task(const stress_task_t *s)
{
    ptrdiff_t total = s->phase_end[s->task.n_phases - 1];
    for (ptrdiff_t i = 0; i < total; i++)
        if (atomic_load(&s->runs[i]) != 1) {
            fail("an item did not run exactly once", -1, i);
            return 0;
        }
    return 1;
}

static int tasks_per_caller = 2000;

static void *caller(void *arg)
{
    unsigned rng = (unsigned)(intptr_t)arg * 7919u + 1;
    stress_task_t *s = malloc(sizeof *s);
    for (int t = 0; t < tasks_per_caller && atomic_load(&failures) == 0; t++) {
        make_task(s, &rng);
        nnf_team_run(&s->task, 1 + rand_r(&rng) % 4);
        check_task(s);
    }
    free(s);
    return NULL;
}

/* A phase of 8 items whose first item, when a worker runs it, sleeps 20 ms: the caller
 * must run the other items of that phase meanwhile, so the worker runs at most the one
 * item it was sleeping in, and the phases after it wait for it. */
static void takeover(void)
{
    stress_task_t *s = malloc(sizeof *s);
    for (int attempt = 0; attempt < 50; attempt++) {
        unsigned rng = 1;
        make_task(s, &rng);
        s->task.n_phases = 3;
        s->phase_end[0] = 1;            /* one slow item: the worker wakes meanwhile */
        s->phase_end[1] = 9;
        s->phase_end[2] = 13;
        s->calm = 1;
        s->slow_phase = 1;
        nnf_team_run(&s->task, 2);
        if (!check_task(s))
            break;
        if (!atomic_load(&s->by_worker[1]))
            continue;                   /* the caller ran the slow item itself: again */
        int on_worker = 0;
        for (int i = 1; i < 9; i++)
            on_worker += atomic_load(&s->by_worker[i]);
        if (on_worker != 1)
            fail("the caller did not take over the rest of the slow item's phase", 1,
                 on_worker);
        free(s);
        return;
    }
    fail("the slow item never ran on a worker in 50 attempts", 1, 0);
    free(s);
}

int main(int argc, char **argv)
{
    int callers = 3;
    if (argc > 1)
        tasks_per_caller = atoi(argv[1]);
    if (argc > 2)
        callers = atoi(argv[2]);
    if (tasks_per_caller < 1 || callers < 1 || callers > 16) {
        fprintf(stderr, "usage: pool_stress [tasks per caller >= 1] [callers 1-16]\n");
        return 2;
    }
    takeover();
    pthread_t th[16];
    for (int c = 0; c < callers; c++)
        pthread_create(&th[c], NULL, caller, (void *)(intptr_t)c);
    for (int c = 0; c < callers; c++)
        pthread_join(th[c], NULL);
    if (atomic_load(&failures) == 0)
        printf("pool_stress: %d tasks on %d callers: ok\n", tasks_per_caller * callers, callers);
    return atomic_load(&failures) == 0 ? 0 : 1;
}
