#include "common/job_types.h"

#include <initializer_list>

namespace dd2 {
namespace {

// Builders for the parameter groups several job types share.
std::vector<ParamSpec> Join(std::initializer_list<std::vector<ParamSpec>> parts) {
  std::vector<ParamSpec> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

ParamSpec JobName(const char* key, const char* default_job, const char* doc) {
  return {key, ParamKind::kString, 0, 0, std::string("\"") + default_job + "\"", doc};
}

ParamSpec Only(ParamSpec p, const char* param, std::vector<std::string> values) {
  p.used_when = param;
  p.used_when_values = std::move(values);
  return p;
}

ParamSpec Seed() { return {"seed", ParamKind::kInt, 0, 2147483647, "0", "data order, sampling and initialisation"}; }

ParamSpec CheckpointEvery(const char* default_steps) {
  return {"checkpoint_every", ParamKind::kInt, 0, 1e7, default_steps, "steps between checkpoints (0: only at the end)"};
}

ParamSpec CarryState() {
  return {"carry_state", ParamKind::kBool, 0, 0, "true",
          "from a distill/align init: continue its Adam moments and generator-step count (EMA rate)"};
}

ParamSpec Noise() {
  return {"noise", ParamKind::kString, 0, 0, "\"cpu\"",
          "where random numbers are drawn: cpu (for the whole gang, sharded: the same numbers on any device and gang "
          "size) or device (each rank its share on its device: no host-to-device copies; reproducible for the same "
          "seed, device type and gang size only)",
          {"cpu", "device"}};
}

ParamSpec Parallel() {
  return {"parallel", ParamKind::kString, 0, 0, "\"batch\"",
          "how a CPU job's threads share an update: batch (each an equal part of the batch on one intra-op thread, "
          "where they divide it) or ops (LibTorch's intra-op threads); the same losses up to rounding, not part of "
          "the job's identity",
          {"batch", "ops"}};
}

ParamSpec CollectiveTimeout() {
  return {"collective_timeout_s", ParamKind::kNumber, 1, 86400, "300",
          "a gang collective blocked this long fails the attempt (cause: collective timeout)"};
}

// Where a LibTorch job runs: its device and its intra-op CPU threads.
std::vector<ParamSpec> Placement() {
  return {{"device", ParamKind::kString, 0, 0, "\"auto\"",
           "where tensors live: cpu, cuda (fails without a visible GPU), auto (the worker's --device)",
           {"auto", "cpu", "cuda"}},
          {"threads", ParamKind::kInt, 0, 256, "0",
           "intra-op CPU threads (0: the worker's --threads, else 1); not part of the job's identity"}};
}

// Fashion-MNIST training data.
std::vector<ParamSpec> Data() {
  return {{"train_limit", ParamKind::kInt, 0, 60000, "0", "use the first N training images (0: all)"},
          {"data_dir", ParamKind::kPath, 0, 0, "\"/usr/share/datasets/fashion-mnist\"", "gzip'd IDX files (an absolute path)"}};
}

// The teacher's probability post-processing (dd2-method §1.4).
std::vector<ParamSpec> TeacherSampling() {
  return {{"cfg", ParamKind::kNumber, 0, 20, "2.0", "classifier-free guidance scale (1: none)"},
          {"top_k", ParamKind::kInt, 0, 1e6, "0", "keep the k most likely tokens (0: off)"},
          {"top_p", ParamKind::kNumber, 0.01, 1, "1.0", "nucleus mass (1: off)"},
          {"temperature", ParamKind::kNumber, 0.01, 100, "1.0", "softmax temperature"}};
}

// What tune, distill and align share: inputs, teacher probabilities, t law, m, batch.
std::vector<ParamSpec> Dd2Common() {
  return Join({{JobName("tokenizer", "tokenizer", "job whose tokenizer to use"),
                JobName("teacher", "teacher", "job whose teacher to distil")},
               TeacherSampling(),
               {{"t_min", ParamKind::kNumber, 1e-4, 0.5, "0.01", "t ~ U[t_min, t_max], per token"},
                {"t_max", ParamKind::kNumber, 0.5, 0.9999, "0.99", "t ~ U[t_min, t_max], per token"},
                {"m", ParamKind::kInt, 1, 64, "4", "noise draws per sequence for the head"},
                {"batch", ParamKind::kInt, 1, 4096, "32", "sequences per update"},
                Seed()}});
}

}  // namespace

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
           {"checkpoint_every", ParamKind::kInt, 0, 1000000, "0",
            "commit a small checkpoint (file + manifest) every N steps and report it (0: none)"},
           {"loss_scale", ParamKind::kNumber, 0, 1e9, "1",
            "the fake metric: loss = loss_scale / step, reported with progress and checkpoints"},
           {"output_bytes", ParamKind::kInt, 0, 1e9, "0",
            "on success, write <out>/output.bin of this many bytes (derived from seed): an artifact to reuse"},
           Seed(),
       }},
      {"tokenizer",
       "VQ-VAE tokenizer on Fashion-MNIST: a 7x7 or 16x16 token grid, L2-normalised codebook",
       Join({{{"steps", ParamKind::kInt, 1, 1e7, "1000", "training steps"},
              {"batch", ParamKind::kInt, 1, 4096, "64", "images per step"},
              {"lr", ParamKind::kNumber, 1e-7, 1, "1e-3", "Adam learning rate"},
              {"codebook_size", ParamKind::kInt, 2, 65536, "256", "codebook entries V"},
              {"code_dim", ParamKind::kInt, 1, 256, "8", "code dimension C"},
              {"channels", ParamKind::kInt, 8, 1024, "64", "conv channels (even)"},
              {"grid", ParamKind::kInt, 7, 16, "7",
               "tokens per side: 7 (49 tokens, 28x28 images downsampled 4x) or 16 (256 tokens, images padded to 32x32 "
               "and downsampled 2x); later jobs take the token count from the tokenizer",
               {"7", "16"}},
              {"restart_every", ParamKind::kInt, 0, 1e6, "50",
               "steps per dead-code window: unused codes move onto encoder outputs (0: never; stops at 80% of steps)"},
              Seed(), CheckpointEvery("200"), CollectiveTimeout()},
             Placement(), Data()})},
      {"teacher",
       "class-conditional causal transformer over tokens (the AR teacher), CFG by label dropout",
       Join({{JobName("tokenizer", "tokenizer", "job whose tokenizer to use"),
              {"steps", ParamKind::kInt, 1, 1e7, "1000", "training steps"},
              {"batch", ParamKind::kInt, 1, 4096, "64", "sequences per step"},
              {"lr", ParamKind::kNumber, 1e-7, 1, "3e-4", "Adam(0.9, 0.95) learning rate"},
              {"width", ParamKind::kInt, 8, 4096, "128", "model width (a multiple of heads)"},
              {"layers", ParamKind::kInt, 1, 64, "2", "transformer blocks"},
              {"heads", ParamKind::kInt, 1, 64, "4", "attention heads"},
              {"arch", ParamKind::kString, 0, 0, "\"dd2\"",
               "architecture: dd2 (learned positions, LayerNorm, GELU) or llamagen (LlamaGen's GPT: RMSNorm, "
               "SwiGLU, 2D rotary positions, grouped key/value heads; width / heads a multiple of 4)",
               {"dd2", "llamagen"}},
              Only({"kv_heads", ParamKind::kInt, 0, 64, "0", "llamagen: key/value heads, dividing heads (0: heads)"},
                   "arch", {"llamagen"}),
              {"label_dropout", ParamKind::kNumber, 0, 1, "0.1", "share of steps' labels replaced by the null class"},
              Seed(), CheckpointEvery("200"), CollectiveTimeout()},
             Placement(), Data()})},
      {"featurenet",
       "small CNN classifier; its penultimate features are the FID space",
       Join({{{"steps", ParamKind::kInt, 1, 1e7, "1500", "training steps"},
              {"batch", ParamKind::kInt, 1, 4096, "128", "images per step"},
              {"lr", ParamKind::kNumber, 1e-7, 1, "1e-3", "Adam learning rate, decayed linearly to 10%"},
              Seed(), CheckpointEvery("500"), CollectiveTimeout()},
             Placement(), Data()})},
      {"eval",
       "samples from a sampler; FID, IS, precision/recall, class accuracy, latency, PNG grid",
       Join({{{"sampler", ParamKind::kString, 0, 0, "\"teacher\"", "which sampler",
               {"teacher", "set_prediction", "stage1", "dd2", "dd2_multistep"}},
              JobName("tokenizer", "tokenizer", "job whose tokenizer decodes"),
              JobName("teacher", "teacher", "job whose teacher samples"),
              JobName("featurenet", "featurenet", "job whose features score"),
              Only(JobName("generator", "distill", "distill/align job whose EMA generator samples (dd2*)"), "sampler",
                   {"dd2", "dd2_multistep"}),
              Only(JobName("stage1", "tune", "tune job whose model samples (stage1)"), "sampler", {"stage1"}),
              Only({"checkpoint_step", ParamKind::kInt, 0, 1e9, "0",
                    "dd2*: sample from the generator job's committed checkpoint at this step (0: its final weights)"},
                   "sampler", {"dd2", "dd2_multistep"}),
              Only({"multistep_k", ParamKind::kInt, 2, 1000, "2",
                    "dd2_multistep: total steps k (the teacher redoes k - 1 tokens)"},
                   "sampler", {"dd2_multistep"}),
              Only({"euler_steps", ParamKind::kInt, 1, 1000, "10", "stage1: Euler steps per token"}, "sampler",
                   {"stage1"}),
              Only({"snap", ParamKind::kBool, 0, 0, "false",
                    "snap generated vectors to the nearest code (stage1, dd2_multistep prefix)"},
                   "sampler", {"stage1", "dd2_multistep"}),
              {"samples", ParamKind::kInt, 10, 100000, "1000", "generated images"},
              {"batch", ParamKind::kInt, 1, 10000, "250", "sampling batch"},
              {"marginal_samples", ParamKind::kInt, 10, 1e6, "2000", "teacher samples behind the set-prediction marginals"},
              Seed(),
              {"data_dir", ParamKind::kPath, 0, 0, "\"/usr/share/datasets/fashion-mnist\"", "gzip'd IDX files (an absolute path)"}},
             Placement(), TeacherSampling()})},
      {"import_tokenizer",
       "reads LlamaGen's VQ tokenizer from its .pt file (torch.save of {\"model\": state_dict}) into a tokenizer "
       "artifact",
       Join({{{"format", ParamKind::kString, 0, 0, "\"llamagen\"", "whose file it is", {"llamagen"}},
              {"file", ParamKind::kPath, 0, 0, "null", "the .pt file on the worker (required; e.g. vq_ds16_c2i.pt)"}},
             Placement()})},
      {"import_teacher",
       "reads LlamaGen's class-to-image GPT from its .pt file into a teacher artifact (its token table snaps "
       "vectors to the tokenizer's codebook: fine for the teacher sampler; `adapt` it before distilling)",
       Join({{{"format", ParamKind::kString, 0, 0, "\"llamagen\"", "whose file it is", {"llamagen"}},
              {"file", ParamKind::kPath, 0, 0, "null", "the .pt file on the worker (required; e.g. c2i_L_256.pt)"},
              JobName("tokenizer", "tokenizer", "import_tokenizer job whose codebook the teacher predicts"),
              {"preset", ParamKind::kString, 0, 0, "\"\"",
               "a published size: B, L, XL, XXL, XXXL (gives heads and 256 tokens; the file must match)",
               {"", "B", "L", "XL", "XXL", "XXXL"}},
              {"heads", ParamKind::kInt, 0, 256, "0", "attention heads, when no preset (a state dict does not say)"},
              {"tokens", ParamKind::kInt, 0, 65536, "0", "tokens per image, a square (0: the preset's 256)"}},
             Placement()})},
      {"adapt",
       "continuous-input adaptation of an imported LlamaGen teacher (paper App. E.4): an MLP on codebook vectors "
       "replaces the token table, fitted to it, then the whole model is fine-tuned with the AR cross-entropy",
       Join({{JobName("teacher", "teacher", "import_teacher job to adapt"),
              JobName("tokenizer", "tokenizer", "job whose codebook the teacher reads"),
              {"hidden", ParamKind::kInt, 0, 65536, "0", "the MLP's hidden width (0: 4 x the model width)"},
              {"fit_steps", ParamKind::kInt, 1, 1e7, "2000", "first updates fit the MLP alone to the token table"},
              {"fit_lr", ParamKind::kNumber, 1e-7, 1, "3e-3", "Adam learning rate of the fit"},
              {"steps", ParamKind::kInt, 0, 1e7, "200", "fine-tuning updates of the whole model after the fit"},
              {"lr", ParamKind::kNumber, 1e-7, 1, "1e-4", "Adam(0.9, 0.95) learning rate of the fine-tuning"},
              {"batch", ParamKind::kInt, 1, 4096, "32", "sequences per update"},
              {"label_dropout", ParamKind::kNumber, 0, 1, "0.1", "share of labels replaced by the null class"},
              {"data", ParamKind::kString, 0, 0, "\"teacher\"",
               "token sequences: teacher (its own samples, with the CFG and filtering below) or fashion_mnist (the "
               "tokenized data set; a Fashion-MNIST tokenizer only)",
               {"teacher", "fashion_mnist"}},
              {"pool", ParamKind::kInt, 1, 1e7, "1000", "training sequences"},
              {"heldout", ParamKind::kInt, 1, 1e6, "200", "held-out sequences for the NLL before and after"},
              Seed(), CheckpointEvery("200"), CollectiveTimeout()},
             Placement(), TeacherSampling(), Data()})},
      {"tune",
       "stage 1: AR-diffusion tuning (teacher backbone + adaLN MLP head, velocity) on teacher samples",
       Join({Dd2Common(),
             {{"steps", ParamKind::kInt, 1, 1e7, "600", "updates in all"},
              {"head_steps", ParamKind::kInt, 0, 1e7, "200", "first updates train the head only"},
              {"lr", ParamKind::kNumber, 1e-7, 1, "3e-4", "Adam(0.9, 0.95) learning rate"},
              {"target", ParamKind::kString, 0, 0, "\"gts\"", "gts: closed-form velocity; mc: eps - q", {"gts", "mc"}},
              {"head_width", ParamKind::kInt, 8, 4096, "128", "head width"},
              {"head_depth", ParamKind::kInt, 1, 64, "2", "adaLN residual blocks"},
              {"pool", ParamKind::kInt, 10, 1e7, "2000", "teacher samples to train on"},
              CheckpointEvery("200"), CollectiveTimeout()}, Placement()})},
      {"distill",
       "stage 2: conditional score distillation, K guidance updates per generator update, EMA",
       Join({Dd2Common(),
             {JobName("init", "tune", "tune job (both networks) or distill/align job to start from"),
              {"steps", ParamKind::kInt, 1, 1e7, "300", "generator updates"},
              {"k", ParamKind::kInt, 1, 100, "5", "guidance updates per generator update"},
              {"lr", ParamKind::kNumber, 1e-7, 1, "1e-4", "generator Adam(0.9, 0.95) learning rate"},
              {"guidance_lr", ParamKind::kNumber, 1e-7, 1, "1e-4", "guidance Adam(0.9, 0.95) learning rate"},
              {"warmup", ParamKind::kInt, 0, 1e7, "0", "linear warm-up from 1e-6 over this many guidance updates"},
              {"alpha", ParamKind::kNumber, 0, 10, "1.0", "SiD alpha"},
              {"omega", ParamKind::kString, 0, 0, "\"sid\"", "sid: 1 / mean|q - x0_Phi| per sequence; one: 1", {"sid", "one"}},
              {"ema_max", ParamKind::kNumber, 0, 1, "0.9999", "EMA rate min(ema_max, (s + 1) / (s + 10))"},
              CarryState(), Noise(), Parallel(),
              CheckpointEvery("100"), CollectiveTimeout()}, Placement()})},
      {"align",
       "performance alignment: generator <- its EMA, then guidance-only updates",
       Join({Dd2Common(),
             {JobName("init", "distill", "distill job to align"),
              CarryState(), Noise(), Parallel(),
              {"steps", ParamKind::kInt, 1, 1e7, "100", "guidance updates"},
              {"guidance_lr", ParamKind::kNumber, 1e-7, 1, "1e-4", "guidance Adam(0.9, 0.95) learning rate"},
              CheckpointEvery("100"), CollectiveTimeout()}, Placement()})},
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
