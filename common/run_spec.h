// run.yaml: parsing and validation into a proto::RunSpec (grammar: schemas/RUN_YAML.md).
// Every error is InvalidArgument with the text "FILE:LINE:COLUMN: KEY: what is wrong".
// Unknown keys, wrong types, out-of-range values, duplicate names, unknown or cyclic `after`
// references and unknown job types are all errors. Pure; thread-compatible.
#ifndef DD2_COMMON_RUN_SPEC_H_
#define DD2_COMMON_RUN_SPEC_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "schemas/dd2.pb.h"

namespace YAML {
class Node;
}

namespace dd2 {

// Reads and validates the file at `path`. Params in the result carry their defaults.
absl::StatusOr<proto::RunSpec> LoadRunSpec(const std::string& path);

// The same for YAML text; `source` names it in messages.
absl::StatusOr<proto::RunSpec> ParseRunSpec(const std::string& yaml, const std::string& source);

// The same for a parsed document (common/sweep.cc validates each point this way).
absl::StatusOr<proto::RunSpec> ParseRunSpecNode(const YAML::Node& root, const std::string& source);

// YAML text to a document; syntax errors are located like every other error.
absl::StatusOr<YAML::Node> LoadYaml(const std::string& yaml, const std::string& source);

// Structural checks on a spec that arrived over the wire (names, types, DAG), for the
// coordinator, which cannot trust its client. Messages name the job.
absl::Status ValidateRunSpec(const proto::RunSpec& spec);

}  // namespace dd2

#endif  // DD2_COMMON_RUN_SPEC_H_
