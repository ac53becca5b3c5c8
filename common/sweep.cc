#include "common/sweep.h"

#include <cmath>
#include <map>
#include <random>
#include <set>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/checkpoint_manifest.h"
#include "common/home.h"
#include "common/job_types.h"
#include "common/run_spec.h"
#include "common/status_macros.h"
#include "common/yaml_checker.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;

// One swept key and the value it takes in each combination of its group.
struct Axis {
  std::string key;
  YAML::Mark mark;  // the key in the sweep block
};

// A group of axes that vary together: a grid key (one axis), the zip block (all its keys), the
// random block (all its keys). rows[i][a]: the value of axis a in row i.
struct Group {
  std::vector<Axis> axes;
  std::vector<std::vector<YAML::Node>> rows;
};

Json NodeToJson(const YAML::Node& n) {
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    if (n.Tag() == "!") return s;  // quoted: a string
    if (s == "true") return true;
    if (s == "false") return false;
    size_t used = 0;
    try {
      if (s.find_first_of(".eE") == std::string::npos) {
        long long i = std::stoll(s, &used);
        if (used == s.size()) return i;
      }
      double d = std::stod(s, &used);
      if (used == s.size() && std::isfinite(d)) return d;
    } catch (const std::exception&) {
    }
    return s;
  }
  if (n.IsSequence()) {
    Json a = Json::array();
    for (const auto& e : n) a.push_back(NodeToJson(e));
    return a;
  }
  if (n.IsMap()) {
    Json o = Json::object();
    for (const auto& kv : n) o[kv.first.Scalar()] = NodeToJson(kv.second);
    return o;
  }
  return nullptr;
}

// A node parsed from `text` whose mark is `mark`: values drawn by `random`, and mappings a
// sweep key creates, are reported where their key stands in the sweep block.
YAML::Node MarkedNode(const std::string& text, const YAML::Mark& mark) {
  return YAML::Load(std::string(std::max(0, mark.line), '\n') + std::string(std::max(0, mark.column), ' ') + text);
}

absl::Status CheckKeySyntax(const YamlChecker& c, const YAML::Node& key, const std::string& path) {
  if (!key.IsScalar()) return c.Error(key.Mark(), path, "keys must be plain strings");
  const std::string& k = key.Scalar();
  if (k == "seed" || k == "name" || k == "sweep" || k == "pipeline") {
    return c.Error(key.Mark(), absl::StrCat(path, ".", k),
                   k == "seed" ? "use `seeds:` for replicates, or name the job's seed (e.g. distill.seed)"
                               : "this key cannot be swept");
  }
  for (absl::string_view seg : absl::StrSplit(k, '.')) {
    if (seg.empty()) return c.Error(key.Mark(), absl::StrCat(path, ".", k), "expected a dotted key such as distill.k");
  }
  return absl::OkStatus();
}

// Sets dotted `key` of the run document `root` to `value`. In the generic form, `jobs.NAME.REST`
// addresses the job named NAME in the `jobs` list.
absl::Status SetPath(YAML::Node node, const std::vector<std::string>& segs, size_t i, const YAML::Node& value,
                     const YamlChecker& c, const Axis& axis) {
  if (i + 1 == segs.size()) {
    node[segs[i]] = value;
    return absl::OkStatus();
  }
  if (!node[segs[i]] || node[segs[i]].IsNull()) node[segs[i]] = MarkedNode("{}", axis.mark);
  YAML::Node child = node[segs[i]];
  if (!child.IsMap()) {
    return c.Error(axis.mark, absl::StrCat("sweep.", axis.key),
                   absl::StrCat("'", absl::StrJoin(segs.begin(), segs.begin() + static_cast<long>(i) + 1, "."),
                                "' is not a mapping in the run, so it has no key '", segs[i + 1], "'"));
  }
  return SetPath(child, segs, i + 1, value, c, axis);
}

absl::Status ApplyAxis(YAML::Node root, const Axis& axis, const YAML::Node& value, const YamlChecker& c) {
  std::vector<std::string> segs = absl::StrSplit(axis.key, '.');
  if (segs[0] == "jobs" && root["jobs"] && root["jobs"].IsSequence()) {
    if (segs.size() < 3) {
      return c.Error(axis.mark, "sweep." + axis.key, "expected jobs.<job name>.<key>, e.g. jobs.train.params.lr");
    }
    YAML::Node jobs = root["jobs"];
    for (size_t j = 0; j < jobs.size(); ++j) {
      YAML::Node job = jobs[j];
      if (job.IsMap() && job["name"] && job["name"].IsScalar() && job["name"].Scalar() == segs[1]) {
        return SetPath(job, std::vector<std::string>(segs.begin() + 2, segs.end()), 0, value, c, axis);
      }
    }
    return c.Error(axis.mark, "sweep." + axis.key, absl::StrCat("no job named '", segs[1], "' in jobs"));
  }
  return SetPath(root, segs, 0, value, c, axis);
}

absl::StatusOr<Group> ParseList(const YamlChecker& c, const YAML::Node& key, const YAML::Node& list,
                                const std::string& path) {
  DD2_RETURN_IF_ERROR(CheckKeySyntax(c, key, path));
  const std::string full = absl::StrCat(path, ".", key.Scalar());
  if (!list.IsSequence() || list.size() == 0) {
    return c.Error(list.Mark(), full, absl::StrCat("expected a non-empty list of values, got ", YamlChecker::Kind(list)));
  }
  Group g;
  g.axes.push_back({key.Scalar(), key.Mark()});
  for (size_t i = 0; i < list.size(); ++i) g.rows.push_back({list[i]});
  return g;
}

absl::StatusOr<Group> ParseZip(const YamlChecker& c, const YAML::Node& zip) {
  Group g;
  for (const auto& kv : zip) {
    DD2_ASSIGN_OR_RETURN(Group one, ParseList(c, kv.first, kv.second, "sweep.zip"));
    if (!g.axes.empty() && one.rows.size() != g.rows.size()) {
      return c.Error(kv.second.Mark(), absl::StrCat("sweep.zip.", kv.first.Scalar()),
                     absl::StrCat("zip lists must have equal lengths: ", one.rows.size(), " values here, ", g.rows.size(),
                                  " for ", g.axes[0].key));
    }
    if (g.axes.empty()) g.rows.resize(one.rows.size());
    g.axes.push_back(one.axes[0]);
    for (size_t i = 0; i < one.rows.size(); ++i) g.rows[i].push_back(one.rows[i][0]);
  }
  if (g.axes.empty()) return c.Error(zip.Mark(), "sweep.zip", "expected at least one key");
  return g;
}

// Unit-interval double from the generator's raw 64 bits: the same on every standard library.
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

absl::StatusOr<Group> ParseRandom(const YamlChecker& c, const YAML::Node& node, int64_t max_points) {
  DD2_RETURN_IF_ERROR(c.Keys(node, "sweep.random", {"n", "seed", "space"}));
  if (!node["n"]) return c.Error(node.Mark(), "sweep.random.n", "missing required key");
  DD2_ASSIGN_OR_RETURN(int64_t n, c.Int(node["n"], "sweep.random.n", 1, 1000000));
  int64_t seed = 0;
  if (node["seed"]) {
    DD2_ASSIGN_OR_RETURN(seed, c.Int(node["seed"], "sweep.random.seed", 0, 2147483647));
  }
  const YAML::Node space = node["space"];
  if (!space) return c.Error(node.Mark(), "sweep.random.space", "missing required key");
  if (!space.IsMap() || space.size() == 0) {
    return c.Error(space.Mark(), "sweep.random.space", "expected a mapping of key: {uniform|loguniform|choice: ...}");
  }
  if (n > max_points) {
    return c.Error(node["n"].Mark(), "sweep.random.n",
                   absl::StrCat("sweep expands to at least ", n, " points, more than sweep.max_points (", max_points, ")"));
  }
  struct Dist {
    std::string kind;
    double lo = 0, hi = 0;
    YAML::Node choices;
    YAML::Mark mark;
  };
  Group g;
  std::vector<Dist> dists;
  for (const auto& kv : space) {
    DD2_RETURN_IF_ERROR(CheckKeySyntax(c, kv.first, "sweep.random.space"));
    const std::string path = absl::StrCat("sweep.random.space.", kv.first.Scalar());
    DD2_RETURN_IF_ERROR(c.Keys(kv.second, path, {"uniform", "loguniform", "choice"}));
    if (kv.second.size() != 1) return c.Error(kv.second.Mark(), path, "expected exactly one of uniform, loguniform, choice");
    Dist d;
    d.kind = kv.second.begin()->first.Scalar();
    d.mark = kv.first.Mark();
    const YAML::Node arg = kv.second.begin()->second;
    const std::string apath = absl::StrCat(path, ".", d.kind);
    if (d.kind == "choice") {
      if (!arg.IsSequence() || arg.size() == 0) return c.Error(arg.Mark(), apath, "expected a non-empty list of values");
      d.choices = arg;
    } else {
      if (!arg.IsSequence() || arg.size() != 2) return c.Error(arg.Mark(), apath, "expected [low, high]");
      DD2_ASSIGN_OR_RETURN(d.lo, c.Number(arg[0], apath + "[0]", -1e300, 1e300));
      DD2_ASSIGN_OR_RETURN(d.hi, c.Number(arg[1], apath + "[1]", -1e300, 1e300));
      if (!(d.lo < d.hi)) return c.Error(arg.Mark(), apath, "expected low < high");
      if (d.kind == "loguniform" && d.lo <= 0) return c.Error(arg.Mark(), apath, "loguniform needs low > 0");
    }
    g.axes.push_back({kv.first.Scalar(), kv.first.Mark()});
    dists.push_back(d);
  }
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  for (int64_t i = 0; i < n; ++i) {
    std::vector<YAML::Node> row;
    for (const Dist& d : dists) {
      const double u = Uniform01(rng);
      if (d.kind == "choice") {
        row.push_back(d.choices[std::min<size_t>(d.choices.size() - 1, static_cast<size_t>(u * d.choices.size()))]);
      } else {
        const double v = d.kind == "uniform" ? d.lo + u * (d.hi - d.lo)
                                             : std::exp(std::log(d.lo) + u * (std::log(d.hi) - std::log(d.lo)));
        row.push_back(MarkedNode(absl::StrFormat("%.6g", v), d.mark));
      }
    }
    g.rows.push_back(std::move(row));
  }
  return g;
}

Json SpecJson(const proto::RunSpec& spec) {
  Json jobs = Json::array();
  for (const auto& j : spec.jobs()) {
    Json job = {{"name", j.name()},
                {"type", j.type()},
                {"params", Json::parse(j.params_json(), nullptr, false)},
                {"after", Json(std::vector<std::string>(j.after().begin(), j.after().end()))},
                {"workers", j.resources().workers()},
                {"device", j.resources().device()},
                {"retries", j.retries()},
                {"priority", j.priority()}};
    if (j.has_retention()) {
      job["retention"] = {{"keep_latest", j.retention().keep_latest()}, {"keep_best", j.retention().keep_best()},
                          {"metric", j.retention().metric()}, {"mode", j.retention().mode()}};
    }
    if (j.has_eval_every()) {
      job["eval_every"] = {{"steps", j.eval_every().steps()},
                           {"params", Json::parse(j.eval_every().params_json(), nullptr, false)}};
    }
    jobs.push_back(job);
  }
  return jobs;
}

const proto::JobSpec* FindJob(const proto::RunSpec& spec, const std::string& name) {
  for (const auto& j : spec.jobs()) {
    if (j.name() == name) return &j;
  }
  return nullptr;
}

// Jobs whose spec differs between `specs`, and everything downstream of them (by `after`).
std::set<std::string> DifferingJobs(const std::vector<proto::RunSpec>& specs) {
  std::set<std::string> out;
  const Json first = SpecJson(specs[0]);
  for (size_t i = 1; i < specs.size(); ++i) {
    const Json other = SpecJson(specs[i]);
    for (size_t j = 0; j < first.size() && j < other.size(); ++j) {
      if (first[j] != other[j]) out.insert(first[j]["name"].get<std::string>());
    }
  }
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& j : specs[0].jobs()) {
      if (out.count(j.name())) continue;
      for (const auto& dep : j.after()) {
        if (out.count(dep)) {
          out.insert(j.name());
          grew = true;
          break;
        }
      }
    }
  }
  return out;
}

std::string ValuesText(const Json& values) {
  std::vector<std::string> parts;
  for (auto& [k, v] : values.items()) parts.push_back(absl::StrCat(k, "=", v.is_string() ? v.get<std::string>() : v.dump()));
  return absl::StrJoin(parts, ", ");
}

// `mode` of the mapping at `path`: min (the default) or max.
absl::StatusOr<std::string> ParseMode(const YamlChecker& c, const YAML::Node& node, const std::string& path) {
  if (!node["mode"]) return std::string("min");
  DD2_ASSIGN_OR_RETURN(std::string mode, c.String(node["mode"], path + ".mode"));
  if (mode != "min" && mode != "max") {
    return c.Error(node["mode"].Mark(), path + ".mode", absl::StrCat("expected min or max, got '", mode, "'"));
  }
  return mode;
}

absl::Status ParseEarlyStop(const YamlChecker& c, const YAML::Node& node, const proto::RunSpec& first,
                            proto::EarlyStop& out) {
  DD2_RETURN_IF_ERROR(c.Keys(node, "sweep.early_stop", {"metric", "mode", "rungs", "keep", "job"}));
  if (!node["metric"]) return c.Error(node.Mark(), "sweep.early_stop.metric", "missing required key");
  DD2_ASSIGN_OR_RETURN(*out.mutable_metric(), c.String(node["metric"], "sweep.early_stop.metric"));
  DD2_ASSIGN_OR_RETURN(*out.mutable_mode(), ParseMode(c, node, "sweep.early_stop"));
  out.set_keep(0.5);
  if (node["keep"]) {
    DD2_ASSIGN_OR_RETURN(double keep, c.Number(node["keep"], "sweep.early_stop.keep", 0, 1));
    if (keep <= 0 || keep >= 1) return c.Error(node["keep"].Mark(), "sweep.early_stop.keep", "expected a fraction in (0, 1)");
    out.set_keep(keep);
  }
  out.set_job("distill");
  if (node["job"]) {
    DD2_ASSIGN_OR_RETURN(*out.mutable_job(), c.String(node["job"], "sweep.early_stop.job"));
  }
  const YAML::Mark job_mark = node["job"] ? node["job"].Mark() : node.Mark();
  const proto::JobSpec* job = FindJob(first, out.job());
  if (job == nullptr) {
    return c.Error(job_mark, "sweep.early_stop.job", absl::StrCat("no job named '", out.job(), "' in the run"));
  }
  int64_t every = 0;
  if (job->has_eval_every()) {
    every = static_cast<int64_t>(job->eval_every().steps());
  } else {
    every = Json::parse(job->params_json(), nullptr, false).value("checkpoint_every", int64_t{0});
  }
  if (every <= 0) {
    return c.Error(job_mark, "sweep.early_stop.job",
                   absl::StrCat("job '", out.job(), "' commits no checkpoints to rank (give it eval_every or checkpoint_every)"));
  }
  const YAML::Node rungs = node["rungs"];
  if (!rungs) return c.Error(node.Mark(), "sweep.early_stop.rungs", "missing required key");
  if (!rungs.IsSequence() || rungs.size() == 0) {
    return c.Error(rungs.Mark(), "sweep.early_stop.rungs", "expected a non-empty list of steps");
  }
  int64_t last = 0;
  for (size_t i = 0; i < rungs.size(); ++i) {
    const std::string key = absl::StrCat("sweep.early_stop.rungs[", i, "]");
    DD2_ASSIGN_OR_RETURN(int64_t r, c.Int(rungs[i], key, 1, 1e9));
    if (r <= last) return c.Error(rungs[i].Mark(), key, "rungs must be ascending");
    if (r % every != 0) {
      return c.Error(rungs[i].Mark(), key,
                     absl::StrCat("step ", r, " is not a multiple of ", every, ", so '", out.job(), "' has no ",
                                  job->has_eval_every() ? "eval" : "checkpoint", " there"));
    }
    out.add_rungs(static_cast<uint64_t>(r));
    last = r;
  }
  return absl::OkStatus();
}

absl::Status ParseObjective(const YamlChecker& c, const YAML::Node& node, const proto::RunSpec& first,
                            proto::Objective& out) {
  DD2_RETURN_IF_ERROR(c.Keys(node, "sweep.objective", {"job", "metric", "mode"}));
  for (const char* k : {"job", "metric"}) {
    if (!node[k]) return c.Error(node.Mark(), absl::StrCat("sweep.objective.", k), "missing required key");
  }
  DD2_ASSIGN_OR_RETURN(*out.mutable_job(), c.String(node["job"], "sweep.objective.job"));
  if (FindJob(first, out.job()) == nullptr) {
    return c.Error(node["job"].Mark(), "sweep.objective.job", absl::StrCat("no job named '", out.job(), "' in the run"));
  }
  DD2_ASSIGN_OR_RETURN(*out.mutable_metric(), c.String(node["metric"], "sweep.objective.metric"));
  DD2_ASSIGN_OR_RETURN(*out.mutable_mode(), ParseMode(c, node, "sweep.objective"));
  return absl::OkStatus();
}

absl::StatusOr<proto::SweepSpec> ExpandSweep(const std::string& yaml, const std::string& source) {
  YamlChecker c(source);
  DD2_ASSIGN_OR_RETURN(YAML::Node doc, LoadYaml(yaml, source));
  const YAML::Node sweep = doc["sweep"];
  DD2_RETURN_IF_ERROR(c.Keys(sweep, "sweep", {"grid", "zip", "random", "seeds", "max_points", "early_stop", "objective"}));
  int64_t max_points = kDefaultMaxSweepPoints;
  if (sweep["max_points"]) {
    DD2_ASSIGN_OR_RETURN(max_points, c.Int(sweep["max_points"], "sweep.max_points", 1, 1000000));
  }
  std::vector<Group> groups;
  if (const YAML::Node grid = sweep["grid"]) {
    if (!grid.IsMap() || grid.size() == 0) {
      return c.Error(grid.Mark(), "sweep.grid", "expected a mapping of key: [values...]");
    }
    for (const auto& kv : grid) {
      DD2_ASSIGN_OR_RETURN(Group g, ParseList(c, kv.first, kv.second, "sweep.grid"));
      groups.push_back(std::move(g));
    }
  }
  if (const YAML::Node zip = sweep["zip"]) {
    if (!zip.IsMap()) return c.Error(zip.Mark(), "sweep.zip", "expected a mapping of key: [values...]");
    DD2_ASSIGN_OR_RETURN(Group g, ParseZip(c, zip));
    groups.push_back(std::move(g));
  }
  if (const YAML::Node random = sweep["random"]) {
    DD2_ASSIGN_OR_RETURN(Group g, ParseRandom(c, random, max_points));
    groups.push_back(std::move(g));
  }
  std::vector<int64_t> seeds;
  if (const YAML::Node s = sweep["seeds"]) {
    if (s.IsSequence()) {
      if (s.size() == 0) return c.Error(s.Mark(), "sweep.seeds", "expected a count or a non-empty list of seeds");
      std::set<int64_t> seen;
      for (size_t i = 0; i < s.size(); ++i) {
        DD2_ASSIGN_OR_RETURN(int64_t v, c.Int(s[i], absl::StrCat("sweep.seeds[", i, "]"), 0, 2147483647));
        if (!seen.insert(v).second) return c.Error(s[i].Mark(), absl::StrCat("sweep.seeds[", i, "]"), "duplicate seed");
        seeds.push_back(v);
      }
    } else {
      DD2_ASSIGN_OR_RETURN(int64_t n, c.Int(s, "sweep.seeds", 1, 1000000));
      for (int64_t i = 0; i < n && i <= max_points; ++i) seeds.push_back(i);
      if (n > max_points) {
        return c.Error(s.Mark(), "sweep.seeds",
                       absl::StrCat("sweep expands to at least ", n, " points, more than sweep.max_points (", max_points, ")"));
      }
    }
  }
  if (groups.empty() && seeds.empty()) {
    return c.Error(sweep.Mark(), "sweep", "expected at least one of grid, zip, random or seeds");
  }
  // No key swept twice.
  std::map<std::string, YAML::Mark> swept;
  for (const auto& g : groups) {
    for (const auto& a : g.axes) {
      if (!swept.emplace(a.key, a.mark).second) {
        return c.Error(a.mark, "sweep." + a.key, "this key is already swept elsewhere in the sweep block");
      }
    }
  }
  // The bound, before anything is expanded.
  double count = seeds.empty() ? 1.0 : static_cast<double>(seeds.size());
  for (const auto& g : groups) count *= static_cast<double>(g.rows.size());
  if (count > static_cast<double>(max_points)) {
    return c.Error(sweep.Mark(), "sweep",
                   absl::StrFormat("sweep expands to %.0f points, more than sweep.max_points (%d); narrow it or raise "
                                   "sweep.max_points",
                                   count, max_points));
  }
  // Base points: one per combination of the groups' rows.
  const size_t combos = static_cast<size_t>(count) / (seeds.empty() ? 1 : seeds.size());
  std::vector<proto::RunSpec> bases;
  std::vector<Json> base_values;
  for (size_t i = 0; i < combos; ++i) {
    YAML::Node root = YAML::Load(yaml);
    root.remove("sweep");
    Json values = Json::object();
    size_t rest = i;
    std::vector<size_t> pick(groups.size());
    for (size_t g = groups.size(); g-- > 0;) {  // the last group varies fastest
      pick[g] = rest % groups[g].rows.size();
      rest /= groups[g].rows.size();
    }
    for (size_t g = 0; g < groups.size(); ++g) {
      for (size_t a = 0; a < groups[g].axes.size(); ++a) {
        const YAML::Node& v = groups[g].rows[pick[g]][a];
        DD2_RETURN_IF_ERROR(ApplyAxis(root, groups[g].axes[a], v, c));
        values[groups[g].axes[a].key] = NodeToJson(v);
      }
    }
    auto spec = ParseRunSpecNode(root, source);
    if (!spec.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec.status().message(), " (sweep point ", i + 1, ": ", ValuesText(values), ")"));
    }
    bases.push_back(*std::move(spec));
    base_values.push_back(values);
  }
  proto::SweepSpec out;
  out.set_name(bases[0].name());
  out.set_source(source);
  for (const auto& g : groups) {
    for (const auto& a : g.axes) out.add_keys(a.key);
  }
  if (!seeds.empty()) out.add_keys("seed");
  // Replicates: the seed of the jobs that differ between points (all jobs when only seeds vary).
  std::set<std::string> seeded = DifferingJobs(bases);
  if (seeded.empty()) {
    for (const auto& j : bases[0].jobs()) seeded.insert(j.name());
  }
  std::map<std::string, size_t> identities;
  for (size_t b = 0; b < bases.size(); ++b) {
    for (size_t s = 0; s < std::max<size_t>(1, seeds.size()); ++s) {
      proto::RunSpec spec = bases[b];
      Json values = base_values[b];
      if (!seeds.empty()) {
        values["seed"] = seeds[s];
        for (auto& job : *spec.mutable_jobs()) {
          const JobTypeSpec* type = FindJobType(job.type());
          bool has_seed = false;
          for (const auto& p : type->params) has_seed = has_seed || p.name == "seed";
          if (!seeded.count(job.name()) || !has_seed) continue;
          Json params = Json::parse(job.params_json());
          params["seed"] = seeds[s];
          job.set_params_json(params.dump());
        }
      }
      proto::SweepPoint* p = out.add_points();
      p->set_identity(PointIdentity(spec));
      p->set_values_json(values.dump());
      auto [it, fresh] = identities.emplace(p->identity(), out.points_size());
      if (!fresh) {
        return c.Error(sweep.Mark(), "sweep",
                       absl::StrCat("points ", it->second, " and ", out.points_size(),
                                    " resolve to the same run (", ValuesText(values), "); remove the repeated value"));
      }
      *p->mutable_spec() = std::move(spec);
    }
  }
  if (const YAML::Node es = sweep["early_stop"]) {
    DD2_RETURN_IF_ERROR(ParseEarlyStop(c, es, bases[0], *out.mutable_early_stop()));
  }
  if (const YAML::Node obj = sweep["objective"]) {
    DD2_RETURN_IF_ERROR(ParseObjective(c, obj, bases[0], *out.mutable_objective()));
  } else if (doc["pipeline"]) {
    out.mutable_objective()->set_job("eval-dd2");
    out.mutable_objective()->set_metric("fid");
    out.mutable_objective()->set_mode("min");
  }
  return out;
}

}  // namespace

std::string PointIdentity(const proto::RunSpec& spec) { return Sha256Hex(SpecJson(spec).dump()); }

absl::StatusOr<proto::SweepSpec> ParseSweep(const std::string& yaml, const std::string& source) {
  try {
    return ExpandSweep(yaml, source);
  } catch (const YAML::Exception& e) {
    return YamlChecker(source).Error(e.mark, "", absl::StrCat("YAML error: ", e.msg));
  }
}

absl::StatusOr<Submission> LoadSubmission(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ":1:1: cannot open the file"));
  DD2_ASSIGN_OR_RETURN(YAML::Node doc, LoadYaml(*text, path));
  Submission out;
  if (doc.IsMap() && doc["sweep"]) {
    DD2_ASSIGN_OR_RETURN(out.sweep, ParseSweep(*text, path));
  } else {
    DD2_ASSIGN_OR_RETURN(out.run, ParseRunSpecNode(doc, path));
  }
  return out;
}

}  // namespace dd2
