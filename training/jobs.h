// The LibTorch job types: `tokenizer`, `teacher`, `featurenet` (training, with periodic
// checkpoints and exact resume) and `eval` (samples from a sampler, then FID, IS,
// precision/recall, class accuracy, latency and a PNG grid). Their parameters are declared in
// common/job_types.cc. Each writes under JobContext::out_dir():
//   checkpoint.pt   resume state (modules, optimizer, step), replaced atomically
//   final.pt        the trained modules, written once training ends
//   config.json     the model options, for jobs that load this one
//   metrics.json    final metrics (eval: also samples.png)
#ifndef DD2_TRAINING_JOBS_H_
#define DD2_TRAINING_JOBS_H_

#include "absl/status/statusor.h"
#include "training/distill.h"
#include "worker/job_registry.h"

namespace dd2 {

int RunTokenizerJob(JobContext& ctx);
int RunTeacherJob(JobContext& ctx);
int RunFeatureNetJob(JobContext& ctx);
int RunEvalJob(JobContext& ctx);
int RunTuneJob(JobContext& ctx);
int RunDistillJob(JobContext& ctx);
int RunAlignJob(JobContext& ctx);
// training/llamagen_jobs.cc: import_tokenizer, import_teacher (LlamaGen's .pt files) and adapt
// (continuous-input adaptation of an imported teacher).
int RunImportTokenizerJob(JobContext& ctx);
int RunImportTeacherJob(JobContext& ctx);
int RunAdaptJob(JobContext& ctx);

// The stage-1 model of a tune job, and the EMA generator of a distill/align job, for eval
// (checkpoint_step > 0: from its committed checkpoint at that step, checksum verified).
absl::StatusOr<ArDiffusion> LoadStage1(JobContext& ctx, const std::string& name, const torch::Device& device);
absl::StatusOr<ArDiffusion> LoadDd2Generator(JobContext& ctx, const std::string& name, const torch::Device& device,
                                             int64_t checkpoint_step = 0);

// Registers the job types above in this process's job registry.
void RegisterTrainingJobTypes();

}  // namespace dd2

#endif  // DD2_TRAINING_JOBS_H_
