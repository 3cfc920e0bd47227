/* replay_main: the main() of every fuzz target when it is built without libFuzzer (any compiler,
 * the normal test suite). It runs LLVMFuzzerTestOneInput once per file named on the command
 * line and once per regular file inside a directory named there (not recursing); a failed check
 * in a target aborts, which fails the test. Each input is handed over in a buffer of exactly its
 * size, so ASan builds catch a target reading past the end. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the whole file into a fresh buffer of exactly its size (NULL and 0 when empty). */
static int read_file(const char *path, uint8_t **data_out, size_t *size_out) {
  *data_out = NULL;
  *size_out = 0;
  FILE *f = fopen(path, "rb");
  if (f == NULL) return -errno;
  uint8_t *data = NULL;
  size_t size = 0, cap = 0;
  int rc = 0;
  for (;;) {
    if (size == cap) {
      size_t new_cap = cap ? cap * 2 : 4096;
      uint8_t *grown = realloc(data, new_cap);
      if (grown == NULL) {
        rc = -ENOMEM;
        goto fail;
      }
      data = grown;
      cap = new_cap;
    }
    size_t n = fread(data + size, 1, cap - size, f);
    size += n;
    if (n == 0) break;
  }
  if (ferror(f)) {
    rc = -EIO;
    goto fail;
  }
  fclose(f);
  if (size == 0) {
    free(data);
    return 0;
  }
  /* Exactly `size` bytes, so a read past the end hits ASan's redzone. */
  *data_out = malloc(size);
  if (*data_out == NULL) {
    free(data);
    return -ENOMEM;
  }
  memcpy(*data_out, data, size);
  *size_out = size;
  free(data);
  return 0;
fail:
  free(data);
  fclose(f);
  return rc;
}

static int replay_file(const char *path) {
  uint8_t *data;
  size_t size;
  int rc = read_file(path, &data, &size);
  if (rc != 0) {
    fprintf(stderr, "%s: %s\n", path, strerror(-rc));
    return rc;
  }
  /* Named before running, so the input that crashes is the last one in the log. */
  printf("%s (%zu bytes)\n", path, size);
  fflush(stdout);
  LLVMFuzzerTestOneInput(data, size);
  free(data);
  return 0;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays the regular files of a directory in name order (hidden files skipped). Returns how
 * many it replayed, or a negative errno. */
static int replay_directory(const char *dir_path) {
  DIR *dir = opendir(dir_path);
  if (dir == NULL) return -errno;
  char **names = NULL;
  size_t count = 0, cap = 0;
  int rc = 0;
  struct dirent *entry;
  while ((entry = readdir(dir)) != NULL) {
    if (entry->d_name[0] == '.') continue;
    if (count == cap) {
      size_t new_cap = cap ? cap * 2 : 64;
      char **grown = realloc(names, new_cap * sizeof *names);
      if (grown == NULL) {
        rc = -ENOMEM;
        goto done;
      }
      names = grown;
      cap = new_cap;
    }
    size_t len = strlen(dir_path) + 1 + strlen(entry->d_name) + 1;
    names[count] = malloc(len);
    if (names[count] == NULL) {
      rc = -ENOMEM;
      goto done;
    }
    snprintf(names[count], len, "%s/%s", dir_path, entry->d_name);
    count++;
  }
  if (count > 0) qsort(names, count, sizeof *names, compare_names);
  int replayed = 0;
  for (size_t i = 0; i < count; i++) {
    struct stat st;
    if (stat(names[i], &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if ((rc = replay_file(names[i])) != 0) goto done;
    replayed++;
  }
  rc = replayed;
done:
  for (size_t i = 0; i < count; i++) free(names[i]);
  free(names);
  closedir(dir);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE_OR_DIRECTORY...\n"
                    "Runs the fuzz target once per file (directories: every file inside).\n",
            argv[0]);
    return 2;
  }
  size_t inputs = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
      return 1;
    }
    if (S_ISDIR(st.st_mode)) {
      int n = replay_directory(argv[i]);
      if (n < 0) {
        fprintf(stderr, "%s: %s\n", argv[i], strerror(-n));
        return 1;
      }
      inputs += (size_t)n;
    } else {
      if (replay_file(argv[i]) != 0) return 1;
      inputs++;
    }
  }
  /* An empty corpus would make a passing test meaningless. */
  if (inputs == 0) {
    fprintf(stderr, "no inputs found\n");
    return 1;
  }
  printf("replayed %zu inputs\n", inputs);
  return 0;
}
