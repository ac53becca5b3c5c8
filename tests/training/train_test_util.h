// Helpers for tests that run LibTorch job types in real dd2-train children: command lines,
// tiny upstream stages, and pairing the tensors of two checkpoint archives by key.
#ifndef DD2_TESTS_TRAINING_TRAIN_TEST_UTIL_H_
#define DD2_TESTS_TRAINING_TRAIN_TEST_UTIL_H_

#include <string>
#include <vector>

#include <torch/torch.h>

namespace dd2::testing {

inline const std::string kTrain = std::string(DD2_BIN_DIR) + "/dd2-train";

struct Stage {
  std::string type, job, params;
};

// Tiny upstream jobs: tokenizer -> teacher -> tune -> distill (functions: safe during static
// initialisation of test parameters).
Stage TinyTokenizer();
Stage TinyTeacher();
Stage TinyTune();
Stage TinyDistill();
// The shared DD2 knobs of the tiny stages, without braces: batch 8, m 2, cfg 2.
extern const char kTinyDd2[];

// `dd2-train job-run` for one attempt of `job` under run_dir, plus `extra` flags.
std::vector<std::string> JobArgs(const std::string& type, const std::string& params, const std::string& run_dir,
                                 const std::string& job, const std::vector<std::string>& extra = {});

// Runs to completion, expecting exit code 0; returns stdout.
std::string RunToEnd(const std::vector<std::string>& argv);

struct TensorPair {
  std::string key;
  torch::Tensor a, b;  // b undefined when the second archive lacks the key
};

// Every tensor of archive file `a` with its namesake in `b`, recursing into sub-archives.
std::vector<TensorPair> PairTensors(const std::string& a, const std::string& b);

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

}  // namespace dd2::testing

#endif  // DD2_TESTS_TRAINING_TRAIN_TEST_UTIL_H_
