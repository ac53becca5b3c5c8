#include "coordinator/job_identity.h"

#include <algorithm>
#include <functional>
#include <set>

#include <nlohmann/json.hpp>

#include "common/checkpoint_manifest.h"
#include "common/job_types.h"

namespace dd2 {

using Json = nlohmann::json;

namespace {

// Whether `key` is a param of `type` that does not matter for these params (ParamSpec::used_when).
bool Unused(const JobTypeSpec* type, const std::string& key, const Json& params) {
  if (type == nullptr) return false;
  for (const auto& p : type->params) {
    if (p.name != key || p.used_when.empty()) continue;
    auto it = params.find(p.used_when);
    if (it == params.end() || !it->is_string()) return false;
    const std::string value = it->get<std::string>();
    return std::find(p.used_when_values.begin(), p.used_when_values.end(), value) == p.used_when_values.end();
  }
  return false;
}

}  // namespace

std::map<std::string, std::string> JobIdentities(const std::vector<IdentityInput>& jobs) {
  static const std::set<std::string> kSchedulingOnly = {"device", "threads", "parallel", "collective_timeout_s"};
  std::map<std::string, const IdentityInput*> by_name;
  for (const auto& j : jobs) by_name[j.name] = &j;
  std::map<std::string, std::string> out;
  std::set<std::string> visiting;
  std::function<std::string(const IdentityInput&)> identity = [&](const IdentityInput& j) -> std::string {
    if (auto it = out.find(j.name); it != out.end()) return it->second;
    if (!visiting.insert(j.name).second) return "";  // a cycle
    std::string result;
    Json params = Json::parse(j.params_json, nullptr, false);
    const JobTypeSpec* type = FindJobType(j.type);
    if (params.is_object()) {
      std::set<std::string> reads(j.after.begin(), j.after.end());
      for (auto it = params.begin(); it != params.end();) {
        if (kSchedulingOnly.count(it.key()) || Unused(type, it.key(), params)) {
          it = params.erase(it);
          continue;
        }
        if (it->is_string() && by_name.count(it->get<std::string>()) && it->get<std::string>() != j.name) {
          reads.insert(it->get<std::string>());
        }
        ++it;
      }
      Json inputs = Json::object();
      bool complete = true;
      for (const auto& r : reads) {
        auto dep = by_name.find(r);
        const std::string id = dep == by_name.end() ? "" : identity(*dep->second);
        if (id.empty()) complete = false;
        inputs[r] = id;
      }
      if (complete) {
        const Json doc = {{"type", j.type}, {"version", type ? type->version : 0}, {"params", params},
                          {"workers", j.workers}, {"inputs", inputs}};
        result = Sha256Hex(doc.dump());
      }
    }
    visiting.erase(j.name);
    out[j.name] = result;
    return result;
  };
  for (const auto& j : jobs) identity(j);
  return out;
}

}  // namespace dd2
