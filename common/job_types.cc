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
