/* hk_history: a bounded in-memory history of the process's own samples, for the in-process
 * alert evaluator and the status page (lua/hancock/alerting.lua). It records, on request, one
 * sample of every series of the families it is asked for, as a scrape would expose them
 * (`x_total`, a gauge `x`, a histogram's `x_bucket{le}`, `x_count`, `x_sum`), and keeps them
 * for a retention window. Owned by the server, not by a script generation: a reload keeps the
 * history, so rates and `for` durations carry on across it.
 *
 * Bounded: at most `max_streams` streams (a histogram series is one per bucket plus count and
 * sum), each holding only the samples of the retention window; a series past the cap is left
 * out and counted (hk_history_dropped). One thread at a time: the control thread records and
 * reads; nothing here locks. */
#ifndef HK_HISTORY_H
#define HK_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "hk_metrics.h"

#define HK_HISTORY_DEFAULT_MAX_STREAMS 10000
#define HK_HISTORY_MAX_POINTS 4096 /* per stream: retention / interval beyond this is refused */

typedef struct hk_history_s hk_history_t;

typedef struct hk_history_stream_s {
  const char *name;                           /* the sample name as exposed */
  size_t label_count;                         /* histogram buckets add `le` last */
  const char *label_names[HK_METRICS_MAX_LABELS + 1];
  const char *label_values[HK_METRICS_MAX_LABELS + 1];
  size_t point_count;
  const int64_t *times_ms;                    /* ascending */
  const double *values;
} hk_history_stream_t;

int hk_history_new(size_t max_streams, hk_history_t **out);
void hk_history_free(hk_history_t *history); /* NULL is a no-op */

/* Records one sample at now_ms of every series of the families behind `names` (sample names
 * as exposed; a name no family has is skipped) and forgets samples older than
 * now_ms - retention_ms; a stream holding HK_HISTORY_MAX_POINTS samples forgets its oldest.
 * Runs the registry's collectors first, as a scrape does. A sample not newer than the stream's
 * last is ignored. Returns 0, -EINVAL for a NULL or a negative retention, -ENOMEM (what was
 * recorded before it stays). */
int hk_history_record(hk_history_t *history, hk_metrics_t *metrics, const char *const *names,
                      size_t name_count, int64_t now_ms, int64_t retention_ms);

/* Calls visit for every stream whose sample name is `name`, in the order they were first
 * recorded. The stream's pointers are valid until the next hk_history_record. */
typedef int (*hk_history_visit_cb)(const hk_history_stream_t *stream, void *data);
int hk_history_visit(hk_history_t *history, const char *name, hk_history_visit_cb visit,
                     void *data);

size_t hk_history_stream_count(const hk_history_t *history);
size_t hk_history_dropped(const hk_history_t *history); /* series left out by the cap */

#endif
