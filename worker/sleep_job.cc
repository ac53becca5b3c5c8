// The `sleep` job type: exercises the control plane without LibTorch. It sleeps `seconds` split
// over `steps`, reports progress and a fake `loss` metric each step, and can fail on purpose
// (fail_at_step, exit_code, fail_attempts). With checkpoint_every it commits a small checkpoint
// (file, then manifest) every N steps and reports it, as the training jobs do, so the checkpoint
// protocol can be tested without LibTorch. With output_bytes it leaves an artifact (output.bin)
// for job reuse to verify. SIGTERM stops it at the next 10 ms tick (exit 143).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/checkpoint_manifest.h"
#include "common/home.h"
#include "worker/job_registry.h"

namespace dd2 {
namespace {

// <out>/checkpoints/step-N.pt holding one line, then its manifest.
absl::StatusOr<CheckpointManifest> CommitSmallCheckpoint(JobContext& ctx, int64_t step) {
  const std::string dir = ctx.out_dir() + "/checkpoints";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = CheckpointPath(dir, step);
  if (auto st = WriteFileAtomic(path, absl::StrCat("sleep checkpoint of step ", step, "\n")); !st.ok()) return st;
  return CommitCheckpoint(path, step, ctx.attempt_id());
}

int RunSleep(JobContext& ctx) {
  const auto& p = ctx.params();
  const double seconds = p.value("seconds", 1.0);
  const int64_t steps = p.value("steps", 10);
  const int64_t fail_at = p.value("fail_at_step", 0);
  const int exit_code = p.value("exit_code", 1);
  const int64_t fail_attempts = p.value("fail_attempts", 0);
  const int64_t checkpoint_every = p.value("checkpoint_every", 0);
  const double loss_scale = p.value("loss_scale", 1.0);
  const int64_t output_bytes = p.value("output_bytes", 0);
  const auto per_step = std::chrono::duration<double>(seconds / static_cast<double>(steps));
  std::printf("sleep: %lld steps over %.3f s (attempt %d)\n", static_cast<long long>(steps), seconds,
              ctx.attempt());
  std::fflush(stdout);
  for (int64_t step = 1; step <= steps; ++step) {
    const auto until = std::chrono::steady_clock::now() + per_step;
    while (std::chrono::steady_clock::now() < until) {
      if (ctx.StopRequested()) {
        std::printf("sleep: stop requested at step %lld\n", static_cast<long long>(step));
        return 143;
      }
      std::this_thread::sleep_for(std::min<std::chrono::duration<double>>(
          std::chrono::milliseconds(10), until - std::chrono::steady_clock::now()));
    }
    const double loss = loss_scale / static_cast<double>(step);
    ctx.ReportProgress(step, steps, {{"loss", loss}});
    std::printf("sleep: step %lld/%lld\n", static_cast<long long>(step), static_cast<long long>(steps));
    std::fflush(stdout);
    if (checkpoint_every > 0 && step % checkpoint_every == 0 && step < steps) {
      auto manifest = CommitSmallCheckpoint(ctx, step);
      if (!manifest.ok()) {
        std::fprintf(stderr, "sleep: %s\n", std::string(manifest.status().message()).c_str());
        return 1;
      }
      ctx.ReportEvent("checkpoint", {{"step", step}, {"path", manifest->path}, {"sha256", manifest->sha256},
                                     {"bytes", manifest->bytes}, {"metrics", {{"loss", loss}}}});
    }
    if (fail_at > 0 && step == fail_at && (fail_attempts == 0 || ctx.attempt() <= fail_attempts)) {
      std::fprintf(stderr, "sleep: failing on purpose at step %lld with exit code %d\n",
                   static_cast<long long>(step), exit_code);
      return exit_code;
    }
  }
  if (output_bytes > 0) {
    std::string bytes(static_cast<size_t>(output_bytes), '\0');
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>('a' + (i + p.value("seed", 0)) % 26);
    std::error_code ec;
    std::filesystem::create_directories(ctx.out_dir(), ec);
    if (auto st = WriteFileAtomic(ctx.out_dir() + "/output.bin", bytes); !st.ok()) {
      std::fprintf(stderr, "sleep: %s\n", std::string(st.message()).c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace

void RegisterSleepJobType() { RegisterJobType("sleep", RunSleep); }

}  // namespace dd2
