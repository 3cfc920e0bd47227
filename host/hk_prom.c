/* hk_prom: the Prometheus exposition writer — text format 0.0.4 and OpenMetrics 1.0 — over an
 * hk_metrics registry, in slices of bounded size, plus Accept negotiation. It reads the
 * registry through its public API only; sockets and compression are the server's.
 * Entry points: hk_prom_render (sliced), hk_prom_render_all, hk_prom_negotiate. */
#include "hk_prom.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RENDER_ALL_SLICE (64 * 1024)

/* ---- numbers ------------------------------------------------------------------------------ */

/* Writes v so a parser reads back exactly v: integers of magnitude below 2^53 as plain digits
 * ("3", "1000000"), anything else as the shortest %g that round-trips ("0.005", "1e+20"), and
 * "+Inf", "-Inf", "NaN". Returns the length; buf holds at least 32 bytes. */
static size_t format_value(char *buf, double v) {
  if (isnan(v)) return (size_t)snprintf(buf, 32, "NaN");
  if (isinf(v)) return (size_t)snprintf(buf, 32, v > 0 ? "+Inf" : "-Inf");
  if (v == trunc(v) && fabs(v) < 9007199254740992.0) {
    char digits[24];
    size_t n = 0;
    uint64_t u = (uint64_t)fabs(v);
    do {
      digits[n++] = (char)('0' + u % 10);
      u /= 10;
    } while (u > 0);
    size_t len = 0;
    if (v < 0) buf[len++] = '-';
    while (n > 0)
      buf[len++] = digits[--n];
    buf[len] = '\0';
    return len;
  }
  /* Any value with a <= 15-digit decimal form prints as it at %.15g; 17 digits always do. */
  int len = 0;
  for (int precision = 15; precision <= 17; precision++) {
    len = snprintf(buf, 32, "%.*g", precision, v);
    if (strtod(buf, NULL) == v) break;
  }
  return (size_t)len;
}

/* A bucket bound for le="…": the value as above in the text format; in OpenMetrics always with
 * a fraction or exponent ("1.0", "0.005", "1e+20"), as the client libraries write it. */
static size_t format_le(char *buf, double bound, hk_prom_format_t format) {
  size_t len = format_value(buf, bound);
  if (format == HK_PROM_OPENMETRICS && strpbrk(buf, ".eIN") == NULL) {
    buf[len++] = '.';
    buf[len++] = '0';
    buf[len] = '\0';
  }
  return len;
}

/* ---- writer ------------------------------------------------------------------------------- */

typedef struct writer_s {
  hk_buf_t *out;
  hk_prom_format_t format;
  hk_buf_t labels; /* the current series' escaped label pairs, reused for every line of it */
  int rc;          /* the first append failure; the caller rolls the output back */
} writer_t;

static void put(writer_t *w, const char *s, size_t len) {
  if (w->rc == 0) w->rc = hk_buf_append(w->out, s, len);
}

static void put_str(writer_t *w, const char *s) {
  put(w, s, strlen(s));
}

/* Appends s with \ and newline escaped, and " too when `quote` (label values always; HELP in
 * OpenMetrics, whose escaped-string has no bare ", while the text format's HELP must not escape
 * it: Prometheus rejects \" there). */
static int append_escaped(hk_buf_t *b, const char *s, size_t len, bool quote) {
  size_t run = 0;
  for (size_t i = 0; i < len; i++) {
    const char *esc = NULL;
    if (s[i] == '\\')
      esc = "\\\\";
    else if (s[i] == '\n')
      esc = "\\n";
    else if (s[i] == '"' && quote)
      esc = "\\\"";
    if (esc == NULL) continue;
    int rc = hk_buf_append(b, s + run, i - run);
    if (rc == 0) rc = hk_buf_append(b, esc, 2);
    if (rc != 0) return rc;
    run = i + 1;
  }
  return hk_buf_append(b, s + run, len - run);
}

/* The family name in the header: OpenMetrics names a counter without its _total suffix. */
static size_t family_name_len(const hk_metric_t *m, hk_prom_format_t format) {
  size_t len = strlen(hk_metric_name(m));
  if (format == HK_PROM_OPENMETRICS && hk_metric_type(m) == HK_METRIC_COUNTER &&
      !(hk_metric_flags(m) & HK_METRIC_LEGACY_COUNTER_NAME)) {
    assert(len > 6);
    len -= 6;
  }
  return len;
}

static void write_header(writer_t *w, const hk_metric_t *m) {
  const char *name = hk_metric_name(m);
  size_t name_len = family_name_len(m, w->format);
  const char *type = "untyped";
  switch (hk_metric_type(m)) {
  case HK_METRIC_COUNTER:
    type = w->format == HK_PROM_OPENMETRICS && (hk_metric_flags(m) & HK_METRIC_LEGACY_COUNTER_NAME)
               ? "unknown"
               : "counter";
    break;
  case HK_METRIC_GAUGE: type = "gauge"; break;
  case HK_METRIC_HISTOGRAM: type = "histogram"; break;
  }
  put(w, "# HELP ", 7);
  put(w, name, name_len);
  put(w, " ", 1);
  if (w->rc == 0) {
    const char *help = hk_metric_help(m);
    w->rc = append_escaped(w->out, help, strlen(help), w->format == HK_PROM_OPENMETRICS);
  }
  put(w, "\n# TYPE ", 8);
  put(w, name, name_len);
  put(w, " ", 1);
  put_str(w, type);
  put(w, "\n", 1);
}

/* " # {a="x",b="y"} value timestamp": an exemplar after a bucket's value (OpenMetrics only). */
static void write_exemplar(writer_t *w, const hk_exemplar_t *e) {
  put(w, " # {", 4);
  for (size_t i = 0; i < e->count; i++) {
    if (i > 0) put(w, ",", 1);
    put(w, e->names[i].str, e->names[i].len);
    put(w, "=\"", 2);
    if (w->rc == 0) w->rc = append_escaped(w->out, e->values[i].str, e->values[i].len, true);
    put(w, "\"", 1);
  }
  char number[40];
  size_t len = format_value(number, e->value);
  put(w, "} ", 2);
  put(w, number, len);
  /* Seconds with milliseconds, as the client libraries write exemplar timestamps. */
  int n = snprintf(number, sizeof number, " %.3f", e->timestamp);
  if (n > 0 && (size_t)n < sizeof number) put(w, number, (size_t)n);
}

/* name{labels[,extra]} value\n — `extra` is the already formatted le pair or NULL. */
static void write_sample_exemplar(writer_t *w, const char *name, const char *suffix,
                                  const char *extra, double value, const hk_exemplar_t *exemplar) {
  put_str(w, name);
  if (suffix != NULL) put_str(w, suffix);
  if (w->labels.len > 0 || extra != NULL) {
    put(w, "{", 1);
    if (w->labels.len > 0) put(w, w->labels.data, w->labels.len);
    if (w->labels.len > 0 && extra != NULL) put(w, ",", 1);
    if (extra != NULL) put_str(w, extra);
    put(w, "}", 1);
  }
  char number[32];
  size_t len = format_value(number, value);
  put(w, " ", 1);
  put(w, number, len);
  if (exemplar != NULL) write_exemplar(w, exemplar);
  put(w, "\n", 1);
}

static void write_sample(writer_t *w, const char *name, const char *suffix, const char *extra,
                         double value) {
  write_sample_exemplar(w, name, suffix, extra, value, NULL);
}

/* Every line of one series: one sample, or a histogram's buckets, _sum and _count. */
static void write_series(writer_t *w, const hk_metric_t *m, const hk_series_t *s) {
  hk_buf_reset(&w->labels);
  for (size_t i = 0; i < hk_metric_label_count(m) && w->rc == 0; i++) {
    hk_label_value_t v = hk_series_label(s, i);
    if (i > 0) w->rc = hk_buf_append_char(&w->labels, ',');
    if (w->rc == 0) w->rc = hk_buf_append_str(&w->labels, hk_metric_label_name(m, i));
    if (w->rc == 0) w->rc = hk_buf_append(&w->labels, "=\"", 2);
    if (w->rc == 0) w->rc = append_escaped(&w->labels, v.str, v.len, true);
    if (w->rc == 0) w->rc = hk_buf_append_char(&w->labels, '"');
  }
  if (w->rc != 0) return;
  const char *name = hk_metric_name(m);
  if (hk_metric_type(m) != HK_METRIC_HISTOGRAM) {
    write_sample(w, name, NULL, NULL, hk_series_value(s));
    return;
  }
  uint64_t counts[HK_METRICS_MAX_BUCKETS + 1];
  double sum;
  uint64_t count;
  size_t buckets = hk_metric_bucket_count(m);
  assert(buckets <= HK_METRICS_MAX_BUCKETS);
  hk_series_histogram(s, counts, &sum, &count);
  uint64_t cumulative = 0;
  char le[48];
  hk_exemplar_t exemplar;
  for (size_t i = 0; i <= buckets; i++) {
    cumulative += counts[i];
    memcpy(le, "le=\"", 4);
    size_t len = 4;
    if (i < buckets)
      len += format_le(le + len, hk_metric_bucket(m, i), w->format);
    else
      len += (size_t)snprintf(le + len, 8, "+Inf");
    le[len++] = '"';
    le[len] = '\0';
    /* Exemplars are OpenMetrics only: the text format 0.0.4 has no place for them. */
    bool with_exemplar = w->format == HK_PROM_OPENMETRICS && hk_series_exemplar(s, i, &exemplar);
    write_sample_exemplar(w, name, "_bucket", le, (double)cumulative,
                          with_exemplar ? &exemplar : NULL);
  }
  write_sample(w, name, "_sum", NULL, sum);
  write_sample(w, name, "_count", NULL, (double)count);
}

/* ---- slices ------------------------------------------------------------------------------- */

void hk_prom_cursor_init(hk_prom_cursor_t *cursor, hk_prom_format_t format) {
  memset(cursor, 0, sizeof *cursor);
  cursor->format = format;
}

static void cursor_enter(hk_prom_cursor_t *cursor, const hk_metric_t *m) {
  snprintf(cursor->family, sizeof cursor->family, "%s", hk_metric_name(m));
  assert(strcmp(cursor->family, hk_metric_name(m)) == 0); /* names are at most 255 bytes */
  cursor->series = 0;
  cursor->family_started = false;
}

int hk_prom_render(hk_metrics_t *metrics, hk_prom_cursor_t *cursor, hk_buf_t *out, size_t budget) {
  if (cursor->done) return 0;
  size_t start = out->len;
  hk_metric_t *m;
  if (cursor->family[0] == '\0') {
    /* The first slice. */
    hk_metrics_collect(metrics);
    m = hk_metrics_family_after(metrics, NULL);
    if (m != NULL) cursor_enter(cursor, m);
  } else {
    m = hk_metrics_find(metrics, cursor->family);
    if (m == NULL) {
      /* Families are never removed, so only a cursor from another registry gets here. */
      m = hk_metrics_family_after(metrics, cursor->family);
      if (m != NULL) cursor_enter(cursor, m);
    }
  }
  writer_t w = {out, cursor->format, HK_BUF_INIT, 0};
  /* The budget is checked before each header or series, so a slice writes at least one and
   * the last slice also finishes the exposition (no empty slice after it). */
#define SLICE_FULL() (out->len > start && out->len - start >= budget)
  while (m != NULL) {
    if (!cursor->family_started) {
      if (SLICE_FULL()) goto out;
      size_t mark = out->len;
      write_header(&w, m);
      if (w.rc != 0) {
        out->len = mark;
        goto fail;
      }
      cursor->family_started = true;
    }
    /* Series created while this family is being written are taken too, up to the count seen
     * when the slice reached it. */
    size_t count = hk_metric_series_count(m);
    while (cursor->series < count) {
      if (SLICE_FULL()) goto out;
      size_t mark = out->len;
      write_series(&w, m, hk_metric_series_at(m, cursor->series));
      if (w.rc != 0) {
        out->len = mark;
        goto fail;
      }
      cursor->series++;
    }
    m = hk_metrics_family_after(metrics, cursor->family);
    if (m != NULL) cursor_enter(cursor, m);
  }
#undef SLICE_FULL
  if (cursor->format == HK_PROM_OPENMETRICS) {
    put(&w, "# EOF\n", 6);
    if (w.rc != 0) goto fail;
  }
  cursor->done = true;
out:
  hk_buf_free(&w.labels);
  return 0;
fail:
  if (out->data != NULL) out->data[out->len] = '\0';
  hk_buf_free(&w.labels);
  return w.rc;
}

int hk_prom_render_all(hk_metrics_t *metrics, hk_prom_format_t format, hk_buf_t *out) {
  hk_prom_cursor_t cursor;
  hk_prom_cursor_init(&cursor, format);
  while (!cursor.done) {
    int rc = hk_prom_render(metrics, &cursor, out, RENDER_ALL_SLICE);
    if (rc != 0) return rc;
  }
  return 0;
}

/* ---- negotiation -------------------------------------------------------------------------- */

static bool is_space(char c) {
  return c == ' ' || c == '\t';
}

static void trim(const char **s, const char **end) {
  while (*s < *end && is_space(**s))
    (*s)++;
  while (*end > *s && is_space((*end)[-1]))
    (*end)--;
}

static bool token_is(const char *s, const char *end, const char *literal) {
  size_t n = strlen(literal);
  return (size_t)(end - s) == n && strncasecmp(s, literal, n) == 0;
}

/* RFC 9110 qvalue: 0, 0.x{0,3}, 1, 1.0{0,3}. Returns -1 when malformed. */
static double parse_qvalue(const char *s, const char *end) {
  if (s < end && *s == '"' && end - s >= 2 && end[-1] == '"') s++, end--;
  if (s == end || (*s != '0' && *s != '1')) return -1;
  double q = *s - '0';
  s++;
  if (s == end) return q;
  if (*s != '.') return -1;
  s++;
  double scale = 0.1;
  for (int digits = 0; s < end; s++, digits++, scale /= 10) {
    if (digits == 3 || *s < '0' || *s > '9') return -1;
    q += (*s - '0') * scale;
  }
  return q > 1 ? -1 : q;
}

/* The end of the element (media range or parameter) starting at s: the next `sep` outside a
 * quoted string. */
static const char *element_end(const char *s, const char *end, char sep) {
  bool quoted = false;
  for (; s < end; s++) {
    if (quoted && *s == '\\' && s + 1 < end)
      s++;
    else if (*s == '"')
      quoted = !quoted;
    else if (*s == sep && !quoted)
      break;
  }
  return s;
}

hk_prom_format_t hk_prom_negotiate(const char *accept, size_t len) {
  if (accept == NULL || len == 0) return HK_PROM_TEXT;
  /* The best q of each range that can name a format; -1 when absent. */
  double openmetrics = -1, text_plain = -1, text_any = -1, any = -1;
  const char *end = accept + len;
  for (const char *p = accept; p < end;) {
    const char *range_end = element_end(p, end, ',');
    const char *type = p, *type_end = element_end(p, range_end, ';');
    trim(&type, &type_end);
    double q = 1;
    for (const char *param = type_end; param < range_end;) {
      if (*param == ';') param++;
      const char *param_end = element_end(param, range_end, ';');
      const char *eq = memchr(param, '=', (size_t)(param_end - param));
      if (eq != NULL) {
        const char *key = param, *key_end = eq, *value = eq + 1, *value_end = param_end;
        trim(&key, &key_end);
        trim(&value, &value_end);
        if (token_is(key, key_end, "q")) q = parse_qvalue(value, value_end);
      }
      param = param_end;
    }
    if (q >= 0) { /* a malformed q drops the range */
      double *slot = token_is(type, type_end, "application/openmetrics-text") ? &openmetrics
                     : token_is(type, type_end, "text/plain")                 ? &text_plain
                     : token_is(type, type_end, "text/*")                     ? &text_any
                     : token_is(type, type_end, "*/*")                        ? &any
                                                                              : NULL;
      if (slot != NULL && q > *slot) *slot = q;
    }
    p = range_end < end ? range_end + 1 : end;
  }
  /* text/plain's q comes from its most specific range. OpenMetrics must be named outright. */
  double text = text_plain >= 0 ? text_plain : text_any >= 0 ? text_any : any >= 0 ? any : 0;
  return openmetrics > 0 && openmetrics >= text ? HK_PROM_OPENMETRICS : HK_PROM_TEXT;
}

const char *hk_prom_content_type(hk_prom_format_t format) {
  return format == HK_PROM_OPENMETRICS
             ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
             : "text/plain; version=0.0.4; charset=utf-8";
}
