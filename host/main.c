/* hancock: the command line. Parses the command and its flags (through hk_config), then runs
 * `serve` (the library's host, hk_embed, as the embedding API runs it) or a one-shot command
 * (`check`, `rules`, `dashboard`: load the scripts as serve would and report). This file only
 * wires them together and picks exit codes. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "hk_config.h"
#include "hk_embed.h"
#include "hk_host_metrics.h"
#include "hk_log.h"
#include "hk_lua.h"
#include "hk_server.h"

static void print_usage(FILE *out) {
  fprintf(out,
          "Usage: hancock [serve] [options]   run the HTTP host (default command)\n"
          "       hancock check [options]     load the scripts as serve would; report errors as\n"
          "                                   file:line: message and exit 1 on error\n"
          "       hancock rules [options]     Prometheus alerting rules (YAML) from the scripts\n"
          "       hancock dashboard [options] Grafana dashboard (JSON) from the scripts\n"
          "       hancock test-alerts FILE.json [options]\n"
          "                                   run promtool test cases (the YAML as JSON) through the\n"
          "                                   in-process alert evaluator; prints the firing alerts\n"
          "                                   at each eval_time as JSON (docs/alerts.md)\n"
          "       hancock --help | --version\n"
          "\n"
          "Options (flags override environment variables):\n");
  hk_config_print_options(out, HK_CONFIG_FOR_SERVE | HK_CONFIG_FOR_SCRIPTS);
  fprintf(out,
          "\n"
          "Development: HANCOCK_LUA_PATH=DIR loads the runtime from DIR (a lua/ tree) instead of\n"
          "the copy compiled into the binary.\n"
          "Docs: README.md and docs/ in the source tree.\n");
}

/* Only the first line of a Lua error: "file:line: message". The traceback goes to the log. */
static void print_first_line(const char *prefix, const char *msg) {
  const char *nl = strchr(msg, '\n');
  int len = nl ? (int)(nl - msg) : (int)strlen(msg);
  fprintf(stderr, "%s%.*s\n", prefix, len, msg);
}

static int check_scripts_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    fprintf(stderr, "hancock: cannot read scripts directory %s: %s\n", dir, strerror(errno));
    return -1;
  }
  closedir(d);
  return 0;
}

static int load_config(hk_config_t *cfg, int argc, char **argv, int first, unsigned allowed) {
  char err[512];
  if (hk_config_load(cfg, argc, argv, first, allowed, err, sizeof err) != 0) {
    fprintf(stderr, "hancock: %s\n", err);
    return -1;
  }
  hk_log_set_level(cfg->log_level);
  return 0;
}

/* The registry with the host's own families, as serve has it, so scripts that register
 * conflicting metrics fail in `check` exactly as they would in `serve`. */
static int metrics_new(unsigned workers, hk_metrics_t **registry, hk_host_metrics_t *host) {
  char err[256];
  /* One cell per worker, the collector's (hk_host_metrics), the control generation's and the
   * reload loader's (a generation's top level runs on a threadpool thread): hk_server_cells. */
  if (hk_metrics_new(hk_server_cells(workers), registry) != 0) {
    fprintf(stderr, "hancock: out of memory\n");
    return -1;
  }
  if (hk_host_metrics_init(host, *registry, workers, err, sizeof err) != 0) {
    fprintf(stderr, "hancock: %s\n", err);
    hk_metrics_free(*registry);
    return -1;
  }
  return 0;
}

/* Loads the scripts as serve would, for the one-shot commands (check, rules, dashboard).
 * Returns 0 with *lua and *registry set (the caller frees both), or 1 after printing why. */
static int load_scripts_once(int argc, char **argv, int first, hk_config_t *cfg,
                             hk_metrics_t **registry, hk_lua_t **lua) {
  hk_host_metrics_t host;
  char *err = NULL;
  if (load_config(cfg, argc, argv, first, HK_CONFIG_FOR_SCRIPTS) != 0) return 1;
  if (check_scripts_dir(cfg->scripts_dir) != 0) return 1;
  if (metrics_new(1, registry, &host) != 0) return 1;
  hk_lua_opts_t opts;
  hk_lua_opts_from_config(&opts, cfg, *registry, 0);
  if (hk_lua_new_opts(&opts, lua, &err) != 0) {
    print_first_line("", err);
    free(err);
    hk_metrics_free(*registry);
    return 1;
  }
  return 0;
}

/* `hancock rules` and `hancock dashboard`: print what a runtime generator makes of the
 * scripts (lua/hancock/rules.lua, lua/hancock/dashboard.lua). */
static int command_generate(int argc, char **argv, int first, const char *module) {
  hk_config_t cfg;
  hk_metrics_t *registry = NULL;
  hk_lua_t *lua = NULL;
  if (load_scripts_once(argc, argv, first, &cfg, &registry, &lua) != 0) return 1;
  char *err = NULL, *out = NULL;
  int status = 1;
  if (hk_lua_render(lua, module, "render", &out, &err) != 0) {
    print_first_line("hancock: ", err);
  } else {
    fputs(out, stdout);
    status = ferror(stdout) ? 1 : 0;
  }
  free(out);
  free(err);
  hk_lua_free(lua);
  hk_metrics_free(registry);
  return status;
}

/* The whole of a small file, NUL-terminated (*len without it); NULL after printing why. */
static char *read_file(const char *path, size_t max, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "hancock: cannot read %s: %s\n", path, strerror(errno));
    return NULL;
  }
  char *data = malloc(max + 1);
  size_t n = data ? fread(data, 1, max + 1, f) : 0;
  int failed = data == NULL || ferror(f);
  fclose(f);
  if (failed || n > max) {
    fprintf(stderr, "hancock: cannot read %s: %s\n", path, failed ? "read error" : "larger than 16 MiB");
    free(data);
    return NULL;
  }
  data[n] = '\0';
  *len = n;
  return data;
}

/* `hancock test-alerts FILE.json`: promtool's rule tests through lua/hancock/alerting.lua. */
static int command_test_alerts(int argc, char **argv) {
  if (argc < 3 || argv[2][0] == '-') {
    fprintf(stderr, "hancock: test-alerts needs a file: hancock test-alerts FILE.json [options]\n");
    return 2;
  }
  size_t len = 0;
  char *input = read_file(argv[2], 16u << 20, &len);
  if (input == NULL) return 1;
  hk_config_t cfg;
  hk_metrics_t *registry = NULL;
  hk_lua_t *lua = NULL;
  if (load_scripts_once(argc, argv, 3, &cfg, &registry, &lua) != 0) {
    free(input);
    return 1;
  }
  char *err = NULL, *out = NULL;
  int status = 1;
  if (hk_lua_render_input(lua, "hancock.alerting", "replay", input, len, &out, &err) != 0) {
    print_first_line("hancock: ", err);
  } else {
    fputs(out, stdout);
    fputc('\n', stdout);
    status = ferror(stdout) ? 1 : 0;
  }
  free(out);
  free(err);
  free(input);
  hk_lua_free(lua);
  hk_metrics_free(registry);
  return status;
}

static int command_check(int argc, char **argv, int first) {
  hk_config_t cfg;
  hk_metrics_t *registry = NULL;
  hk_lua_t *lua = NULL;
  if (load_scripts_once(argc, argv, first, &cfg, &registry, &lua) != 0) return 1;
  printf("ok: %s loaded, %zu routes\n", cfg.scripts_dir, hk_lua_route_count(lua));
  hk_lua_free(lua);
  hk_metrics_free(registry);
  return 0;
}

/* `hancock serve`: the library's host (hk_embed) on threads of its own, with the process's
 * signals. */
static int command_serve(int argc, char **argv, int first) {
  hk_config_t cfg;
  if (load_config(&cfg, argc, argv, first, HK_CONFIG_FOR_SERVE) != 0) return 1;
  if (check_scripts_dir(cfg.scripts_dir) != 0) return 1;
  char err[1024] = "";
  int status = hk__host_serve(&cfg, err, sizeof err);
  if (status != 0 && err[0] != '\0') print_first_line("hancock: ", err);
  return status;
}

int main(int argc, char **argv) {
  /* Writes to a closed socket or stdout pipe report EPIPE instead of killing the process. */
  signal(SIGPIPE, SIG_IGN);
  /* Once per process, before any thread or client exists (libcurl's rule). */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "hancock: cannot initialise libcurl\n");
    return 1;
  }
  atexit(curl_global_cleanup);
  const char *command = argc > 1 ? argv[1] : "serve";
  if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 || strcmp(command, "help") == 0) {
    print_usage(stdout);
    return 0;
  }
  if (strcmp(command, "--version") == 0 || strcmp(command, "version") == 0) {
    printf("hancock %s\n", HK_VERSION);
    return 0;
  }
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      print_usage(stdout);
      return 0;
    }
  }
  if (strcmp(command, "serve") == 0) return command_serve(argc, argv, 2);
  if (strcmp(command, "check") == 0) return command_check(argc, argv, 2);
  if (strcmp(command, "rules") == 0) return command_generate(argc, argv, 2, "hancock.rules");
  if (strcmp(command, "dashboard") == 0) return command_generate(argc, argv, 2, "hancock.dashboard");
  if (strcmp(command, "test-alerts") == 0) return command_test_alerts(argc, argv);
  if (strncmp(command, "--", 2) == 0) return command_serve(argc, argv, 1);
  fprintf(stderr, "hancock: unknown command '%s' (see hancock --help)\n", command);
  return 1;
}
