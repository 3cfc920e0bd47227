/* fuzz_exposition: libFuzzer target for the metric registry (hk_metrics) and the exposition
 * writer (hk_prom). The input is a little program — register families with arbitrary names,
 * label names, help texts and buckets, create series with arbitrary label values, update them
 * with arbitrary numbers — run against a fresh registry; then the registry is rendered in both
 * formats, whole and in slices of a fuzzed budget, and every rendering must pass the strict
 * parser below (text format 0.0.4 or OpenMetrics 1.0) and agree with the registry.
 * Built by tests/fuzz/CMakeLists.txt: as fuzz_exposition_replay (run on corpus/exposition/ by
 * ctest) and, with -DHK_FUZZ=ON, as a libFuzzer binary. See docs/fuzzing.md. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hk_buf.h"
#include "hk_log.h"
#include "hk_metrics.h"
#include "hk_prom.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

#define MAX_FAMILIES 12
#define MAX_SERIES 48

/* ---- reading the input -------------------------------------------------------------------- */

typedef struct input_s {
  const uint8_t *p;
  size_t n;
} input_t;

static unsigned byte(input_t *in) {
  if (in->n == 0) return 0;
  in->n--;
  return *in->p++;
}

/* Up to `max` raw bytes, the count taken from the next byte. */
static size_t bytes(input_t *in, size_t max, const uint8_t **out) {
  size_t len = byte(in);
  if (len > max) len = max;
  if (len > in->n) len = in->n;
  *out = in->p;
  in->p += len;
  in->n -= len;
  return len;
}

static double number(input_t *in) {
  unsigned kind = byte(in);
  switch (kind % 8) {
    case 0: return (double)(kind / 8);
    case 1: return -(double)(kind / 8);
    case 2: return (double)byte(in) / 64.0;
    case 3: return kind & 8 ? INFINITY : -INFINITY;
    case 4: return NAN;
    case 5: return kind & 8 ? 1e308 : 5e-324;
    default: {
      uint64_t bits = 0;
      for (int i = 0; i < 8; i++) bits = bits << 8 | byte(in);
      double v;
      memcpy(&v, &bits, sizeof v);
      return v;
    }
  }
}

/* Names from pieces that make collisions likely (h and h_bucket, x and x_total), or raw bytes
 * when the first byte's high bit is set. */
static void name(input_t *in, char *out, size_t size) {
  static const char *const pieces[] = {"a", "b", "x", "_", "_total", "_bucket", "_sum", "_count",
                                       "_created", "_info", ":", "1", "le", "__", "A", "quantile"};
  unsigned first = byte(in);
  size_t len = 0;
  out[0] = '\0';
  if (first & 0x80) {
    const uint8_t *raw;
    size_t n = bytes(in, size - 1, &raw);
    for (size_t i = 0; i < n; i++)
      if (raw[i] != '\0') out[len++] = (char)raw[i];
    out[len] = '\0';
    return;
  }
  for (unsigned count = first % 6 + 1; count > 0; count--) {
    const char *piece = pieces[byte(in) % 16];
    size_t n = strlen(piece);
    if (len + n >= size) break;
    memcpy(out + len, piece, n + 1);
    len += n;
  }
}

/* ---- the strict parser ------------------------------------------------------------------------ */

typedef struct family_s {
  char name[300];
  char type[16];
  bool has_help;
  size_t samples;
} family_t;

typedef struct series_key_s {
  char *bytes;
  size_t len;
} series_key_t;

typedef struct parser_s {
  hk_prom_format_t format;
  family_t families[512]; /* the input makes at most 256 */
  size_t family_count;
  family_t *current;
  /* Every sample name with its label set ("name{a=\"1\",b=\"2\"}" with labels sorted), to find
   * duplicate series; and every name a family's samples may use, to find clashes. */
  series_key_t *series;
  size_t series_count, series_cap;
  /* The histogram series being read: its labels without le, the last le and counts. */
  char hist_key[4096];
  size_t hist_key_len;
  int hist_stage; /* 0 none, 1 in buckets, 2 after +Inf, 3 after _sum (OpenMetrics: any order) */
  double hist_last_le, hist_inf_count, hist_last_count;
  bool hist_seen_sum, hist_seen_count;
} parser_t;

static void fail(const char *what, const char *line, size_t len) {
  fprintf(stderr, "exposition check failed: %s in line: %.*s\n", what, (int)(len > 300 ? 300 : len), line);
  abort();
}

static bool name_char(char c, bool first, bool colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (colon && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

/* Length of a metric (colon) or label name at s, 0 when none. */
static size_t scan_name(const char *s, const char *end, bool colon) {
  size_t n = 0;
  while (s + n < end && name_char(s[n], n == 0, colon)) n++;
  return n;
}

/* Strict UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static bool valid_utf8(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    unsigned c = *p++;
    if (c < 0x80) continue;
    int extra;
    unsigned min, cp;
    if (c >= 0xc2 && c <= 0xdf) extra = 1, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) extra = 2, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) extra = 3, min = 0x10000, cp = c & 0x07;
    else return false;
    if (end - p < extra) return false;
    for (int i = 0; i < extra; i++) {
      if ((p[i] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    p += extra;
  }
  return true;
}

/* A float as both formats write one: decimal digits with optional sign, fraction and exponent,
 * or exactly +Inf, -Inf, NaN (strtod alone would take hex, "inf", "nan(…)"). */
static bool parse_float(const char *s, size_t len, double *out) {
  if ((len == 4 && memcmp(s, "+Inf", 4) == 0) || (len == 4 && memcmp(s, "-Inf", 4) == 0) ||
      (len == 3 && memcmp(s, "NaN", 3) == 0)) {
    *out = s[0] == 'N' ? NAN : s[0] == '+' ? INFINITY : -INFINITY;
    return true;
  }
  if (len == 0 || len > 64) return false;
  size_t i = 0, digits = 0;
  if (s[i] == '-' || s[i] == '+') i++;
  while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits++;
  if (i < len && s[i] == '.') {
    i++;
    while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits++;
  }
  if (digits == 0) return false;
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '-' || s[i] == '+')) i++;
    size_t exp = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') i++, exp++;
    if (exp == 0) return false;
  }
  if (i != len) return false;
  char buf[72];
  memcpy(buf, s, len);
  buf[len] = '\0';
  char *end;
  *out = strtod(buf, &end);
  return end == buf + len;
}

/* An escaped string up to the closing quote (label values) or the end (HELP). Returns the bytes
 * read, or fails. Escapes allowed: \\ \n, and \" when `quote_escape`. */
static size_t scan_escaped(const char *s, const char *end, bool until_quote, bool quote_escape,
                           const char *line, size_t line_len) {
  size_t i = 0;
  while (s + i < end) {
    char c = s[i];
    if (until_quote && c == '"') return i;
    if (c == '\\') {
      if (s + i + 1 >= end) fail("backslash at the end", line, line_len);
      char e = s[i + 1];
      if (!(e == '\\' || e == 'n' || (e == '"' && quote_escape))) fail("unknown escape", line, line_len);
      i += 2;
      continue;
    }
    if (c == '"' && !until_quote && quote_escape) fail("unescaped quote in HELP", line, line_len);
    i++;
  }
  if (until_quote) fail("unterminated label value", line, line_len);
  return i;
}

static int compare_keys(const void *a, const void *b) {
  const series_key_t *x = a, *y = b;
  int c = memcmp(x->bytes, y->bytes, x->len < y->len ? x->len : y->len);
  return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static family_t *find_family(parser_t *p, const char *family_name, size_t len) {
  for (size_t i = 0; i < p->family_count; i++)
    if (strlen(p->families[i].name) == len && memcmp(p->families[i].name, family_name, len) == 0)
      return &p->families[i];
  return NULL;
}

/* The sample-name suffixes a family of this type may use in this format. */
static const char *const *suffixes_of(const char *type, hk_prom_format_t format) {
  static const char *const plain[] = {"", NULL};
  static const char *const om_counter[] = {"_total", "_created", NULL};
  static const char *const histogram[] = {"_bucket", "_sum", "_count", NULL};
  static const char *const om_histogram[] = {"_bucket", "_sum", "_count", "_created", NULL};
  if (strcmp(type, "histogram") == 0) return format == HK_PROM_OPENMETRICS ? om_histogram : histogram;
  if (strcmp(type, "counter") == 0 && format == HK_PROM_OPENMETRICS) return om_counter;
  return plain;
}

static void header_line(parser_t *p, const char *line, size_t len) {
  const char *end = line + len;
  bool help = len > 7 && memcmp(line, "# HELP ", 7) == 0;
  bool type = len > 7 && memcmp(line, "# TYPE ", 7) == 0;
  if (!help && !type) fail("a comment that is neither HELP nor TYPE", line, len);
  const char *s = line + 7;
  size_t n = scan_name(s, end, true);
  if (n == 0) fail("no metric name", line, len);
  if (s + n == end || s[n] != ' ') fail("no space after the name", line, len);
  family_t *f = find_family(p, s, n);
  if (help) {
    /* HELP opens a family (the writer always writes HELP, then TYPE). */
    if (f != NULL) fail("second HELP for a family", line, len);
    if (p->family_count == sizeof p->families / sizeof p->families[0]) fail("too many families", line, len);
    f = &p->families[p->family_count++];
    memset(f, 0, sizeof *f);
    memcpy(f->name, s, n);
    f->has_help = true;
    p->current = f;
    p->hist_stage = 0;
    const char *text = s + n + 1;
    scan_escaped(text, end, false, p->format == HK_PROM_OPENMETRICS, line, len);
    if (memchr(text, '\0', (size_t)(end - text)) != NULL) fail("NUL in HELP", line, len);
    return;
  }
  if (f == NULL || f != p->current || f->type[0] != '\0') fail("TYPE without its HELP just before", line, len);
  const char *t = s + n + 1;
  size_t tlen = (size_t)(end - t);
  static const char *const text_types[] = {"counter", "gauge", "histogram", "summary", "untyped", NULL};
  static const char *const om_types[] = {"counter", "gauge", "histogram", "gaugehistogram", "stateset",
                                         "info", "summary", "unknown", NULL};
  const char *const *types = p->format == HK_PROM_OPENMETRICS ? om_types : text_types;
  bool known = false;
  for (size_t i = 0; types[i] != NULL; i++)
    if (strlen(types[i]) == tlen && memcmp(types[i], t, tlen) == 0) known = true;
  if (!known) fail("unknown type", line, len);
  memcpy(f->type, t, tlen);
}

static bool same_hist(const parser_t *p, const char *key, size_t len) {
  return p->hist_key_len == len && memcmp(p->hist_key, key, len) == 0;
}

static void add_series_key(parser_t *p, char *key, size_t key_len) {
  if (p->series_count == p->series_cap) {
    size_t cap = p->series_cap ? p->series_cap * 2 : 256;
    series_key_t *grown = realloc(p->series, cap * sizeof *grown);
    CHECK(grown != NULL);
    p->series = grown;
    p->series_cap = cap;
  }
  p->series[p->series_count++] = (series_key_t){key, key_len};
}

typedef struct label_s {
  const char *name;
  size_t name_len;
  const char *value; /* escaped, as written */
  size_t value_len;
} label_t;

static int compare_labels(const void *a, const void *b) {
  const label_t *x = a, *y = b;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(x->name, y->name, n);
  return c != 0 ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static void sample_line(parser_t *p, const char *line, size_t len) {
  const char *end = line + len, *s = line;
  size_t n = scan_name(s, end, true);
  if (n == 0) fail("a sample without a metric name", line, len);
  family_t *f = p->current;
  if (f == NULL || f->type[0] == '\0') fail("a sample before its family's TYPE", line, len);
  /* The sample belongs to the current family: its name is the family's plus an allowed suffix. */
  size_t flen = strlen(f->name);
  const char *suffix = NULL;
  if (n >= flen && memcmp(s, f->name, flen) == 0) {
    for (const char *const *sfx = suffixes_of(f->type, p->format); *sfx != NULL; sfx++)
      if (n - flen == strlen(*sfx) && memcmp(s + flen, *sfx, n - flen) == 0) suffix = *sfx;
  }
  if (suffix == NULL) fail("a sample name that is not its family's", line, len);
  f->samples++;
  const char *sample_name = s;
  size_t sample_name_len = n;
  s += n;

  label_t labels[HK_METRICS_MAX_LABELS + 2];
  size_t label_count = 0;
  const char *le = NULL;
  size_t le_len = 0;
  if (s < end && *s == '{') {
    s++;
    while (s < end && *s != '}') {
      size_t ln = scan_name(s, end, false);
      if (ln == 0) fail("bad label name", line, len);
      if (label_count == sizeof labels / sizeof labels[0]) fail("too many labels", line, len);
      label_t *l = &labels[label_count++];
      l->name = s;
      l->name_len = ln;
      s += ln;
      if (end - s < 2 || s[0] != '=' || s[1] != '"') fail("label without =\"", line, len);
      s += 2;
      size_t vn = scan_escaped(s, end, true, true, line, len);
      l->value = s;
      l->value_len = vn;
      if (!valid_utf8(s, vn)) fail("label value not UTF-8", line, len);
      s += vn + 1;
      if (ln == 2 && memcmp(l->name, "le", 2) == 0) le = l->value, le_len = l->value_len;
      if (s < end && *s == ',') {
        s++;
        if (s < end && *s == '}') fail("trailing comma", line, len); /* legal, but we never write it */
      } else if (s < end && *s != '}') {
        fail("junk after a label", line, len);
      }
    }
    if (s == end) fail("unterminated label set", line, len);
    s++;
  }
  if (s == end || *s != ' ') fail("no space before the value", line, len);
  s++;
  double value;
  if (!parse_float(s, (size_t)(end - s), &value)) fail("value is not a float", line, len);

  qsort(labels, label_count, sizeof labels[0], compare_labels);
  for (size_t i = 1; i < label_count; i++)
    if (compare_labels(&labels[i - 1], &labels[i]) == 0) fail("duplicate label name", line, len);
  hk_buf_t key = HK_BUF_INIT, hist = HK_BUF_INIT;
  /* Keys are compared with memcmp: label values may hold U+0000. */
  for (size_t i = 0; i < label_count; i++) {
    bool is_le = labels[i].name_len == 2 && memcmp(labels[i].name, "le", 2) == 0;
    for (int k = 0; k < 2; k++) {
      hk_buf_t *b = k == 0 ? &key : &hist;
      if (k == 1 && is_le) continue;
      CHECK(hk_buf_append_char(b, b->len == 0 ? '{' : ',') == 0);
      CHECK(hk_buf_append(b, labels[i].name, labels[i].name_len) == 0);
      CHECK(hk_buf_append(b, "=\"", 2) == 0);
      CHECK(hk_buf_append(b, labels[i].value, labels[i].value_len) == 0);
      CHECK(hk_buf_append_char(b, '"') == 0);
    }
  }
  CHECK(hk_buf_append(&key, " ", 1) == 0);
  CHECK(hk_buf_append(&key, sample_name, sample_name_len) == 0); /* the labels, then the name */
  size_t key_len;
  char *key_bytes = hk_buf_steal(&key, &key_len);
  add_series_key(p, key_bytes, key_len);

  bool counter = strcmp(f->type, "counter") == 0;
  if (counter && (isnan(value) || value < 0)) fail("counter value negative or NaN", line, len);
  if (strcmp(f->type, "histogram") != 0) {
    hk_buf_free(&hist);
    return;
  }
  /* Histograms: per series, buckets with increasing le up to +Inf, cumulative counts, then _sum
   * and _count (= the +Inf bucket). */
  const char *hist_key = hist.data ? hist.data : "";
  size_t hist_len = hist.len;
  if (strcmp(suffix, "_bucket") == 0) {
    if (le == NULL) fail("bucket without le", line, len);
    double bound;
    if (!parse_float(le, le_len, &bound) || isnan(bound)) fail("le is not a float", line, len);
    if (p->format == HK_PROM_OPENMETRICS && !isinf(bound) && memchr(le, '.', le_len) == NULL &&
        memchr(le, 'e', le_len) == NULL)
      fail("OpenMetrics le without a fraction or exponent", line, len);
    if (value != floor(value) || value < 0) fail("bucket count not a whole number", line, len);
    if (p->hist_stage == 1 && same_hist(p, hist_key, hist_len)) {
      if (!(bound > p->hist_last_le)) fail("le not increasing", line, len);
      if (value < p->hist_last_count) fail("bucket counts not cumulative", line, len);
    } else {
      if (p->hist_stage == 1 || p->hist_stage == 2) fail("previous histogram series unfinished", line, len);
      if (hist_len > sizeof p->hist_key) fail("label set too long for the checker", line, len);
      memcpy(p->hist_key, hist_key, hist_len);
      p->hist_key_len = hist_len;
      p->hist_stage = 1;
      p->hist_seen_sum = p->hist_seen_count = false;
    }
    p->hist_last_le = bound;
    p->hist_last_count = value;
    if (isinf(bound)) {
      if (bound < 0) fail("le=-Inf", line, len);
      p->hist_inf_count = value;
      p->hist_stage = 2;
    }
  } else {
    if (le != NULL) fail("le on _sum or _count", line, len);
    if (p->hist_stage != 2 || !same_hist(p, hist_key, hist_len)) fail("_sum/_count not after the +Inf bucket", line, len);
    if (strcmp(suffix, "_sum") == 0) {
      if (p->hist_seen_sum || p->hist_seen_count) fail("_sum twice or after _count", line, len);
      p->hist_seen_sum = true;
    } else if (strcmp(suffix, "_count") == 0) {
      if (!p->hist_seen_sum || p->hist_seen_count) fail("_count before _sum or twice", line, len);
      if (value != p->hist_inf_count) fail("_count differs from the +Inf bucket", line, len);
      p->hist_seen_count = true;
      p->hist_stage = 0;
    } else {
      fail("unexpected histogram sample", line, len);
    }
  }
  hk_buf_free(&hist);
}

/* Parses a whole exposition; fails (aborts) on anything a strict parser would reject. */
static void parse_exposition(parser_t *p, const char *text, size_t len) {
  if (!valid_utf8(text, len)) fail("exposition not UTF-8", text, len);
  /* U+0000 is valid in label values (an escaped-string's normal-char in OpenMetrics); names
   * and HELP have none, which scan_name and the HELP check below see. */
  if (len > 0 && text[len - 1] != '\n') fail("exposition does not end with a newline", text, len);
  bool eof = false;
  for (const char *s = text, *end = text + len; s < end;) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    size_t line_len = (size_t)(nl - s);
    if (eof) fail("text after # EOF", s, line_len);
    if (line_len == 0) fail("empty line", s, line_len);
    if (p->format == HK_PROM_OPENMETRICS && line_len == 5 && memcmp(s, "# EOF", 5) == 0) eof = true;
    else if (s[0] == '#') header_line(p, s, line_len);
    else sample_line(p, s, line_len);
    s = nl + 1;
  }
  if (p->format == HK_PROM_OPENMETRICS && !eof) fail("no # EOF", text, len);
  if (p->hist_stage == 1 || p->hist_stage == 2) fail("histogram series unfinished at the end", text, len);
  for (size_t i = 0; i < p->family_count; i++)
    if (p->families[i].type[0] == '\0') fail("family without TYPE", p->families[i].name, strlen(p->families[i].name));
  /* No two samples with the same name and labels, and no family whose sample names another
   * family could also write (h_sum vs a gauge h_sum; x_total's x_created in OpenMetrics). */
  for (size_t i = 0; i < p->family_count; i++) {
    for (const char *const *sfx = suffixes_of(p->families[i].type, p->format); *sfx != NULL; sfx++) {
      char candidate[320];
      snprintf(candidate, sizeof candidate, "%s%s", p->families[i].name, *sfx);
      for (size_t j = 0; j < p->family_count; j++) {
        if (j == i) continue;
        for (const char *const *o = suffixes_of(p->families[j].type, p->format); *o != NULL; o++) {
          char other[320];
          snprintf(other, sizeof other, "%s%s", p->families[j].name, *o);
          if (strcmp(candidate, other) == 0) fail("two families may write the same sample name", candidate, strlen(candidate));
        }
      }
    }
  }
  qsort(p->series, p->series_count, sizeof p->series[0], compare_keys);
  for (size_t i = 1; i < p->series_count; i++)
    if (compare_keys(&p->series[i - 1], &p->series[i]) == 0) fail("duplicate series", p->series[i].bytes, p->series[i].len);
}

static void parser_free(parser_t *p) {
  for (size_t i = 0; i < p->series_count; i++) free(p->series[i].bytes);
  free(p->series);
}

/* ---- the target ------------------------------------------------------------------------------ */

/* The rendering must parse and show every family of the registry with every series' lines. */
static void check_render(hk_metrics_t *registry, hk_prom_format_t format, size_t budget) {
  hk_buf_t whole = HK_BUF_INIT, sliced = HK_BUF_INIT;
  CHECK(hk_prom_render_all(registry, format, &whole) == 0);
  hk_prom_cursor_t cursor;
  hk_prom_cursor_init(&cursor, format);
  for (int slices = 0; !cursor.done; slices++) {
    size_t before = sliced.len;
    CHECK(hk_prom_render(registry, &cursor, &sliced, budget) == 0);
    CHECK(sliced.len > before); /* no empty slice */
    CHECK(slices < 100000);
  }
  /* Nothing changes between the two renders but the series-count gauges' refresh, which gives
   * the same values: the sliced rendering is the same bytes. */
  if (whole.len != sliced.len || memcmp(whole.data, sliced.data, whole.len) != 0) {
    fprintf(stderr, "sliced rendering (budget %zu) differs from the whole one\n", budget);
    abort();
  }
  if (getenv("FUZZ_EXPOSITION_DUMP") != NULL) fwrite(whole.data ? whole.data : "", 1, whole.len, stderr);
  static parser_t parser; /* large: not on the stack, and only its counts need resetting */
  parser.format = format;
  parser.family_count = 0;
  parser.current = NULL;
  parser.series = NULL;
  parser.series_count = parser.series_cap = 0;
  parser.hist_stage = 0;
  parse_exposition(&parser, whole.data ? whole.data : "", whole.len);
  size_t families = hk_metrics_family_count(registry);
  CHECK(parser.family_count == families);
  for (size_t i = 0; i < families; i++) {
    hk_metric_t *m = hk_metrics_family_at(registry, i);
    const char *n = hk_metric_name(m);
    size_t nlen = strlen(n);
    if (format == HK_PROM_OPENMETRICS && hk_metric_type(m) == HK_METRIC_COUNTER &&
        !(hk_metric_flags(m) & HK_METRIC_LEGACY_COUNTER_NAME))
      nlen -= 6; /* OpenMetrics names the family without _total */
    family_t *f = find_family(&parser, n, nlen);
    CHECK(f != NULL);
    size_t per_series = hk_metric_type(m) == HK_METRIC_HISTOGRAM ? hk_metric_bucket_count(m) + 3 : 1;
    if (f->samples != hk_metric_series_count(m) * per_series) {
      fprintf(stderr, "family %s: %zu sample lines for %zu series\n", n, f->samples, hk_metric_series_count(m));
      abort();
    }
  }
  parser_free(&parser);
  hk_buf_free(&whole);
  hk_buf_free(&sliced);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static bool quiet;
  if (!quiet) {
    hk_log_set_level(HK_LOG_ERROR); /* refusals are logged as warnings: expected here */
    quiet = true;
  }
  input_t in = {data, size};
  hk_metrics_t *registry = NULL;
  CHECK(hk_metrics_new(2, &registry) == 0);
  hk_metric_t *families[MAX_FAMILIES];
  size_t family_count = 0;
  hk_series_t *series[MAX_SERIES];
  size_t series_count = 0;
  size_t budget = byte(&in) * 16;

  for (int ops = 0; in.n > 0 && ops < 256; ops++) {
    unsigned op = byte(&in);
    switch (op % 4) {
      case 0: { /* register a family */
        char family_name[300], label_names[HK_METRICS_MAX_LABELS + 2][64];
        const char *labels[HK_METRICS_MAX_LABELS + 2];
        double buckets[HK_METRICS_MAX_BUCKETS + 2];
        hk_metric_opts_t opts = {0};
        opts.type = (hk_metric_type_t)(op / 4 % 3);
        if (op & 0x40) opts.flags |= HK_METRIC_LEGACY_COUNTER_NAME;
        if (op & 0x80) opts.flags |= HK_METRIC_SCRIPT;
        name(&in, family_name, sizeof family_name);
        opts.name = family_name;
        unsigned shape = byte(&in);
        opts.label_count = shape % 4 == 3 ? shape / 4 % (HK_METRICS_MAX_LABELS + 2) : shape % 4;
        for (size_t i = 0; i < opts.label_count; i++) {
          name(&in, label_names[i], sizeof label_names[i]);
          labels[i] = label_names[i];
        }
        opts.labels = labels;
        const uint8_t *help;
        size_t help_len = bytes(&in, 255, &help);
        char help_text[256 * 5];
        size_t repeat = shape & 0x80 ? 5 : 1; /* past HK_METRICS_MAX_HELP sometimes */
        size_t hl = 0;
        for (size_t r = 0; r < repeat; r++)
          for (size_t i = 0; i < help_len; i++)
            if (help[i] != '\0') help_text[hl++] = (char)help[i];
        help_text[hl] = '\0';
        opts.help = help_text;
        if (opts.type == HK_METRIC_HISTOGRAM && (shape & 0x40)) {
          unsigned count = byte(&in) % (HK_METRICS_MAX_BUCKETS + 2);
          for (unsigned i = 0; i < count; i++) buckets[i] = i > 0 && (byte(&in) & 1) ? buckets[i - 1] + number(&in) : number(&in);
          opts.buckets = buckets;
          opts.bucket_count = count;
        }
        opts.series_cap = shape & 0x20 ? byte(&in) % 4 : 0;
        char err[512];
        err[0] = '\0';
        hk_metric_t *m = NULL;
        int rc = hk_metrics_register(registry, &opts, &m, err, sizeof err);
        if (rc == 0) {
          CHECK(m != NULL);
          CHECK(strcmp(hk_metric_name(m), family_name) == 0);
          if (family_count < MAX_FAMILIES) families[family_count++] = m;
        } else {
          CHECK(rc < 0);
          CHECK(err[0] != '\0'); /* every refusal explains itself */
        }
        break;
      }
      case 1: { /* a series with arbitrary label values */
        if (family_count == 0) break;
        hk_metric_t *m = families[byte(&in) % family_count];
        hk_label_value_t values[HK_METRICS_MAX_LABELS];
        size_t count = hk_metric_label_count(m);
        uint8_t long_value[600];
        for (size_t i = 0; i < count; i++) {
          const uint8_t *raw;
          size_t len = bytes(&in, 255, &raw);
          if (len > 0 && raw[0] == 0xff) {
            /* longer than HK_METRICS_MAX_LABEL_VALUE: truncated on a character boundary */
            for (size_t j = 0; j < sizeof long_value; j++) long_value[j] = raw[j % len];
            raw = long_value;
            len = sizeof long_value;
          }
          values[i] = (hk_label_value_t){(const char *)raw, len};
        }
        hk_series_t *s = hk_metric_series(m, values, count);
        if (s != NULL) {
          for (size_t i = 0; i < count; i++) {
            hk_label_value_t v = hk_series_label(s, i);
            CHECK(v.len <= HK_METRICS_MAX_LABEL_VALUE);
            CHECK(valid_utf8(v.str, v.len));
          }
          /* The same values find the same series. */
          CHECK(hk_metric_series(m, values, count) == s);
          if (series_count < MAX_SERIES) series[series_count++] = s;
        }
        break;
      }
      case 2: { /* an update */
        if (series_count == 0) break;
        hk_series_t *s = series[byte(&in) % series_count];
        double v = number(&in);
        unsigned worker = op / 4 % 2;
        /* Which family the series is of is not public; try the update that fits each kind. The
         * registry ignores updates of the wrong type (asserting only in debug builds), so find
         * the type through the families. */
        for (size_t i = 0; i < family_count; i++) {
          hk_metric_t *m = families[i];
          for (size_t j = 0; j < hk_metric_series_count(m); j++) {
            if (hk_metric_series_at(m, j) != s) continue;
            switch (hk_metric_type(m)) {
              case HK_METRIC_COUNTER: hk_series_add(s, worker, v); break;
              case HK_METRIC_HISTOGRAM: hk_series_observe(s, worker, v); break;
              case HK_METRIC_GAUGE:
                if (op & 0x10) hk_series_gauge_set(s, v);
                else hk_series_gauge_add(s, v);
                break;
            }
            i = family_count;
            break;
          }
        }
        break;
      }
      case 3: /* render now, mid-program */
        if (op & 0x10) check_render(registry, op & 0x20 ? HK_PROM_OPENMETRICS : HK_PROM_TEXT, budget);
        break;
    }
  }
  check_render(registry, HK_PROM_TEXT, budget);
  check_render(registry, HK_PROM_OPENMETRICS, budget);
  hk_metrics_free(registry);
  return 0;
}
