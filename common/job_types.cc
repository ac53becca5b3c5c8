#include "common/job_types.h"

namespace dd2 {

const std::vector<JobTypeSpec>& JobTypes() {
  static const auto* types = new std::vector<JobTypeSpec>{
      {"sleep",
       "control-plane test job: sleeps `seconds` split over `steps`, reporting progress",
       {
           {"seconds", ParamKind::kNumber, 0, 86400, "1", "total run time in seconds"},
           {"steps", ParamKind::kInt, 1, 1000000, "10", "progress steps"},
           {"fail_at_step", ParamKind::kInt, 0, 1000000, "0",
            "exit with exit_code when this step is reached (0: never)"},
           {"exit_code", ParamKind::kInt, 1, 255, "1", "exit code used at fail_at_step"},
           {"fail_attempts", ParamKind::kInt, 0, 1000, "0",
            "fail only in attempts 1..N (0: in every attempt)"},
       }},
      {"tokenizer",
       "VQ-VAE tokenizer on Fashion-MNIST: 7x7 grid, L2-normalised codebook",
       {
           {"steps", ParamKind::kInt, 1, 1e7, "1000", "training steps"},
           {"batch", ParamKind::kInt, 1, 4096, "64", "images per step"},
           {"lr", ParamKind::kNumber, 1e-7, 1, "1e-3", "Adam learning rate"},
           {"codebook_size", ParamKind::kInt, 2, 65536, "256", "codebook entries V"},
           {"code_dim", ParamKind::kInt, 1, 256, "8", "code dimension C"},
           {"channels", ParamKind::kInt, 8, 1024, "64", "conv channels (even)"},
           {"restart_every", ParamKind::kInt, 0, 1e6, "50",
            "steps per dead-code window: unused codes move onto encoder outputs (0: never; stops at 80% of steps)"},
           {"seed", ParamKind::kInt, 0, 2147483647, "0", "data order and initialisation"},
           {"checkpoint_every", ParamKind::kInt, 0, 1e7, "200", "steps between checkpoints (0: only at the end)"},
           {"train_limit", ParamKind::kInt, 0, 60000, "0", "use the first N training images (0: all)"},
           {"data_dir", ParamKind::kString, 0, 0, "\"/usr/share/datasets/fashion-mnist\"", "gzip'd IDX files"},
       }},
      {"teacher",
       "class-conditional causal transformer over tokens (the AR teacher), CFG by label dropout",
       {
           {"tokenizer", ParamKind::kString, 0, 0, "\"tokenizer\"", "job whose tokenizer to use"},
           {"steps", ParamKind::kInt, 1, 1e7, "1000", "training steps"},
           {"batch", ParamKind::kInt, 1, 4096, "64", "sequences per step"},
           {"lr", ParamKind::kNumber, 1e-7, 1, "3e-4", "Adam(0.9, 0.95) learning rate"},
           {"width", ParamKind::kInt, 8, 4096, "128", "model width (a multiple of heads)"},
           {"layers", ParamKind::kInt, 1, 64, "2", "transformer blocks"},
           {"heads", ParamKind::kInt, 1, 64, "4", "attention heads"},
           {"label_dropout", ParamKind::kNumber, 0, 1, "0.1", "share of steps' labels replaced by the null class"},
           {"seed", ParamKind::kInt, 0, 2147483647, "0", "data order, dropout and initialisation"},
           {"checkpoint_every", ParamKind::kInt, 0, 1e7, "200", "steps between checkpoints (0: only at the end)"},
           {"train_limit", ParamKind::kInt, 0, 60000, "0", "use the first N training images (0: all)"},
           {"data_dir", ParamKind::kString, 0, 0, "\"/usr/share/datasets/fashion-mnist\"", "gzip'd IDX files"},
       }},
      {"featurenet",
       "small CNN classifier; its penultimate features are the FID space",
       {
           {"steps", ParamKind::kInt, 1, 1e7, "1500", "training steps"},
           {"batch", ParamKind::kInt, 1, 4096, "128", "images per step"},
           {"lr", ParamKind::kNumber, 1e-7, 1, "1e-3", "Adam learning rate, decayed linearly to 10%"},
           {"seed", ParamKind::kInt, 0, 2147483647, "0", "data order and initialisation"},
           {"checkpoint_every", ParamKind::kInt, 0, 1e7, "500", "steps between checkpoints (0: only at the end)"},
           {"train_limit", ParamKind::kInt, 0, 60000, "0", "use the first N training images (0: all)"},
           {"data_dir", ParamKind::kString, 0, 0, "\"/usr/share/datasets/fashion-mnist\"", "gzip'd IDX files"},
       }},
      {"eval",
       "samples from a sampler; FID, IS, precision/recall, class accuracy, latency, PNG grid",
       {
           {"sampler", ParamKind::kString, 0, 0, "\"teacher\"", "which sampler", {"teacher", "set_prediction"}},
           {"tokenizer", ParamKind::kString, 0, 0, "\"tokenizer\"", "job whose tokenizer decodes"},
           {"teacher", ParamKind::kString, 0, 0, "\"teacher\"", "job whose teacher samples"},
           {"featurenet", ParamKind::kString, 0, 0, "\"featurenet\"", "job whose features score"},
           {"samples", ParamKind::kInt, 10, 100000, "1000", "generated images"},
           {"batch", ParamKind::kInt, 1, 10000, "250", "sampling batch"},
           {"cfg", ParamKind::kNumber, 0, 20, "2.0", "classifier-free guidance scale (1: none)"},
           {"top_k", ParamKind::kInt, 0, 1e6, "0", "keep the k most likely tokens (0: off)"},
           {"top_p", ParamKind::kNumber, 0.01, 1, "1.0", "nucleus mass (1: off)"},
           {"temperature", ParamKind::kNumber, 0.01, 100, "1.0", "softmax temperature"},
           {"marginal_samples", ParamKind::kInt, 10, 1e6, "2000", "teacher samples behind the set-prediction marginals"},
           {"seed", ParamKind::kInt, 0, 2147483647, "0", "sampling seed"},
           {"data_dir", ParamKind::kString, 0, 0, "\"/usr/share/datasets/fashion-mnist\"", "gzip'd IDX files"},
       }},
  };
  return *types;
}

const JobTypeSpec* FindJobType(const std::string& type) {
  for (const auto& t : JobTypes()) {
    if (t.type == type) return &t;
  }
  return nullptr;
}

}  // namespace dd2
