/* hk_config: every setting of the host in one table — name, default, environment variable,
 * flag, validation and help line — driving `--help`, parsing and docs/configuration.md
 * (Fluent Bit's config_map idea). Precedence: default < environment < command-line flag.
 * Nothing else in the core calls getenv for a setting. */
#ifndef HK_CONFIG_H
#define HK_CONFIG_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#include "hk_log.h"

/* Each worker writes a metric cell of its own and the registry has at most 64 (three more are
 * the collector's, the control thread's and the reload loader's). */
#define HK_CONFIG_MAX_WORKERS 60

typedef struct hk_config_s {
  char listen_host[64]; /* numeric IPv4 or IPv6 address */
  int port;             /* 0 asks the OS for a free port (tests) */
  char scripts_dir[PATH_MAX];
  int workers;
  uint64_t max_body_bytes;
  uint64_t max_connections;
  uint64_t header_timeout_ms;
  uint64_t body_timeout_ms;
  uint64_t body_min_rate; /* bytes/s a body must average once body_timeout_ms has passed; 0: off */
  uint64_t keepalive_timeout_ms;
  uint64_t send_timeout_ms;
  uint64_t drain_timeout_ms;
  uint64_t rate_limit_clients;
  uint64_t lua_instruction_limit;
  uint64_t lua_memory_limit;
  uint64_t lua_time_limit_ms; /* wall clock per entry into Lua; 0: none */
  char script_env[1024];      /* extra names hk.env may read, comma-separated */
  hk_log_level_t log_level;
  char admin_token[256]; /* empty: no /admin routes */
} hk_config_t;

/* Fills cfg from defaults and the environment, then parses argv[first..argc) as flags.
 * Returns 0, or -EINVAL with one line for the user in err ("--workers: expected an integer
 * from 1 to 256, got 'x'"). `allowed` is a bit set of HK_CONFIG_FOR_* naming the flags the
 * command accepts. */
enum {
  HK_CONFIG_FOR_SERVE = 1,
  HK_CONFIG_FOR_SCRIPTS = 2,
  /* Defaults and flags only: an embedding program's settings are its own, not the process
   * environment's. */
  HK_CONFIG_IGNORE_ENV = 1 << 8,
};
int hk_config_load(hk_config_t *cfg, int argc, char **argv, int first, unsigned allowed,
                   char *err, size_t errsize);

/* Writes the option list (flag, env var, default, help) for the given command set. */
void hk_config_print_options(FILE *out, unsigned allowed);

/* Writes the settings as a Markdown table (docs/configuration.md is this output). */
void hk_config_print_markdown(FILE *out);

/* Parses "250ms", "10s", "2m", or a bare number of seconds ("0.5"). */
int hk_config_parse_duration(const char *text, uint64_t *ms_out);
/* Parses "1048576", "512k", "1m" (binary multiples). */
int hk_config_parse_size(const char *text, uint64_t *bytes_out);

#endif
