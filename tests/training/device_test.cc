// Where a job's tensors live, with real dd2-train children: the job's `device` param wins over
// the worker's `--device`; `auto` follows the worker; asking for CUDA where this LibTorch has
// none fails at once with a message that says why. (The CUDA runs themselves are gpu_test.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/test_util.h"
#include "tests/training/train_test_util.h"

namespace dd2 {
namespace {

using testing::JobArgs;

const char kFeatureNet[] = R"({"steps": 2, "batch": 8, "train_limit": 64, "device": ")";

testing::CommandResult RunFeatureNet(const std::string& param, const std::string& worker_device) {
  testing::TempDir dir;
  return testing::RunCommand(JobArgs("featurenet", kFeatureNet + param + "\"}", dir.path(), "featurenet",
                                     {"--device", worker_device}));
}

TEST(DeviceTest, TheJobParamWinsOverTheWorkerDevice) {
  auto r = RunFeatureNet("cpu", "cuda:0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("training on cpu"), std::string::npos) << r.out;
}

TEST(DeviceTest, AutoFollowsTheWorkerDevice) {
  auto r = RunFeatureNet("auto", "cpu");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("training on cpu"), std::string::npos) << r.out;
}

TEST(DeviceTest, CudaWithoutAGpuFailsWithAClearMessage) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has a GPU";
  for (const auto& [param, worker] : {std::pair{"cuda", "cpu"}, std::pair{"auto", "cuda:0"}}) {
    auto r = RunFeatureNet(param, worker);
    EXPECT_EQ(r.exit_code, 1) << param << " on " << worker;
    EXPECT_NE(r.err.find("no CUDA or sees no GPU"), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("training on"), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace dd2
