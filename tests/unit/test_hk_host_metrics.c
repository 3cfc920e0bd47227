/* Unit tests for hk_host_metrics' process metrics: the sampler reads /proc/self into a snapshot
 * (from any thread), a scrape only copies it, a scrape with no snapshot (or a stale one) samples
 * once itself, and the descriptor count is exact past one getdents64 buffer. The families and
 * per-request recording are covered through the server by tests/blackbox/test_metrics.py. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <unistd.h>

#include "hk_host_metrics.h"
#include "hk_metrics.h"
#include "hk_test.h"

typedef struct fixture_s {
  hk_metrics_t *registry;
  hk_host_metrics_t host;
} fixture_t;

/* As `serve` builds it for one worker: cell 0 the worker's, cell 1 the collector's. */
static void fixture_init(fixture_t *f) {
  HK_ASSERT_INT_EQ(hk_metrics_new(2, &f->registry), 0);
  char err[256];
  if (hk_host_metrics_init(&f->host, f->registry, 1, err, sizeof err) != 0)
    HK_FAIL_("host metrics: %s", err);
}

static double gauge(fixture_t *f, const char *name) {
  hk_metric_t *m = hk_metrics_find(f->registry, name);
  HK_ASSERT(m != NULL);
  return hk_series_value(hk_metric_series(m, NULL, 0));
}

/* Descriptors open now, counted the plain way (readdir), without the one opendir holds. */
static long count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  HK_ASSERT(d != NULL);
  long count = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    count += e->d_name[0] != '.';
  closedir(d);
  return count - 1;
}

static void open_many(int *fds, int n) {
  for (int i = 0; i < n; i++) {
    fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    HK_ASSERT(fds[i] >= 0);
  }
}

static void close_all(const int *fds, int n) {
  for (int i = 0; i < n; i++)
    close(fds[i]);
}

/* The bug: every scrape read three /proc files and scanned /proc/self/fd on the event loop.
 * Now a scrape copies what the sampler stored: descriptors opened since the last sample do not
 * show until the next sample. */
HK_TEST(scrape_copies_the_snapshot) {
  fixture_t f;
  fixture_init(&f);
  HK_ASSERT_INT_EQ(hk_host_metrics_sample(&f.host), 0);
  hk_metrics_collect(f.registry);
  double sampled = gauge(&f, "process_open_fds");
  HK_ASSERT(sampled > 0);
  HK_ASSERT(gauge(&f, "process_resident_memory_bytes") > 0);
  HK_ASSERT(gauge(&f, "hancock_memory_usage_bytes") == gauge(&f, "process_resident_memory_bytes"));

  int fds[50];
  open_many(fds, 50);
  hk_metrics_collect(f.registry);
  HK_ASSERT(gauge(&f, "process_open_fds") == sampled); /* nothing read at scrape time */
  HK_ASSERT_INT_EQ(hk_host_metrics_sample(&f.host), 0);
  hk_metrics_collect(f.registry);
  HK_ASSERT(gauge(&f, "process_open_fds") == sampled + 50);
  close_all(fds, 50);
  hk_metrics_free(f.registry);
}

/* Without a sampler (one-shot commands, embedders) the first scrape samples, and so does one
 * that finds the snapshot older than HK_HOST_METRICS_STALE_MS. */
HK_TEST(scrape_samples_without_a_fresh_snapshot) {
  fixture_t f;
  fixture_init(&f);
  HK_ASSERT_INT_EQ(atomic_load(&f.host.snapshot.sampled_at_ms), 0);
  hk_metrics_collect(f.registry);
  HK_ASSERT(atomic_load(&f.host.snapshot.sampled_at_ms) != 0);
  double first = gauge(&f, "process_open_fds");
  HK_ASSERT(first > 0);
  HK_ASSERT(gauge(&f, "process_resident_memory_bytes") > 0);

  int fds[20];
  open_many(fds, 20);
  atomic_store(&f.host.snapshot.sampled_at_ms, 1); /* long ago: the sampler has stopped */
  hk_metrics_collect(f.registry);
  HK_ASSERT(gauge(&f, "process_open_fds") == first + 20);
  close_all(fds, 20);
  hk_metrics_free(f.registry);
}

/* Exact, past one getdents64 buffer (~1,300 entries): several reads are summed. */
HK_TEST(open_fds_exact_with_thousands) {
  struct rlimit limit;
  HK_ASSERT_INT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  enum { MANY = 3000 };
  if (limit.rlim_cur < MANY + 64) {
    limit.rlim_cur = limit.rlim_max < MANY + 64 ? limit.rlim_max : MANY + 64;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  int count = limit.rlim_cur >= MANY + 64 ? MANY : (int)limit.rlim_cur - 64;
  HK_ASSERT(count > 1400);
  static int fds[MANY];
  open_many(fds, count);
  fixture_t f;
  fixture_init(&f);
  long expected = count_fds();
  HK_ASSERT(expected >= count);
  HK_ASSERT_INT_EQ(hk_host_metrics_sample(&f.host), 0);
  hk_metrics_collect(f.registry);
  HK_ASSERT_INT_EQ((long)gauge(&f, "process_open_fds"), expected);
  close_all(fds, count);
  hk_metrics_free(f.registry);
}

static atomic_bool sampling;

static void *sample_loop(void *p) {
  hk_host_metrics_t *host = p;
  do {
    HK_ASSERT_INT_EQ(hk_host_metrics_sample(host), 0);
  } while (atomic_load(&sampling));
  return NULL;
}

/* The contract the server relies on: sampling on a threadpool thread while the loop scrapes. */
HK_TEST(sample_from_another_thread) {
  fixture_t f;
  fixture_init(&f);
  atomic_store(&sampling, true);
  pthread_t sampler;
  HK_ASSERT_INT_EQ(pthread_create(&sampler, NULL, sample_loop, &f.host), 0);
  double cpu = 0;
  for (int i = 0; i < 200; i++) {
    hk_metrics_collect(f.registry);
    HK_ASSERT(gauge(&f, "process_open_fds") > 0);
    HK_ASSERT(gauge(&f, "process_resident_memory_bytes") > 0);
    double now = gauge(&f, "process_cpu_seconds_total");
    HK_ASSERT(now >= cpu); /* a counter: never backwards */
    cpu = now;
  }
  atomic_store(&sampling, false);
  pthread_join(sampler, NULL);
  hk_metrics_free(f.registry);
}

HK_TEST_MAIN(HK_CASE(scrape_copies_the_snapshot), HK_CASE(scrape_samples_without_a_fresh_snapshot),
             HK_CASE(open_fds_exact_with_thousands), HK_CASE(sample_from_another_thread))
