/* hk_config: the settings table and its parsers. Adding a setting is one row in `options`;
 * --help, environment lookup and docs/configuration.md all follow from it. */
#include "hk_config.h"

#include "hk_text.h"

#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sched.h>
#include <unistd.h>

typedef enum {
  KIND_LISTEN,
  KIND_PORT,
  KIND_PATH,
  KIND_INT,
  KIND_SIZE,
  KIND_DURATION,
  KIND_LEVEL,
  KIND_SECRET, /* environment only (flags show in ps), never echoed in errors */
  KIND_LIST,   /* comma-separated names: letters, digits and underscores */
} kind_t;

typedef struct option_s {
  const char *flag; /* without the leading "--"; NULL when only an environment variable */
  const char *env;  /* NULL when only a flag */
  const char *fallback;
  kind_t kind;
  size_t offset;
  uint64_t min, max; /* KIND_INT, KIND_SIZE, KIND_DURATION (ms) */
  unsigned commands;
  const char *help;
} option_t;

#define OFF(field) offsetof(hk_config_t, field)
#define SERVE HK_CONFIG_FOR_SERVE
#define SCRIPTS HK_CONFIG_FOR_SCRIPTS

static const option_t options[] = {
    {NULL, "HANCOCK_PORT", "5000", KIND_PORT, OFF(port), 0, 65535, SERVE,
     "Port to listen on when --listen is not given."},
    {"listen", "HANCOCK_LISTEN", NULL, KIND_LISTEN, OFF(listen_host), 0, 0, SERVE,
     "Address and port to listen on: 0.0.0.0:5000, 127.0.0.1:0 (any free port), [::1]:8080."},
    {"scripts", "HANCOCK_SCRIPTS", "./scripts", KIND_PATH, OFF(scripts_dir), 0, 0, SERVE | SCRIPTS,
     "Directory of operator scripts: every *.lua in it runs at start, in name order."},
    {"workers", "HANCOCK_WORKERS", "0", KIND_INT, OFF(workers), 0, HK_CONFIG_MAX_WORKERS, SERVE,
     "Worker threads, each with its own event loop, listening socket and script generation (0: one per CPU)."},
    {"max-body", "HANCOCK_MAX_BODY", "1m", KIND_SIZE, OFF(max_body_bytes), 0, 1ULL << 30, SERVE,
     "Largest request body accepted (bytes; k/m suffixes); larger bodies get 413."},
    {"max-connections", "HANCOCK_MAX_CONNECTIONS", "10000", KIND_INT, OFF(max_connections), 1,
     1000000, SERVE, "Open connections allowed; past it new connections are closed at once."},
    {"header-timeout", "HANCOCK_HEADER_TIMEOUT", "10s", KIND_DURATION, OFF(header_timeout_ms), 1,
     3600000, SERVE, "Time a client has to send a complete request head (then 408 and close)."},
    {"body-timeout", "HANCOCK_BODY_TIMEOUT", "10s", KIND_DURATION, OFF(body_timeout_ms), 1,
     3600000, SERVE, "Longest pause allowed while a request body arrives (then 408 and close)."},
    {"body-min-rate", "HANCOCK_BODY_MIN_RATE", "500", KIND_SIZE, OFF(body_min_rate), 0, 1ULL << 30, SERVE,
     "Slowest request body accepted, bytes/s: past --body-timeout each byte must keep up (0: off)."},
    {"keepalive-timeout", "HANCOCK_KEEPALIVE_TIMEOUT", "75s", KIND_DURATION,
     OFF(keepalive_timeout_ms), 1, 3600000, SERVE, "Idle time before a keep-alive connection is closed."},
    {"send-timeout", "HANCOCK_SEND_TIMEOUT", "30s", KIND_DURATION, OFF(send_timeout_ms), 1,
     3600000, SERVE, "Time a client has to take a response before the connection is dropped."},
    {"drain-timeout", "HANCOCK_DRAIN_TIMEOUT", "10s", KIND_DURATION, OFF(drain_timeout_ms), 0,
     3600000, SERVE, "On SIGTERM/SIGINT, time in-flight requests get to finish before exit."},
    {"rate-limit-clients", "HANCOCK_RATE_LIMIT_CLIENTS", "100000", KIND_INT, OFF(rate_limit_clients),
     1, 10000000, SERVE,
     "Clients whose rate-limit buckets are kept; the least recently seen is forgotten first."},
    {"lua-instruction-limit", "HANCOCK_LUA_INSTRUCTION_LIMIT", "10000000", KIND_INT,
     OFF(lua_instruction_limit), 0, 100000000000ULL, SERVE,
     "Lua VM instructions a request may run before it fails with 500 (0: no limit)."},
    {"lua-memory-limit", "HANCOCK_LUA_MEMORY_LIMIT", "256m", KIND_SIZE, OFF(lua_memory_limit), 0,
     1ULL << 34, SERVE, "Memory the scripts' Lua state may hold; past it allocations fail (0: no limit)."},
    {"lua-time-limit", "HANCOCK_LUA_TIME_LIMIT", "2s", KIND_DURATION, OFF(lua_time_limit_ms), 0,
     3600000, SERVE | SCRIPTS,
     "Wall-clock time Lua may run without yielding (a handler, hook, finalizer or load) before it fails (0: no limit)."},
    {"script-env", "HANCOCK_SCRIPT_ENV", "", KIND_LIST, OFF(script_env), 0, 0, SERVE | SCRIPTS,
     "Comma-separated extra environment variables hk.env may read, beyond the documented ones."},
    {NULL, "HANCOCK_ADMIN_TOKEN", NULL, KIND_SECRET, OFF(admin_token), 0, 0, SERVE,
     "Enables POST /admin/reload for clients sending it as a Bearer token (16 to 255 bytes)."},
    {"log-level", "LOG_LEVEL", "INFO", KIND_LEVEL, OFF(log_level), 0, 0, SERVE | SCRIPTS,
     "DEBUG, INFO, WARNING or ERROR."},
};

#define OPTION_COUNT (sizeof options / sizeof options[0])

/* ---- value parsers ------------------------------------------------------------------------ */

int hk_config_parse_duration(const char *text, uint64_t *ms_out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (end == text || errno != 0 || !isfinite(v) || v < 0) return -EINVAL;
  double scale = 1000.0; /* bare numbers are seconds */
  if (strcmp(end, "ms") == 0) scale = 1.0;
  else if (strcmp(end, "s") == 0 || *end == '\0') scale = 1000.0;
  else if (strcmp(end, "m") == 0) scale = 60000.0;
  else if (strcmp(end, "h") == 0) scale = 3600000.0;
  else return -EINVAL;
  double ms = v * scale;
  if (ms > 1e15) return -EINVAL;
  *ms_out = (uint64_t)llround(ms);
  return 0;
}

int hk_config_parse_size(const char *text, uint64_t *bytes_out) {
  char *end = NULL;
  errno = 0;
  if (*text == '-' || *text == '\0') return -EINVAL;
  unsigned long long v = strtoull(text, &end, 10);
  if (end == text || errno != 0) return -EINVAL;
  uint64_t scale = 1;
  if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0 || strcasecmp(end, "kib") == 0) scale = 1024;
  else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0 || strcasecmp(end, "mib") == 0) scale = 1024 * 1024;
  else if (*end != '\0') return -EINVAL;
  if (v > UINT64_MAX / scale) return -EINVAL;
  *bytes_out = v * scale;
  return 0;
}

static int parse_listen(hk_config_t *cfg, const char *text) {
  const char *colon;
  char host[64];
  size_t host_len;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (close == NULL || close[1] != ':') return -EINVAL;
    host_len = (size_t)(close - text - 1);
    if (host_len == 0 || host_len >= sizeof host) return -EINVAL;
    memcpy(host, text + 1, host_len);
    colon = close + 1;
  } else {
    colon = strrchr(text, ':');
    if (colon == NULL) return -EINVAL;
    host_len = (size_t)(colon - text);
    if (host_len == 0 || host_len >= sizeof host) return -EINVAL;
    memcpy(host, text, host_len);
  }
  host[host_len] = '\0';
  unsigned char addr[16];
  if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1) return -EINVAL;
  char *end = NULL;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535) return -EINVAL;
  memcpy(cfg->listen_host, host, host_len + 1);
  cfg->port = (int)port;
  return 0;
}

static const char *expectation(const option_t *opt, char *tmp, size_t tmpsize) {
  switch (opt->kind) {
    case KIND_LISTEN: return "ADDRESS:PORT with a numeric address, e.g. 0.0.0.0:5000";
    case KIND_PORT: return "a port from 0 to 65535";
    case KIND_PATH: return "a path";
    case KIND_INT:
      snprintf(tmp, tmpsize, "an integer from %llu to %llu", (unsigned long long)opt->min,
               (unsigned long long)opt->max);
      return tmp;
    case KIND_SIZE: return "a size in bytes such as 1048576, 512k or 1m (at most 1g)";
    case KIND_DURATION: return "a duration such as 500ms, 10s or 2m";
    case KIND_LEVEL: return "DEBUG, INFO, WARNING or ERROR";
    case KIND_SECRET: return "a secret of 16 to 255 bytes";
    case KIND_LIST: return "comma-separated names of letters, digits and underscores";
  }
  return "a value";
}

static int apply(hk_config_t *cfg, const option_t *opt, const char *value) {
  char *field = (char *)cfg + opt->offset;
  uint64_t u = 0;
  char *end = NULL;
  switch (opt->kind) {
    case KIND_LISTEN: return parse_listen(cfg, value);
    case KIND_PORT: {
      errno = 0;
      long port = strtol(value, &end, 10);
      if (*value == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535) return -EINVAL;
      cfg->port = (int)port;
      return 0;
    }
    case KIND_PATH:
      if (*value == '\0' || strlen(value) >= sizeof cfg->scripts_dir) return -EINVAL;
      strcpy(field, value);
      return 0;
    case KIND_INT: {
      errno = 0;
      if (*value == '-' || *value == '\0') return -EINVAL;
      unsigned long long v = strtoull(value, &end, 10);
      if (*end != '\0' || errno != 0 || v < opt->min || v > opt->max) return -EINVAL;
      if (opt->offset == OFF(workers)) *(int *)field = (int)v;
      else *(uint64_t *)field = v;
      return 0;
    }
    case KIND_SIZE:
      if (hk_config_parse_size(value, &u) != 0 || u > opt->max) return -EINVAL;
      *(uint64_t *)field = u;
      return 0;
    case KIND_DURATION:
      if (hk_config_parse_duration(value, &u) != 0 || u < opt->min || u > opt->max) return -EINVAL;
      *(uint64_t *)field = u;
      return 0;
    case KIND_SECRET: {
      size_t len = strlen(value);
      if (len < 16 || len >= sizeof cfg->admin_token) return -EINVAL;
      memcpy(field, value, len + 1);
      return 0;
    }
    case KIND_LIST: {
      size_t len = strlen(value);
      if (len >= sizeof cfg->script_env) return -EINVAL;
      for (size_t i = 0; i < len; i++) {
        char c = value[i];
        bool name_char = hk_text_is_alnum((unsigned char)c) || c == '_';
        if (!name_char && !(c == ',' && i > 0 && i + 1 < len && value[i + 1] != ',')) return -EINVAL;
      }
      memcpy(field, value, len + 1);
      return 0;
    }
    case KIND_LEVEL: {
      hk_log_level_t level;
      if (hk_log_level_parse(value, &level) != 0) return -EINVAL;
      *(hk_log_level_t *)field = level;
      return 0;
    }
  }
  return -EINVAL;
}

static void fail_value(char *err, size_t errsize, const char *source, const option_t *opt,
                       const char *value) {
  char tmp[96];
  if (opt->kind == KIND_SECRET) value = "(not shown)";
  snprintf(err, errsize, "%s: expected %s, got '%s'", source, expectation(opt, tmp, sizeof tmp), value);
}

int hk_config_load(hk_config_t *cfg, int argc, char **argv, int first, unsigned allowed,
                   char *err, size_t errsize) {
  memset(cfg, 0, sizeof *cfg);
  strcpy(cfg->listen_host, "0.0.0.0");
  for (size_t i = 0; i < OPTION_COUNT; i++) {
    const option_t *opt = &options[i];
    if (opt->fallback != NULL && apply(cfg, opt, opt->fallback) != 0) abort(); /* table bug */
  }
  for (size_t i = 0; i < OPTION_COUNT; i++) {
    const option_t *opt = &options[i];
    const char *value = opt->env && !(allowed & HK_CONFIG_IGNORE_ENV) ? getenv(opt->env) : NULL;
    if (value == NULL || *value == '\0' || !(opt->commands & allowed)) continue;
    if (apply(cfg, opt, value) != 0) {
      fail_value(err, errsize, opt->env, opt, value);
      return -EINVAL;
    }
  }
  for (int a = first; a < argc; a++) {
    const char *arg = argv[a];
    if (strncmp(arg, "--", 2) != 0) {
      snprintf(err, errsize, "unexpected argument '%s' (see --help)", arg);
      return -EINVAL;
    }
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
    const option_t *opt = NULL;
    for (size_t i = 0; i < OPTION_COUNT; i++) {
      if (options[i].flag && (options[i].commands & allowed) &&
          strlen(options[i].flag) == name_len && strncmp(options[i].flag, name, name_len) == 0)
        opt = &options[i];
    }
    if (opt == NULL) {
      snprintf(err, errsize, "unknown option '%.*s' (see --help)", (int)(name_len + 2), arg);
      return -EINVAL;
    }
    const char *value = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);
    if (value == NULL) {
      snprintf(err, errsize, "--%s needs a value", opt->flag);
      return -EINVAL;
    }
    if (apply(cfg, opt, value) != 0) {
      char source[64];
      snprintf(source, sizeof source, "--%s", opt->flag);
      fail_value(err, errsize, source, opt, value);
      return -EINVAL;
    }
  }
  if (cfg->workers == 0) {
    /* The CPUs this process may run on (taskset, cpusets), not merely those online. */
    cpu_set_t set;
    long cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cpus < 1 ? 1 : cpus > HK_CONFIG_MAX_WORKERS ? HK_CONFIG_MAX_WORKERS : (int)cpus;
  }
  return 0;
}

void hk_config_print_options(FILE *out, unsigned allowed) {
  for (size_t i = 0; i < OPTION_COUNT; i++) {
    const option_t *opt = &options[i];
    if (!(opt->commands & allowed)) continue;
    char left[64];
    if (opt->flag) snprintf(left, sizeof left, "--%s", opt->flag);
    else snprintf(left, sizeof left, "(env only)");
    fprintf(out, "  %-22s %s\n", left, opt->help);
    fprintf(out, "  %-22s env %s", "", opt->env ? opt->env : "-");
    if (opt->fallback) fprintf(out, ", default %s", opt->fallback);
    else if (opt->kind == KIND_LISTEN) fprintf(out, ", default 0.0.0.0:$HANCOCK_PORT");
    fputc('\n', out);
  }
}

void hk_config_print_markdown(FILE *out) {
  fprintf(out, "| flag | environment | default | meaning |\n|---|---|---|---|\n");
  for (size_t i = 0; i < OPTION_COUNT; i++) {
    const option_t *opt = &options[i];
    char flag[64];
    if (opt->flag) snprintf(flag, sizeof flag, "`--%s`", opt->flag);
    else snprintf(flag, sizeof flag, "-");
    fprintf(out, "| %s | %s | %s | %s |\n", flag, opt->env ? opt->env : "-",
            opt->fallback ? opt->fallback : (opt->kind == KIND_LISTEN ? "0.0.0.0:$HANCOCK_PORT" : "-"),
            opt->help);
  }
}
