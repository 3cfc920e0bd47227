/* Unit tests for hk_reqid: inbound ID validation and UUIDv4 shape and uniqueness. */
#include "hk_reqid.h"
#include "hk_test.h"

HK_TEST(validation) {
  HK_ASSERT(hk_reqid_is_valid("abc-123_X.y", 11));
  HK_ASSERT(!hk_reqid_is_valid("", 0));
  HK_ASSERT(!hk_reqid_is_valid("a b", 3));
  HK_ASSERT(!hk_reqid_is_valid("a\"b", 3));
  HK_ASSERT(!hk_reqid_is_valid("caf\xc3\xa9", 5));
  char long_id[130];
  memset(long_id, 'a', sizeof long_id);
  HK_ASSERT(hk_reqid_is_valid(long_id, 128));
  HK_ASSERT(!hk_reqid_is_valid(long_id, 129));
}

HK_TEST(uuid_v4_shape) {
  char id[37];
  for (int n = 0; n < 200; n++) {
    HK_ASSERT_INT_EQ(hk_reqid_new(id), 0);
    HK_ASSERT_INT_EQ(strlen(id), 36);
    HK_ASSERT(id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-');
    HK_ASSERT(id[14] == '4');
    HK_ASSERT(strchr("89ab", id[19]) != NULL);
    HK_ASSERT(hk_reqid_is_valid(id, 36));
  }
}

HK_TEST(uuids_differ) {
  enum { N = 1000 };
  static char ids[N][37];
  for (int i = 0; i < N; i++) hk_reqid_new(ids[i]);
  for (int i = 0; i < N; i++)
    for (int k = i + 1; k < N; k++) HK_ASSERT(strcmp(ids[i], ids[k]) != 0);
}

HK_TEST_MAIN(HK_CASE(validation), HK_CASE(uuid_v4_shape), HK_CASE(uuids_differ))
