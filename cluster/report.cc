#include "cluster/report.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cluster/ctl_output.h"
#include "common/home.h"
#include "common/process.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;

struct Series {
  std::string label;
  std::vector<std::array<double, 3>> xyz;  // x, y, error (0: none)
};

struct Plot {
  std::string file;  // stem, without .png
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
  bool errorbars = false;
};

std::string Stem(std::string s) {
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '_';
  }
  return s;
}

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string ValueText(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return absl::StrFormat("%.4g", v.get<double>());
  return v.dump();
}

std::string ValuesLabel(const Json& values, const std::string& fallback) {
  if (!values.is_object() || values.empty()) return fallback;
  std::vector<std::string> parts;
  for (auto& [k, v] : values.items()) {
    const size_t dot = k.rfind('.');
    parts.push_back(absl::StrCat(dot == std::string::npos ? k : k.substr(dot + 1), "=", ValueText(v)));
  }
  return absl::StrJoin(parts, " ");
}

// Writes the plot's data and script and runs gnuplot on it.
absl::Status Draw(const std::string& dir, const Plot& p) {
  const std::string dat = absl::StrCat(dir, "/", p.file, ".dat");
  const std::string gp = absl::StrCat(dir, "/", p.file, ".gp");
  std::ofstream d(dat);
  for (const auto& s : p.series) {
    d << "# " << s.label << "\n";
    for (const auto& [x, y, e] : s.xyz) d << absl::StrFormat("%.10g %.10g %.10g\n", x, y, e);
    d << "\n\n";
  }
  d.close();
  double xmin = INFINITY, xmax = -INFINITY;
  for (const auto& s : p.series) {
    for (const auto& v : s.xyz) {
      xmin = std::min(xmin, v[0]);
      xmax = std::max(xmax, v[0]);
    }
  }
  std::ofstream g(gp);
  g << "set terminal pngcairo noenhanced size 960,600 font \"DejaVu Sans,12\"\n"
    << "set output " << Quote(absl::StrCat(dir, "/", p.file, ".png")) << "\n"
    << "set title " << Quote(p.title) << "\n"
    << "set xlabel " << Quote(p.xlabel) << "\nset ylabel " << Quote(p.ylabel) << "\n"
    << "set grid\nset key outside right top box\nset border 3\nset tics nomirror\nset offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05\n";
  if (p.errorbars && xmin > 0 && xmax / xmin >= 4) g << "set logscale x 2\n";
  std::vector<std::string> parts;
  for (size_t i = 0; i < p.series.size(); ++i) {
    parts.push_back(absl::StrCat(Quote(dat), " index ", i, p.errorbars ? " using 1:2:3 with yerrorlines" : " using 1:2 with linespoints",
                                 " lw 2 pt 7 ps 0.8 title ", Quote(p.series[i].label)));
  }
  g << "plot " << absl::StrJoin(parts, ", \\\n     ") << "\n";
  g.close();
  auto r = RunCommand({"gnuplot", gp}, "", 120000);
  if (absl::IsNotFound(r.status())) {
    return absl::FailedPreconditionError("gnuplot not found; install it with ops/install-deps.sh (gnuplot-nox)");
  }
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) return absl::InternalError(absl::StrCat("gnuplot failed on ", gp, ": ", r->err));
  return absl::OkStatus();
}

struct RunData {
  std::string id, label;
  Json status;       // StatusDocument's run
  Json metrics;      // MetricsRequest rows
  Json checkpoints;  // CheckpointsDocument's list
};

absl::StatusOr<RunData> FetchRun(CoordinatorClient& client, const std::string& run_id, const std::string& label) {
  RunData r{run_id, label, {}, {}, {}};
  proto::Envelope st;
  st.mutable_status()->set_run_id(run_id);
  auto s = CallJson(client, st);
  if (!s.ok()) return s.status();
  r.status = (*s)["run"];
  proto::Envelope m;
  m.mutable_metrics()->set_run_id(run_id);
  auto mm = CallJson(client, m);
  if (!mm.ok()) return mm.status();
  r.metrics = (*mm)["metrics"];
  proto::Envelope c;
  c.mutable_checkpoints()->set_run_id(run_id);
  auto cc = CallJson(client, c);
  if (!cc.ok()) return cc.status();
  r.checkpoints = (*cc)["checkpoints"];
  return r;
}

// Training metrics (not evals'), each (job, key) a plot with a line per run.
std::vector<Plot> TrainingPlots(const std::vector<RunData>& runs) {
  std::map<std::pair<std::string, std::string>, Plot> plots;
  for (const auto& r : runs) {
    std::set<std::string> evals;
    for (const auto& j : r.status["jobs"]) {
      if (j["type"] == "eval") evals.insert(j["name"]);
    }
    std::map<std::pair<std::string, std::string>, Series> mine;
    for (const auto& m : r.metrics) {
      if (evals.count(m["job"])) continue;
      auto& s = mine[{m["job"], m["key"]}];
      s.label = r.label;
      s.xyz.push_back({m["step"].get<double>(), m["value"].get<double>(), 0});
    }
    for (auto& [key, s] : mine) {
      if (s.xyz.size() < 2) continue;
      Plot& p = plots[key];
      p.file = Stem(absl::StrCat("training-", key.first, "-", key.second));
      p.title = absl::StrCat(key.second, " of ", key.first, " during training");
      p.xlabel = "step";
      p.ylabel = key.second;
      p.series.push_back(std::move(s));
    }
  }
  std::vector<Plot> out;
  for (auto& [k, p] : plots) out.push_back(std::move(p));
  return out;
}

// Metrics of committed checkpoints (reported with them, or by their evals) against step.
std::vector<Plot> CheckpointPlots(const std::vector<RunData>& runs) {
  std::map<std::pair<std::string, std::string>, Plot> plots;
  for (const auto& r : runs) {
    std::map<std::pair<std::string, std::string>, Series> mine;
    for (const auto& c : r.checkpoints) {
      if (!c["metrics"].is_object()) continue;
      for (auto& [k, v] : c["metrics"].items()) {
        if (!v.is_number()) continue;
        auto& s = mine[{c["job"], k}];
        s.label = r.label;
        s.xyz.push_back({c["step"].get<double>(), v.get<double>(), 0});
      }
    }
    for (auto& [key, s] : mine) {
      if (s.xyz.size() < 2) continue;
      Plot& p = plots[key];
      p.file = Stem(absl::StrCat("checkpoint-", key.first, "-", key.second));
      p.title = absl::StrCat(key.second, " of ", key.first, "'s committed checkpoints");
      p.xlabel = absl::StrCat(key.first, " step");
      p.ylabel = key.second;
      p.series.push_back(std::move(s));
    }
  }
  std::vector<Plot> out;
  for (auto& [k, p] : plots) out.push_back(std::move(p));
  return out;
}

// The final metric against each numeric swept key: mean ± std over seeds, a line per setting
// of the other keys.
std::vector<Plot> FinalPlots(const Json& sweep) {
  std::vector<Plot> out;
  std::vector<std::string> keys;
  for (const auto& k : sweep["keys"]) {
    if (k != "seed") keys.push_back(k);
  }
  std::set<std::string> metrics;
  for (const auto& g : sweep["grouped"]) {
    for (auto& [m, st] : g["final"].items()) metrics.insert(m);
  }
  const std::string job = sweep["objective"].value("job", "");
  for (const auto& key : keys) {
    for (const auto& metric : metrics) {
      Plot p;
      p.file = Stem(absl::StrCat("final-", metric, "-vs-", key));
      p.title = absl::StrCat(metric, " of ", job, " against ", key, " (mean ± std over seeds)");
      p.xlabel = key;
      p.ylabel = metric;
      p.errorbars = true;
      std::map<std::string, Series> by_rest;
      for (const auto& g : sweep["grouped"]) {
        if (!g["values"].contains(key) || !g["values"][key].is_number() || !g["final"].contains(metric)) continue;
        Json rest = g["values"];
        rest.erase(key);
        auto& s = by_rest[rest.dump()];
        s.label = rest.empty() ? metric : ValuesLabel(rest, metric);
        s.xyz.push_back({g["values"][key].get<double>(), g["final"][metric]["mean"].get<double>(),
                         g["final"][metric]["std"].get<double>()});
      }
      for (auto& [r, s] : by_rest) {
        std::sort(s.xyz.begin(), s.xyz.end());
        if (!s.xyz.empty()) p.series.push_back(std::move(s));
      }
      if (!p.series.empty()) out.push_back(std::move(p));
    }
  }
  return out;
}

std::string Cell(const Json& v) { return v.is_number() ? absl::StrFormat("%.4g", v.get<double>()) : "-"; }

}  // namespace

int Report(CoordinatorClient& client, const std::string& target, const std::string& out_dir, bool json) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return Fail(absl::InvalidArgumentError(absl::StrCat("cannot create ", out_dir, ": ", ec.message())));
  const std::string dir = std::filesystem::absolute(out_dir).string();
  proto::Envelope sreq;
  sreq.mutable_sweeps()->set_sweep_id(target);
  auto sweep_doc = CallJson(client, sreq);
  const bool is_sweep = sweep_doc.ok();
  if (!is_sweep && !absl::IsNotFound(sweep_doc.status())) return Fail(sweep_doc.status());
  Json sweep = is_sweep ? (*sweep_doc)["sweep"] : Json();
  std::vector<RunData> runs;
  if (is_sweep) {
    for (const auto& p : sweep["point_rows"]) {
      auto r = FetchRun(client, p["run"], absl::StrCat("#", p["number"].get<int64_t>(), " ", ValuesLabel(p["values"], "")));
      if (!r.ok()) return Fail(r.status());
      runs.push_back(*std::move(r));
    }
  } else {
    auto r = FetchRun(client, target, target);
    if (!r.ok()) return Fail(absl::Status(r.status().code(), absl::StrCat("no sweep or run '", target, "': ", r.status().message())));
    runs.push_back(*std::move(r));
  }
  std::vector<Plot> finals = is_sweep ? FinalPlots(sweep) : std::vector<Plot>{};
  std::vector<Plot> checkpoints = CheckpointPlots(runs);
  std::vector<Plot> training = TrainingPlots(runs);
  std::vector<std::string> images;
  for (auto* group : {&finals, &checkpoints, &training}) {
    for (const auto& p : *group) {
      if (absl::Status st = Draw(dir, p); !st.ok()) return Fail(st);
      images.push_back(p.file + ".png");
    }
  }
  // report.md
  std::string md;
  if (is_sweep) {
    absl::StrAppend(&md, "# Sweep ", sweep["id"].get<std::string>(), " (", sweep["name"].get<std::string>(), ")\n\n",
                    "Source `", sweep["source"].get<std::string>(), "`, ", sweep["points"].get<int64_t>(), " points, ",
                    sweep["state"].get<std::string>(), ". Objective: ", sweep["objective"].value("metric", "-"), " of ",
                    sweep["objective"].value("job", "-"), " (", sweep["objective"].value("mode", "min"),
                    "); the best finished point is marked *.\n\n");
    std::vector<std::string> keys;
    for (const auto& k : sweep["keys"]) keys.push_back(k);
    std::set<std::string> metric_set;
    for (const auto& p : sweep["point_rows"]) {
      for (auto& [k, v] : p["final"].items()) {
        if (v.is_number()) metric_set.insert(k);
      }
    }
    std::vector<std::string> metrics(metric_set.begin(), metric_set.end());
    absl::StrAppend(&md, "## Points\n\n| # | ", absl::StrJoin(keys, " | "), " | state | ", absl::StrJoin(metrics, " | "),
                    " | run |\n|", std::string(""), absl::StrJoin(std::vector<std::string>(keys.size() + metrics.size() + 3, "---"), "|"),
                    "|\n");
    for (const auto& p : sweep["point_rows"]) {
      std::vector<std::string> cells = {absl::StrCat(p["number"].get<int64_t>(), p["best"].get<bool>() ? " *" : "")};
      for (const auto& k : keys) cells.push_back(p["values"].contains(k) ? ValueText(p["values"][k]) : "-");
      std::string state = p["state"];
      if (!p["stopped_at_rung"].is_null()) absl::StrAppend(&state, " (stopped at step ", p["stopped_at_rung"].get<int64_t>(), ")");
      cells.push_back(state);
      for (const auto& m : metrics) cells.push_back(Cell(p["final"].value(m, Json())));
      cells.push_back(p["run"]);
      absl::StrAppend(&md, "| ", absl::StrJoin(cells, " | "), " |\n");
    }
    absl::StrAppend(&md, "\n## Over seeds (mean ± std of finished points)\n\n| setting | n | ", absl::StrJoin(metrics, " | "), " |\n|",
                    absl::StrJoin(std::vector<std::string>(metrics.size() + 2, "---"), "|"), "|\n");
    for (const auto& g : sweep["grouped"]) {
      int64_t n = 0;
      for (auto& [k, st] : g["final"].items()) n = std::max(n, st["n"].get<int64_t>());
      std::vector<std::string> cells = {ValuesLabel(g["values"], "-"), std::to_string(n)};
      for (const auto& m : metrics) {
        cells.push_back(g["final"].contains(m) ? absl::StrFormat("%.4g ± %.2g", g["final"][m]["mean"].get<double>(),
                                                                 g["final"][m]["std"].get<double>())
                                               : "-");
      }
      absl::StrAppend(&md, "| ", absl::StrJoin(cells, " | "), " |\n");
    }
  } else {
    const Json& run = runs[0].status;
    absl::StrAppend(&md, "# Run ", run["id"].get<std::string>(), " (", run["name"].get<std::string>(), ")\n\nState ",
                    run["state"].get<std::string>(), ".\n\n| job | type | state | metrics |\n|---|---|---|---|\n");
    for (const auto& j : run["jobs"]) {
      absl::StrAppend(&md, "| ", j["name"].get<std::string>(), " | ", j["type"].get<std::string>(), " | ",
                      j["state"].get<std::string>(), j.value("reused_from", "").empty() ? "" : " (reused)", " | ",
                      MetricsText(j["metrics"]), " |\n");
    }
  }
  auto section = [&](const char* title, const std::vector<Plot>& plots) {
    if (plots.empty()) return;
    absl::StrAppend(&md, "\n## ", title, "\n\n");
    for (const auto& p : plots) absl::StrAppend(&md, "![", p.title, "](", p.file, ".png)\n\n");
  };
  section("Final metrics against the swept keys", finals);
  section("Metrics of committed checkpoints", checkpoints);
  section("Training metrics", training);
  if (absl::Status st = WriteFileAtomic(dir + "/report.md", md); !st.ok()) return Fail(st);
  if (json) {
    std::printf("%s\n", Json{{"target", target}, {"report", dir + "/report.md"}, {"images", images}}.dump().c_str());
  } else {
    std::printf("wrote %s/report.md and %zu plot(s)\n", dir.c_str(), images.size());
  }
  return kExitOk;
}

}  // namespace dd2
