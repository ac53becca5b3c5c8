#include "training/data.h"

#include <zlib.h>

#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

TEST(FashionMnistTest, LoadsTheTestSplit) {
  auto data = LoadFashionMnist(kFashionMnistDir, "test");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(data->labels.min().item<int64_t>(), 0);
  EXPECT_EQ(data->labels.max().item<int64_t>(), 9);
  EXPECT_LE(data->images.max().item<float>(), 1.0f);
  EXPECT_EQ(torch::bincount(data->labels).eq(1000).all().item<bool>(), true);
}

TEST(FashionMnistTest, MissingFileIsNotFoundNamingThePath) {
  testing::TempDir dir;
  auto data = LoadFashionMnist(dir.path(), "train");
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(data.status().message()), ::testing::HasSubstr(dir.path() + "/train-images-idx3-ubyte.gz"));
}

TEST(FashionMnistTest, CorruptFilesAreDataLossNamingThePath) {
  testing::TempDir dir;
  const std::string not_gzip = dir.path() + "/garbage.gz";
  std::ofstream(not_gzip) << "\x1f\x8b\x08 definitely not deflate data";
  auto a = ReadIdxGz(not_gzip);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(std::string(a.status().message()), ::testing::HasSubstr(not_gzip));

  const std::string truncated = dir.path() + "/short.gz";
  gzFile f = gzopen(truncated.c_str(), "wb");
  const unsigned char header[] = {0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3};
  gzwrite(f, header, sizeof(header));
  gzclose(f);
  auto b = ReadIdxGz(truncated);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(b.status().message()), ::testing::HasSubstr(truncated));
}

}  // namespace
}  // namespace dd2
