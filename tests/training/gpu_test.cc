// CUDA checks, built only when the LibTorch has CUDA and run by ops/gpu-check.sh on a GPU
// machine: the NCCL process group of one rank, every job type in a real dd2-train child on the
// GPU (and its artifacts read back on the CPU), and a distill step on the GPU computing the same
// losses as on the CPU. Fashion-MNIST from $DD2_FASHION_MNIST_DIR (default: the Debian path).
#include <cstdlib>
#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "tests/testing/test_util.h"
#include "tests/training/train_test_util.h"
#include "training/data.h"
#include "training/distributed.h"

namespace dd2 {
namespace {

using testing::JobArgs;
using testing::RunToEnd;
using testing::Stage;

// `params` (a JSON object) on `device`, reading the carried data set.
std::string On(const std::string& device, const std::string& params) {
  const char* dir = std::getenv("DD2_FASHION_MNIST_DIR");
  auto j = nlohmann::json::parse(params);
  j["device"] = device;
  j["data_dir"] = dir != nullptr ? std::string(dir) : std::string(kFashionMnistDir);
  return j.dump();
}

Stage TinyFeatureNet() { return {"featurenet", "featurenet", R"({"steps": 4, "batch": 16, "train_limit": 256})"}; }

// Runs the tiny upstream stages (tokenizer, feature network, teacher, tune) on `device`.
void RunUpstream(const std::string& run, const std::string& device) {
  const std::string on = device == "cpu" ? "cpu" : "cuda:0";
  for (const auto& s : {testing::TinyTokenizer(), TinyFeatureNet(), testing::TinyTeacher(), testing::TinyTune()}) {
    const std::string out = RunToEnd(JobArgs(s.type, On(device, s.params), run, s.job));
    EXPECT_NE(out.find("training on " + on), std::string::npos) << s.job << ":\n" << out;
  }
}

// The value of `key` in the last "step N/M ... key=value" line of a job's output.
double Reported(const std::string& out, const std::string& key) {
  std::smatch m;
  double value = NAN;
  const std::regex re(" " + key + "=([-+0-9.eE]+)");
  for (auto it = out.cbegin(); std::regex_search(it, out.cend(), m, re); it = m[0].second) value = std::stod(m[1]);
  return value;
}

// Tests need a GPU (and the first one NCCL); they skip, saying why, where there is none.
#define DD2_REQUIRE_GPU() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA LibTorch or no visible GPU"

TEST(GpuTest, GPU_NcclGroupOfOneRankRunsTheCollectives) {
  DD2_REQUIRE_GPU();
  if (!Distributed::HasNccl()) GTEST_SKIP() << "this build has no NCCL process group";
  const torch::Device cuda(torch::kCUDA);
  DistributedOptions o;
  o.device = cuda;
  o.force_group = true;
  o.rendezvous = absl::StrCat("tcp://127.0.0.1:", testing::FreePort());
  o.timeout = std::chrono::seconds(60);
  auto dist = Distributed::Create(o);
  ASSERT_TRUE(dist.ok()) << dist.status();
  Distributed& d = **dist;
  EXPECT_EQ(d.backend(), "nccl");

  torch::manual_seed(0);
  torch::nn::Linear a(8, 4), b(8, 4);
  a->to(cuda);
  b->to(cuda);
  {
    torch::NoGradGuard no_grad;
    b->weight.copy_(a->weight);
    b->bias.copy_(a->bias);
  }
  torch::optim::SGD sgd_a(a->parameters(), 0.1), sgd_b(b->parameters(), 0.1);
  auto x = torch::randn({16, 8}).to(cuda);
  d.Step(sgd_a, a->forward(x).pow(2).mean());  // all-reduced over one rank: the plain step
  sgd_b.zero_grad();
  b->forward(x).pow(2).mean().backward();
  sgd_b.step();
  EXPECT_TRUE(torch::allclose(a->weight, b->weight));
  EXPECT_TRUE(a->weight.is_cuda());
  EXPECT_TRUE(d.AnyStop(true));
  EXPECT_FALSE(d.AnyStop(false));
  d.Broadcast(*a);
  EXPECT_TRUE(d.Shard(torch::arange(6)).is_cuda());
  EXPECT_GT(d.TakeAllReduceMs(), 0.0);
}

TEST(GpuTest, GPU_EveryJobTypeRunsOnTheGpuAndItsArtifactsLoadOnTheCpu) {
  DD2_REQUIRE_GPU();
  testing::TempDir dir;
  const std::string run = dir.path() + "/run";
  RunUpstream(run, "cuda");
  const std::string dd2 = std::string(testing::kTinyDd2);
  for (const auto& s : {Stage{"distill", "distill", R"({"steps": 4, "k": 2, "checkpoint_every": 2, )" + dd2 + "}"},
                        Stage{"align", "align", R"({"steps": 2, "init": "distill", )" + dd2 + "}"}}) {
    const std::string out = RunToEnd(JobArgs(s.type, On("cuda", s.params), run, s.job));
    EXPECT_NE(out.find("training on cuda:0"), std::string::npos) << s.job << ":\n" << out;
    EXPECT_FALSE(std::isnan(Reported(out, "guidance_loss"))) << out;
  }
  const std::string eval = R"({"samples": 20, "batch": 10, "marginal_samples": 20, "euler_steps": 2, "sampler": ")";
  for (const std::string sampler : {"teacher", "set_prediction", "stage1", "dd2", "dd2_multistep"}) {
    const std::string out = RunToEnd(JobArgs("eval", On("cuda", eval + sampler + "\"}"), run, "eval-" + sampler));
    EXPECT_NE(out.find("sampling on cuda:0"), std::string::npos) << sampler << ":\n" << out;
    EXPECT_NE(out.find("final fid = "), std::string::npos) << sampler << ":\n" << out;
  }
  // What the GPU wrote loads on the CPU: an eval of the distill checkpoint and final weights.
  for (const std::string extra : {"", R"(, "checkpoint_step": 2)"}) {
    const std::string out = RunToEnd(JobArgs("eval", On("cpu", eval + "dd2\"" + extra + "}"), run, "eval-cpu"));
    EXPECT_NE(out.find("sampling on cpu"), std::string::npos) << out;
    EXPECT_NE(out.find("final fid = "), std::string::npos) << out;
  }
}

TEST(GpuTest, GPU_DistillStepOnTheGpuComputesTheCpuLosses) {
  DD2_REQUIRE_GPU();
  testing::TempDir dir;
  const std::string run = dir.path() + "/run";
  RunUpstream(run, "cpu");
  const std::string params = R"({"steps": 1, "k": 2, "checkpoint_every": 0, )" + std::string(testing::kTinyDd2) + "}";
  const std::string cpu = RunToEnd(JobArgs("distill", On("cpu", params), run, "distill-cpu"));
  const std::string gpu = RunToEnd(JobArgs("distill", On("cuda", params), run, "distill-gpu"));
  for (const std::string key : {"guidance_loss", "csd_loss"}) {
    const double a = Reported(cpu, key), b = Reported(gpu, key);
    std::printf("%s: cpu %.8g cuda %.8g\n", key.c_str(), a, b);
    ASSERT_FALSE(std::isnan(a) || std::isnan(b)) << cpu << gpu;
    EXPECT_NEAR(a, b, 1e-3 * std::abs(a)) << key;
  }
}

}  // namespace
}  // namespace dd2
