/* hk_prom: Prometheus exposition of an hk_metrics registry — text format 0.0.4 and OpenMetrics
 * 1.0 — written in bounded slices so a scrape of any size needs bounded memory and never holds
 * the loop for long. Pure: registry in, bytes out; no sockets, no compression (the server
 * gzips), so it is unit-tested and checked with promtool directly. */
#ifndef HK_PROM_H
#define HK_PROM_H

#include <stdbool.h>
#include <stddef.h>

#include "hk_buf.h"
#include "hk_metrics.h"

typedef enum hk_prom_format_e {
  HK_PROM_TEXT,        /* text/plain; version=0.0.4; charset=utf-8 */
  HK_PROM_OPENMETRICS, /* application/openmetrics-text; version=1.0.0; charset=utf-8 */
} hk_prom_format_t;

/* Where a sliced render stands. Zero-initialise (or hk_prom_cursor_init) before the first
 * slice. It names the family by name, not index, so families registered mid-scrape (a reload)
 * neither repeat nor skip one already written. */
typedef struct hk_prom_cursor_s {
  hk_prom_format_t format;
  char family[256];     /* the family being written; "" before the first */
  size_t series;        /* next series index within it */
  bool family_started;  /* HELP/TYPE already written for `family` */
  bool done;
} hk_prom_cursor_t;

void hk_prom_cursor_init(hk_prom_cursor_t *cursor, hk_prom_format_t format);

/* Appends the next slice to out: whole series lines only, stopping once out has grown by at
 * least `budget` bytes (a single series may overshoot). Sets cursor->done after the last
 * family (and, for OpenMetrics, "# EOF\n"). Runs hk_metrics_collect before the first slice.
 * Returns 0 or -ENOMEM.
 * Details: the budget is checked before each family header and each series, so every slice
 * but a finished cursor's adds at least one of them (budget 0 = one per call), and the slice
 * that writes the last series also finishes the exposition, so no empty slice follows it. A
 * family without series still gets its HELP and TYPE lines. Families are written in name order
 * (HELP before TYPE); one registered mid-render shows up when it sorts after the cursor's
 * family, otherwise in the next scrape. On -ENOMEM out keeps only whole lines, the cursor
 * matches them, and the call may be retried.
 * Exemplars (hk_series_observe_exemplar) follow their bucket's value in OpenMetrics only
 * (`h_bucket{le="0.1"} 3 # {request_id="r1"} 0.07 1700000000.123`); the text format, which
 * has no syntax for them, never carries one. */
int hk_prom_render(hk_metrics_t *metrics, hk_prom_cursor_t *cursor, hk_buf_t *out, size_t budget);

/* Convenience for tests and small registries: the whole exposition at once. */
int hk_prom_render_all(hk_metrics_t *metrics, hk_prom_format_t format, hk_buf_t *out);

/* Picks the format from an Accept header (NULL = text): OpenMetrics when the client lists
 * application/openmetrics-text with a q-value at least as high as text/plain's. */
hk_prom_format_t hk_prom_negotiate(const char *accept, size_t len);
const char *hk_prom_content_type(hk_prom_format_t format);

#endif
