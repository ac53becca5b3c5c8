// Shared machinery of the LibTorch job types: deterministic minibatches, the resumable
// training loop, artifact I/O (config.json, final.pt, metrics.json) and loading upstream models
// by job name. Used only inside job children; not thread-safe.
#ifndef DD2_TRAINING_JOB_SUPPORT_H_
#define DD2_TRAINING_JOB_SUPPORT_H_

#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "training/checkpoint.h"
#include "training/distributed.h"
#include "training/llamagen.h"
#include "training/models.h"
#include "worker/job_registry.h"

namespace dd2 {

using Json = nlohmann::json;
using Metrics = std::map<std::string, double>;
// A training step's metrics as scalar tensors, left where they were computed: the loop reads
// them (a host sync on a GPU) only when a progress line or a checkpoint is due.
using StepMetrics = std::map<std::string, torch::Tensor>;

// Prints "dd2 job: <what>" to stderr, reports it as the attempt's cause (shown by `dd2ctl
// jobs`) and returns exit code 1.
int Fail(JobContext& ctx, const std::string& what);
int Fail(JobContext& ctx, const absl::Status& st);

// Deterministic minibatches: epoch e is a permutation seeded by (seed, e); step s takes the
// s-th slice. Nothing to save for exact resume. In a gang, `batch` is the whole gang's batch
// and each rank takes its Distributed::Shard of the indices.
class Batcher {
 public:
  Batcher(int64_t n, int64_t batch, uint64_t seed) : n_(n), batch_(batch), seed_(seed) {}
  torch::Tensor Indices(int64_t step) {
    const int64_t per_epoch = std::max<int64_t>(1, n_ / batch_);
    const int64_t epoch = step / per_epoch, offset = (step % per_epoch) * batch_;
    if (epoch != epoch_) {
      auto gen = MakeGenerator(seed_ * 1000003 + static_cast<uint64_t>(epoch));
      perm_ = torch::randperm(n_, gen, torch::kLong);
      epoch_ = epoch;
    }
    return perm_.slice(0, offset, std::min(offset + batch_, n_));
  }

 private:
  int64_t n_, batch_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  torch::Tensor perm_;
};

// Places the job: sets this process's intra-op CPU threads from the job's `threads` param (0:
// OMP_NUM_THREADS, which the worker's --threads sets, else 1) and returns the device of its
// `device` param: cpu, cuda (the worker's GPU when it named one; an error when this LibTorch has
// no CUDA or sees no GPU), or auto (the worker's device; cuda when the worker did not say and a
// GPU is visible). Models are moved there; random numbers are still drawn on the CPU (unless a
// distill/align job says `noise: device`), so a run gives the same numbers on any device up to
// floating-point rounding.
absl::StatusOr<torch::Device> PlaceJob(const JobContext& ctx);

// Joins this attempt's gang (world size 1: no collectives) on the job's device. Uses the job's
// `collective_timeout_s`.
absl::StatusOr<std::unique_ptr<Distributed>> JoinGang(JobContext& ctx);

struct Loop {
  Distributed* dist = nullptr;  // required
  int64_t steps = 1000;
  int64_t checkpoint_every = 200;
  int64_t report_every = 10;
  NamedModules modules;
  NamedOptimizers optimizers;
  bool final_with_optimizers = false;  // final.pt also holds the optimizers (a later job continues them)
  // One optimisation step; returns metrics to report.
  std::function<StepMetrics(int64_t step)> step;
};

// Resumes from the newest checkpoint under <out>/checkpoints whose manifest verifies (older ones
// when it does not), runs to `steps` and writes <out>/final.pt. Rank 0 commits a checkpoint
// every checkpoint_every steps and reports it; when any rank is asked to stop (SIGTERM), every
// rank stops at the same step, rank 0 commits a checkpoint there, and all exit
// kStoppedExitCode. Progress is reported by rank 0 only.
int RunLoop(JobContext& ctx, Loop& loop);

absl::Status WriteJson(const std::string& path, const Json& j);

// A model made without a training loop (an import): <out>/config.json and <out>/final.pt.
absl::Status WriteModelArtifacts(JobContext& ctx, const Json& config, const NamedModules& modules);
absl::StatusOr<Json> ReadJson(const std::string& path);

// Final metrics, reported at `step` (the job's last step) and written to metrics.json, by rank 0.
void ReportFinal(JobContext& ctx, const Metrics& m, int64_t step);

VqVaeOptions TokenizerOptions(const Json& p);
TransformerOptions TeacherOptions(const Json& p, const VqVaeOptions& tok);
TransformerOptions TransformerOptionsFromJson(const Json& config);
Json TransformerOptionsToJson(const TransformerOptions& o);

// LlamaGen VQ options in a tokenizer's config.json ("kind": "llamagen_vq").
LlamaGenVqOptions LlamaGenVqOptionsFromJson(const Json& config);
Json LlamaGenVqOptionsToJson(const LlamaGenVqOptions& o);

// Trained models from the artifacts of job `name`, in eval mode, on `device`. The tokenizer is
// dd2's VqVae or an imported LlamaGen VQ, as its config.json says.
absl::StatusOr<Tokenizer> LoadTokenizer(JobContext& ctx, const std::string& name, const torch::Device& device);
absl::StatusOr<ArTransformer> LoadTeacher(JobContext& ctx, const std::string& name, const torch::Device& device);
absl::StatusOr<FeatureNet> LoadFeatureNet(JobContext& ctx, const std::string& name, const torch::Device& device);

// Token indices of images, in chunks, without gradients: [N, n].
torch::Tensor Tokenize(TokenizerImpl& tok, const torch::Tensor& images);

// Label dropout for classifier-free guidance: this rank's shard of `classes` with each replaced
// by the null class with probability `rate`, drawn for the whole gang's `global_batch` from
// (seed, step), so resume and gang size give the same draws.
torch::Tensor DropLabels(Distributed& dist, const torch::Tensor& classes, int64_t global_batch, uint64_t seed,
                         int64_t step, double rate, int64_t null_class);

// The AR cross-entropy of `model` on token sequences `codes` [B, n] given `classes` [B]
// (teacher forcing on the codebook vectors of codes[:, :n-1]).
torch::Tensor ArCrossEntropy(ArTransformerImpl& model, const torch::Tensor& codebook, const torch::Tensor& codes,
                             const torch::Tensor& classes);

// cfg, top_k, top_p, temperature from a job's params.
SamplingConfig SamplingFromParams(const Json& p);

}  // namespace dd2

#endif  // DD2_TRAINING_JOB_SUPPORT_H_
