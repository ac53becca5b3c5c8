// `dd2ctl import llamagen`: the run that imports LlamaGen's VQ and GPT files (job types
// import_tokenizer and import_teacher) and, when asked, evaluates the teacher as imported with
// the teacher sampler. Its jobs are named and parameterised as `pipeline: dd2` names the same
// imports (tokenizer, teacher-import), so a later pipeline run of the same files reuses them
// instead of reading the files again. Pure: builds the run spec, submits nothing.
#ifndef DD2_CLUSTER_IMPORT_COMMAND_H_
#define DD2_CLUSTER_IMPORT_COMMAND_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

struct LlamaGenImport {
  std::string gpt, vq;  // paths on the workers; relative ones are made absolute here
  std::string preset;   // B, L, XL, XXL, XXXL, or "" with heads
  int64_t heads = 0, tokens = 0;
  int64_t eval_samples = 0;  // 0: no eval
  std::string name = "llamagen-import";
};

// The run, validated like a run.yaml (errors name the option's job and key).
absl::StatusOr<proto::RunSpec> LlamaGenImportRun(const LlamaGenImport& import);

}  // namespace dd2

#endif  // DD2_CLUSTER_IMPORT_COMMAND_H_
