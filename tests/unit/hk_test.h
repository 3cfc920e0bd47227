/* hk_test: the unit-test harness. A test file lists its cases with HK_TEST(name) and ends with
 * HK_TEST_MAIN(case, ...); tests/CMakeLists.txt registers one CTest entry per case by reading
 * the HK_TEST lines, and runs the executable with the case name. Asserts are typed so a failure
 * prints both values; a failed assert ends the process with status 1. */
#ifndef HK_TEST_H
#define HK_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hk_test_case_s {
  const char *name;
  void (*run)(void);
} hk_test_case_t;

#define HK_TEST(name) static void test_##name(void)
#define HK_CASE(name) {#name, test_##name}

#define HK_FAIL_(...)                                  \
  do {                                                 \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);    \
    fprintf(stderr, __VA_ARGS__);                      \
    fputc('\n', stderr);                               \
    exit(1);                                           \
  } while (0)

#define HK_ASSERT(cond)                                \
  do {                                                 \
    if (!(cond)) HK_FAIL_("assertion failed: %s", #cond); \
  } while (0)

#define HK_ASSERT_INT_EQ(a, b)                                                         \
  do {                                                                                 \
    long long a_ = (long long)(a), b_ = (long long)(b);                                \
    if (a_ != b_) HK_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);                  \
  } while (0)

#define HK_ASSERT_STR_EQ(a, b)                                                         \
  do {                                                                                 \
    const char *a_ = (a), *b_ = (b);                                                   \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                               \
      HK_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
  } while (0)

#define HK_ASSERT_MEM_EQ(a, alen, b, blen)                                             \
  do {                                                                                 \
    size_t al_ = (size_t)(alen), bl_ = (size_t)(blen);                                 \
    if (al_ != bl_ || memcmp((a), (b), al_) != 0)                                      \
      HK_FAIL_("%s == %s: \"%.*s\" != \"%.*s\"", #a, #b, (int)al_, (const char *)(a), (int)bl_, \
               (const char *)(b));                                                     \
  } while (0)

static inline int hk_test_run(const hk_test_case_t *cases, size_t count, int argc, char **argv) {
  int ran = 0;
  for (size_t i = 0; i < count; i++) {
    if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
    cases[i].run();
    ran++;
  }
  if (ran == 0) {
    fprintf(stderr, "no test case named %s\n", argc > 1 ? argv[1] : "(none)");
    return 1;
  }
  return 0;
}

#define HK_TEST_MAIN(...)                                                              \
  int main(int argc, char **argv) {                                                    \
    static const hk_test_case_t cases_[] = {__VA_ARGS__};                              \
    return hk_test_run(cases_, sizeof cases_ / sizeof cases_[0], argc, argv);          \
  }

#endif
