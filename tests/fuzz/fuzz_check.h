/* fuzz_check: the one assertion the fuzz targets share. Unlike assert() it stays on in release
 * builds, and abort() is what libFuzzer and the corpus replay both report as a failure. */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
      abort();                                                                         \
    }                                                                                  \
  } while (0)

#endif
