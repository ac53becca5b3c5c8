// The table of job types and their parameters: the one place that says which types exist and
// which params each takes, with kinds, ranges and defaults. run.yaml validation (dd2ctl and the
// coordinator) reads it; the worker's registry supplies the implementations. Immutable.
#ifndef DD2_COMMON_JOB_TYPES_H_
#define DD2_COMMON_JOB_TYPES_H_

#include <string>
#include <vector>

namespace dd2 {

// kPath: a string naming a file or folder on the workers: absolute, no '..' component, no
// control characters (checked when a run is validated).
enum class ParamKind { kInt, kNumber, kString, kBool, kPath };

struct ParamSpec {
  std::string name;
  ParamKind kind;
  double min;            // for kInt / kNumber
  double max;
  std::string default_json;  // JSON text of the default value; "null": required
  std::string doc;
  std::vector<std::string> choices = {};  // kString, kInt: the allowed values, as written (empty: any)
  // The param matters only when param `used_when` has one of `used_when_values` (e.g. an eval's
  // `generator` only for the dd2 samplers); "" = always. Job identities leave it out otherwise,
  // so the teacher's eval in two runs that differ only in their distillation is one job.
  std::string used_when = "";
  std::vector<std::string> used_when_values = {};
};

struct JobTypeSpec {
  std::string type;
  std::string doc;
  std::vector<ParamSpec> params;
  // Part of every job identity of this type: bump it when the type's semantics change, so jobs
  // that succeeded before are not reused.
  int version = 1;
};

// Every known job type; nullptr from FindJobType when `type` is unknown.
const std::vector<JobTypeSpec>& JobTypes();
const JobTypeSpec* FindJobType(const std::string& type);

}  // namespace dd2

#endif  // DD2_COMMON_JOB_TYPES_H_
