#include "common/run_spec.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/home.h"
#include "common/job_types.h"
#include "common/yaml_checker.h"
#include "common/status_macros.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;

// `fixed`: params the caller sets itself, which the YAML may not name.
absl::StatusOr<Json> ParseParams(const YamlChecker& c, const YAML::Node& node, const std::string& path,
                                 const JobTypeSpec& type, const std::set<std::string>& fixed = {}) {
  Json params = Json::object();
  std::set<std::string> allowed;
  for (const auto& p : type.params) {
    if (!fixed.count(p.name)) allowed.insert(p.name);
  }
  if (node && !node.IsNull()) {
    DD2_RETURN_IF_ERROR(c.Keys(node, path, allowed));
  }
  for (const auto& p : type.params) {
    const std::string key = path + "." + p.name;
    const bool present = node && node.IsMap() && node[p.name] && !fixed.count(p.name);
    if (!present) {
      if (p.default_json == "null" && !fixed.count(p.name)) {
        return c.Error(node && node.IsMap() ? node.Mark() : YAML::Mark(), key, "missing required key");
      }
      params[p.name] = Json::parse(p.default_json);
      continue;
    }
    const YAML::Node v = node[p.name];
    switch (p.kind) {
      case ParamKind::kInt: {
        DD2_ASSIGN_OR_RETURN(int64_t i, c.Int(v, key, static_cast<int64_t>(p.min), static_cast<int64_t>(p.max)));
        if (!p.choices.empty() && std::find(p.choices.begin(), p.choices.end(), std::to_string(i)) == p.choices.end()) {
          return c.Error(v.Mark(), key, absl::StrCat("expected one of ", absl::StrJoin(p.choices, ", "), ", got ", i));
        }
        params[p.name] = i;
        break;
      }
      case ParamKind::kNumber: {
        DD2_ASSIGN_OR_RETURN(double d, c.Number(v, key, p.min, p.max));
        params[p.name] = d;
        break;
      }
      case ParamKind::kString: {
        DD2_ASSIGN_OR_RETURN(std::string s, c.String(v, key));
        if (!p.choices.empty() && std::find(p.choices.begin(), p.choices.end(), s) == p.choices.end()) {
          return c.Error(v.Mark(), key, absl::StrCat("expected one of ", absl::StrJoin(p.choices, ", "), ", got '", s, "'"));
        }
        params[p.name] = s;
        break;
      }
      case ParamKind::kPath: {
        DD2_ASSIGN_OR_RETURN(std::string path, c.String(v, key));
        std::string why;
        if (path.empty() || path[0] != '/') why = "must be an absolute path";
        for (char ch : path) {
          if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) why = "must not contain control characters";
        }
        for (const absl::string_view part : absl::StrSplit(path, '/')) {
          if (part == "..") why = "must not contain a '..' component";
        }
        if (!why.empty()) return c.Error(v.Mark(), key, absl::StrCat(why, ", got '", absl::CEscape(path), "'"));
        params[p.name] = path;
        break;
      }
      case ParamKind::kBool: {
        DD2_ASSIGN_OR_RETURN(bool b, c.Bool(v, key));
        params[p.name] = b;
        break;
      }
    }
  }
  return params;
}

absl::StatusOr<proto::Resources> ParseResources(const YamlChecker& c, const YAML::Node& res, const std::string& rpath) {
  proto::Resources out;
  out.set_workers(1);
  out.set_device("any");
  if (!res) return out;
  DD2_RETURN_IF_ERROR(c.Keys(res, rpath, {"workers", "device"}));
  if (res["workers"]) {
    DD2_ASSIGN_OR_RETURN(int64_t w, c.Int(res["workers"], rpath + ".workers", 1, 1024));
    out.set_workers(static_cast<uint32_t>(w));
  }
  if (res["device"]) {
    DD2_ASSIGN_OR_RETURN(std::string d, c.String(res["device"], rpath + ".device"));
    if (d != "cpu" && d != "cuda" && d != "any") {
      return c.Error(res["device"].Mark(), rpath + ".device", absl::StrCat("expected cpu, cuda or any, got '", d, "'"));
    }
    out.set_device(d);
  }
  return out;
}

absl::StatusOr<proto::Retention> ParseRetention(const YamlChecker& c, const YAML::Node& node, const std::string& path) {
  proto::Retention out;
  DD2_RETURN_IF_ERROR(c.Keys(node, path, {"keep_latest", "keep_best", "metric", "mode"}));
  out.set_keep_latest(1);
  out.set_mode("min");
  if (node["keep_latest"]) {
    DD2_ASSIGN_OR_RETURN(int64_t n, c.Int(node["keep_latest"], path + ".keep_latest", 1, 100000));
    out.set_keep_latest(static_cast<uint32_t>(n));
  }
  if (node["keep_best"]) {
    DD2_ASSIGN_OR_RETURN(int64_t n, c.Int(node["keep_best"], path + ".keep_best", 0, 100000));
    out.set_keep_best(static_cast<uint32_t>(n));
  }
  if (node["metric"]) {
    DD2_ASSIGN_OR_RETURN(*out.mutable_metric(), c.String(node["metric"], path + ".metric"));
  }
  if (node["mode"]) {
    DD2_ASSIGN_OR_RETURN(std::string mode, c.String(node["mode"], path + ".mode"));
    if (mode != "min" && mode != "max") {
      return c.Error(node["mode"].Mark(), path + ".mode", absl::StrCat("expected min or max, got '", mode, "'"));
    }
    out.set_mode(mode);
  }
  if (out.keep_best() > 0 && out.metric().empty()) {
    return c.Error(node.Mark(), path + ".metric", "keep_best needs the metric that ranks checkpoints");
  }
  return out;
}

// `inputs`: eval params the caller fills in (the models the run's jobs are named after).
absl::StatusOr<proto::EvalEvery> ParseEvalEvery(const YamlChecker& c, const YAML::Node& node, const std::string& path,
                                                const Json& inputs = Json::object()) {
  proto::EvalEvery out;
  DD2_RETURN_IF_ERROR(c.Keys(node, path, {"steps", "params"}));
  if (!node["steps"]) return c.Error(node.Mark(), path + ".steps", "missing required key");
  DD2_ASSIGN_OR_RETURN(int64_t n, c.Int(node["steps"], path + ".steps", 1, 1e9));
  out.set_steps(static_cast<uint64_t>(n));
  std::set<std::string> fixed = {"generator", "checkpoint_step"};
  for (auto& [k, v] : inputs.items()) fixed.insert(k);
  DD2_ASSIGN_OR_RETURN(Json params, ParseParams(c, node["params"], path + ".params", *FindJobType("eval"), fixed));
  for (auto& [k, v] : inputs.items()) params[k] = v;
  if (params.value("sampler", "") != "dd2" && params.value("sampler", "") != "dd2_multistep") {
    params["sampler"] = "dd2";
  }
  out.set_params_json(params.dump());
  return out;
}

// `pipeline: dd2`: the DD2 stages as sections, expanded into a DAG of jobs:
//   tokenizer -> teacher -> tune -> distill [-> align -> distill-2]; featurenet;
//   evals: teacher, set prediction, stage 1 (Euler), DD2 one-step, DD2 multi-step k = 2 and 4.
// With `teacher.import` and `tokenizer.import` (LlamaGen's files): tokenizer (import_tokenizer)
// -> teacher-import (import_teacher) -> teacher (adapt) -> tune ...; no featurenet; one more
// eval, eval-teacher-import, of the teacher as imported.
absl::Status ExpandDd2Pipeline(const YamlChecker& c, const YAML::Node& root, proto::RunSpec& spec) {
  DD2_RETURN_IF_ERROR(c.Keys(root, "", {"name", "pipeline", "priority", "tokenizer", "teacher", "featurenet", "adapt",
                                        "tune", "distill", "align", "distill_after_align", "eval", "resources",
                                        "retries", "retention", "eval_every"}));
  DD2_ASSIGN_OR_RETURN(proto::Resources resources, ParseResources(c, root["resources"], "resources"));
  proto::Resources one_worker = resources;  // evals do not split over a gang
  one_worker.set_workers(1);
  proto::Retention retention;
  if (root["retention"]) {
    DD2_ASSIGN_OR_RETURN(retention, ParseRetention(c, root["retention"], "retention"));
  }
  uint32_t retries = 0;
  if (root["retries"]) {
    DD2_ASSIGN_OR_RETURN(int64_t r, c.Int(root["retries"], "retries", 0, 100));
    retries = static_cast<uint32_t>(r);
  }
  // A job of `type` whose params come from `node` (at `path` in the file) and `fixed_values`.
  auto add_from = [&](const std::string& name, const std::string& type, const YAML::Node& node, const std::string& path,
                      Json fixed_values, const std::vector<std::string>& after) -> absl::Status {
    std::set<std::string> fixed;
    for (auto& [k, v] : fixed_values.items()) fixed.insert(k);
    DD2_ASSIGN_OR_RETURN(Json params, ParseParams(c, node, path, *FindJobType(type), fixed));
    for (auto& [k, v] : fixed_values.items()) params[k] = v;
    proto::JobSpec* job = spec.add_jobs();
    job->set_name(name);
    job->set_type(type);
    job->set_params_json(params.dump());
    for (const auto& a : after) job->add_after(a);
    *job->mutable_resources() = type == "eval" ? one_worker : resources;
    job->set_retries(retries);
    if (root["retention"] && type != "eval") *job->mutable_retention() = retention;
    return absl::OkStatus();
  };
  auto add = [&](const std::string& name, const std::string& type, const std::string& section, Json fixed_values,
                 const std::vector<std::string>& after) {
    return add_from(name, type, root[section], section, std::move(fixed_values), after);
  };
  const Json models = {{"tokenizer", "tokenizer"}, {"teacher", "teacher"}};
  auto with = [](Json base, const Json& extra) {
    for (auto& [k, v] : extra.items()) base[k] = v;
    return base;
  };
  // An imported teacher: `tokenizer: {import: {...}}` and `teacher: {import: {...}}` become the
  // import jobs, and the teacher the pipeline distils is their `adapt` job's output. Its
  // samples are not Fashion-MNIST's, so there is no feature network and no FID.
  auto imports = [&](const char* section) {
    const YAML::Node n = root[section];
    return n && n.IsMap() && n["import"];
  };
  const bool imported = imports("teacher");
  if (imported != imports("tokenizer")) {
    const char* missing = imported ? "tokenizer" : "teacher";
    return c.Error(root[imported ? "teacher" : "tokenizer"].Mark(), absl::StrCat(missing, ".import"),
                   "an imported teacher and its tokenizer come together: give both `teacher.import` and "
                   "`tokenizer.import`");
  }
  if (imported) {
    DD2_RETURN_IF_ERROR(c.Keys(root["tokenizer"], "tokenizer", {"import"}));
    DD2_RETURN_IF_ERROR(c.Keys(root["teacher"], "teacher", {"import"}));
    if (root["featurenet"]) {
      return c.Error(root["featurenet"].Mark(), "featurenet",
                     "the feature network scores Fashion-MNIST samples; an imported teacher's evals have no FID");
    }
    DD2_RETURN_IF_ERROR(add_from("tokenizer", "import_tokenizer", root["tokenizer"]["import"], "tokenizer.import",
                                 Json::object(), {}));
    DD2_RETURN_IF_ERROR(add_from("teacher-import", "import_teacher", root["teacher"]["import"], "teacher.import",
                                 {{"tokenizer", "tokenizer"}}, {"tokenizer"}));
    DD2_RETURN_IF_ERROR(add("teacher", "adapt", "adapt", {{"tokenizer", "tokenizer"}, {"teacher", "teacher-import"}},
                            {"teacher-import"}));
  } else {
    if (root["adapt"]) {
      return c.Error(root["adapt"].Mark(), "adapt", "adapts an imported teacher: needs `teacher.import`");
    }
    DD2_RETURN_IF_ERROR(add("tokenizer", "tokenizer", "tokenizer", Json::object(), {}));
    DD2_RETURN_IF_ERROR(add("featurenet", "featurenet", "featurenet", Json::object(), {}));
    DD2_RETURN_IF_ERROR(add("teacher", "teacher", "teacher", {{"tokenizer", "tokenizer"}}, {"tokenizer"}));
  }
  DD2_RETURN_IF_ERROR(add("tune", "tune", "tune", models, {"teacher"}));
  DD2_RETURN_IF_ERROR(add("distill", "distill", "distill", with(models, {{"init", "tune"}}), {"tune"}));
  if (root["eval_every"]) {  // periodic evals of the distillation's committed checkpoints
    DD2_ASSIGN_OR_RETURN(proto::EvalEvery every,
                         ParseEvalEvery(c, root["eval_every"], "eval_every",
                                        with(models, {{"featurenet", "featurenet"}, {"stage1", "tune"}})));
    *spec.mutable_jobs(spec.jobs_size() - 1)->mutable_eval_every() = every;
    if (!imported) spec.mutable_jobs(spec.jobs_size() - 1)->add_after("featurenet");  // its evals score with it
  }
  std::string generator = "distill";
  if (root["align"]) {
    DD2_RETURN_IF_ERROR(add("align", "align", "align", with(models, {{"init", "distill"}}), {"distill"}));
    DD2_RETURN_IF_ERROR(add("distill-2", "distill", "distill_after_align", with(models, {{"init", "align"}}), {"align"}));
    generator = "distill-2";
  } else if (root["distill_after_align"]) {
    return c.Error(root["distill_after_align"].Mark(), "distill_after_align", "needs an `align` section");
  }
  const Json inputs = with(models, {{"featurenet", "featurenet"}, {"generator", generator}, {"stage1", "tune"}});
  struct Eval {
    const char* name;
    const char* sampler;
    int64_t k;
    std::string after;
  };
  std::vector<Eval> evals = {{"eval-teacher", "teacher", 2, "teacher"},
                             {"eval-set-prediction", "set_prediction", 2, "teacher"},
                             {"eval-stage1", "stage1", 2, "tune"},
                             {"eval-dd2", "dd2", 2, generator},
                             {"eval-dd2-k2", "dd2_multistep", 2, generator},
                             {"eval-dd2-k4", "dd2_multistep", 4, generator}};
  if (imported) evals.insert(evals.begin(), {"eval-teacher-import", "teacher", 2, "teacher-import"});
  for (const Eval& e : evals) {
    std::vector<std::string> after = {e.after};
    if (!imported) after.push_back("featurenet");
    Json fixed = with(inputs, {{"sampler", e.sampler}, {"multistep_k", e.k}});
    if (e.after == "teacher-import") fixed["teacher"] = "teacher-import";
    DD2_RETURN_IF_ERROR(add(e.name, "eval", "eval", fixed, after));
  }
  return absl::OkStatus();
}

absl::StatusOr<proto::JobSpec> ParseJob(const YamlChecker& c, const YAML::Node& node,
                                        const std::string& path) {
  DD2_RETURN_IF_ERROR(c.Keys(node, path,
                             {"name", "type", "params", "after", "resources", "retries", "priority",
                              "retention", "eval_every"}));
  proto::JobSpec job;
  if (!node["name"]) return c.Error(node.Mark(), path + ".name", "missing required key");
  DD2_ASSIGN_OR_RETURN(*job.mutable_name(), c.Name(node["name"], path + ".name"));
  if (!node["type"]) return c.Error(node.Mark(), path + ".type", "missing required key");
  DD2_ASSIGN_OR_RETURN(*job.mutable_type(), c.String(node["type"], path + ".type"));
  const JobTypeSpec* type = FindJobType(job.type());
  if (type == nullptr) {
    std::vector<std::string> names;
    for (const auto& t : JobTypes()) names.push_back(t.type);
    return c.Error(node["type"].Mark(), path + ".type",
                   absl::StrCat("unknown job type '", job.type(), "'; known types: ",
                                absl::StrJoin(names, ", ")));
  }
  DD2_ASSIGN_OR_RETURN(Json params, ParseParams(c, node["params"], path + ".params", *type));
  job.set_params_json(params.dump());
  if (YAML::Node after = node["after"]) {
    if (!after.IsSequence()) {
      return c.Error(after.Mark(), path + ".after",
                     absl::StrCat("expected a list of job names, got ", YamlChecker::Kind(after)));
    }
    for (size_t i = 0; i < after.size(); ++i) {
      DD2_ASSIGN_OR_RETURN(std::string dep, c.Name(after[i], absl::StrCat(path, ".after[", i, "]")));
      job.add_after(dep);
    }
  }
  DD2_ASSIGN_OR_RETURN(*job.mutable_resources(), ParseResources(c, node["resources"], path + ".resources"));
  if (node["retries"]) {
    DD2_ASSIGN_OR_RETURN(int64_t r, c.Int(node["retries"], path + ".retries", 0, 100));
    job.set_retries(static_cast<uint32_t>(r));
  }
  if (node["priority"]) {
    DD2_ASSIGN_OR_RETURN(int64_t p, c.Int(node["priority"], path + ".priority", -1000, 1000));
    job.set_priority(static_cast<int32_t>(p));
  }
  if (node["retention"]) {
    DD2_ASSIGN_OR_RETURN(*job.mutable_retention(), ParseRetention(c, node["retention"], path + ".retention"));
  }
  if (node["eval_every"]) {
    if (job.type() != "distill" && job.type() != "align") {
      return c.Error(node["eval_every"].Mark(), path + ".eval_every",
                     absl::StrCat("only distill and align jobs make generators to evaluate, not ", job.type()));
    }
    DD2_ASSIGN_OR_RETURN(*job.mutable_eval_every(), ParseEvalEvery(c, node["eval_every"], path + ".eval_every"));
  }
  return job;
}

// Returns the index of a job on a dependency cycle, or -1.
int FindCycle(const proto::RunSpec& spec) {
  std::map<std::string, int> index;
  for (int i = 0; i < spec.jobs_size(); ++i) index[spec.jobs(i).name()] = i;
  std::vector<int> indegree(spec.jobs_size(), 0);
  std::vector<std::vector<int>> children(spec.jobs_size());
  for (int i = 0; i < spec.jobs_size(); ++i) {
    for (const auto& dep : spec.jobs(i).after()) {
      children[index[dep]].push_back(i);
      ++indegree[i];
    }
  }
  std::vector<int> ready;
  for (int i = 0; i < spec.jobs_size(); ++i) if (indegree[i] == 0) ready.push_back(i);
  int done = 0;
  while (!ready.empty()) {
    int i = ready.back();
    ready.pop_back();
    ++done;
    for (int ch : children[i]) if (--indegree[ch] == 0) ready.push_back(ch);
  }
  if (done == spec.jobs_size()) return -1;
  for (int i = 0; i < spec.jobs_size(); ++i) if (indegree[i] > 0) return i;
  return -1;
}

}  // namespace

absl::StatusOr<YAML::Node> LoadYaml(const std::string& yaml, const std::string& source) {
  YamlChecker c(source);
  if (auto [line, column] = FirstInvalidUtf8(yaml); line >= 0) {
    YAML::Mark mark;
    mark.line = line;
    mark.column = column;
    return c.Error(mark, "", "not UTF-8 text (a run.yaml must be UTF-8)");
  }
  try {
    return YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    return c.Error(e.mark, "", absl::StrCat("YAML syntax error: ", e.msg));
  } catch (const YAML::Exception& e) {
    return c.Error(e.mark, "", absl::StrCat("YAML error: ", e.msg));
  }
}

absl::StatusOr<proto::RunSpec> ParseRunSpec(const std::string& yaml, const std::string& source) {
  DD2_ASSIGN_OR_RETURN(YAML::Node root, LoadYaml(yaml, source));
  return ParseRunSpecNode(root, source);
}

absl::StatusOr<proto::RunSpec> ParseRunSpecNode(const YAML::Node& root, const std::string& source) {
  YamlChecker c(source);
  try {
    if (!root || root.IsNull()) return c.Error(YAML::Mark(), "", "the file is empty; expected `name:` and `jobs:`");
    if (root.IsMap() && root["pipeline"]) {
      proto::RunSpec spec;
      spec.set_source(source);
      DD2_ASSIGN_OR_RETURN(std::string pipeline, c.String(root["pipeline"], "pipeline"));
      if (pipeline != "dd2") {
        return c.Error(root["pipeline"].Mark(), "pipeline", absl::StrCat("unknown pipeline '", pipeline, "'; expected dd2"));
      }
      if (!root["name"]) return c.Error(root.Mark(), "name", "missing required key");
      DD2_ASSIGN_OR_RETURN(*spec.mutable_name(), c.Name(root["name"], "name"));
      if (root["priority"]) {
        DD2_ASSIGN_OR_RETURN(int64_t p, c.Int(root["priority"], "priority", -1000, 1000));
        spec.set_priority(static_cast<int32_t>(p));
      }
      DD2_RETURN_IF_ERROR(ExpandDd2Pipeline(c, root, spec));
      return spec;
    }
    DD2_RETURN_IF_ERROR(c.Keys(root, "", {"name", "jobs", "priority"}));
    proto::RunSpec spec;
    spec.set_source(source);
    if (!root["name"]) return c.Error(root.Mark(), "name", "missing required key");
    DD2_ASSIGN_OR_RETURN(*spec.mutable_name(), c.Name(root["name"], "name"));
    if (root["priority"]) {
      DD2_ASSIGN_OR_RETURN(int64_t p, c.Int(root["priority"], "priority", -1000, 1000));
      spec.set_priority(static_cast<int32_t>(p));
    }
    YAML::Node jobs = root["jobs"];
    if (!jobs) return c.Error(root.Mark(), "jobs", "missing required key");
    if (!jobs.IsSequence() || jobs.size() == 0) {
      return c.Error(jobs.Mark(), "jobs", absl::StrCat("expected a non-empty list of jobs, got ", YamlChecker::Kind(jobs)));
    }
    std::map<std::string, YAML::Mark> names;
    for (size_t i = 0; i < jobs.size(); ++i) {
      const std::string path = absl::StrCat("jobs[", i, "]");
      DD2_ASSIGN_OR_RETURN(proto::JobSpec job, ParseJob(c, jobs[i], path));
      if (!names.emplace(job.name(), jobs[i]["name"].Mark()).second) {
        return c.Error(jobs[i]["name"].Mark(), path + ".name",
                       absl::StrCat("duplicate job name '", job.name(), "'"));
      }
      *spec.add_jobs() = std::move(job);
    }
    for (int i = 0; i < spec.jobs_size(); ++i) {
      for (int k = 0; k < spec.jobs(i).after_size(); ++k) {
        const std::string& dep = spec.jobs(i).after(k);
        std::string path = absl::StrCat("jobs[", i, "].after[", k, "]");
        if (!names.count(dep)) {
          return c.Error(jobs[i]["after"][k].Mark(), path, absl::StrCat("no job named '", dep, "' in this run"));
        }
        if (dep == spec.jobs(i).name()) {
          return c.Error(jobs[i]["after"][k].Mark(), path, "a job cannot wait for itself");
        }
      }
    }
    int cyclic = FindCycle(spec);
    if (cyclic >= 0) {
      return c.Error(jobs[cyclic]["after"].Mark(), absl::StrCat("jobs[", cyclic, "].after"),
                     absl::StrCat("job '", spec.jobs(cyclic).name(), "' is on a dependency cycle"));
    }
    return spec;
  } catch (const YAML::Exception& e) {
    return c.Error(e.mark, "", absl::StrCat("YAML error: ", e.msg));
  }
}

absl::StatusOr<proto::RunSpec> LoadRunSpec(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ":1:1: cannot open the file"));
  return ParseRunSpec(*text, path);
}

absl::Status ValidateRunSpec(const proto::RunSpec& spec) {
  if (!ValidName(spec.name())) return absl::InvalidArgumentError(absl::StrCat("bad run name '", spec.name(), "'"));
  if (spec.jobs_size() == 0) return absl::InvalidArgumentError("run has no jobs");
  std::set<std::string> names;
  for (const auto& job : spec.jobs()) {
    if (!ValidName(job.name()) || !names.insert(job.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat("bad or duplicate job name '", job.name(), "'"));
    }
    if (FindJobType(job.type()) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("job '", job.name(), "': unknown type '", job.type(), "'"));
    }
    if (!Json::accept(job.params_json())) {
      return absl::InvalidArgumentError(absl::StrCat("job '", job.name(), "': params are not JSON"));
    }
    if (job.resources().workers() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("job '", job.name(), "': resources.workers must be >= 1"));
    }
    if (job.has_retention()) {
      const auto& r = job.retention();
      if (r.keep_latest() < 1 || (r.mode() != "min" && r.mode() != "max") || (r.keep_best() > 0 && r.metric().empty())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "job '", job.name(), "': retention needs keep_latest >= 1, mode min or max, and a metric for keep_best"));
      }
    }
    if (job.has_eval_every() && (job.eval_every().steps() < 1 || !Json::accept(job.eval_every().params_json()))) {
      return absl::InvalidArgumentError(absl::StrCat("job '", job.name(), "': eval_every needs steps >= 1 and JSON params"));
    }
  }
  for (const auto& job : spec.jobs()) {
    for (const auto& dep : job.after()) {
      if (!names.count(dep) || dep == job.name()) {
        return absl::InvalidArgumentError(absl::StrCat("job '", job.name(), "': bad dependency '", dep, "'"));
      }
    }
  }
  int cyclic = FindCycle(spec);
  if (cyclic >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("job '", spec.jobs(cyclic).name(), "' is on a dependency cycle"));
  }
  return absl::OkStatus();
}

}  // namespace dd2
