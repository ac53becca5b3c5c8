// libFuzzer target: the coordinator's HTTP request handling. An input is the bytes a client
// sends; Beast's parser takes them with the server's limits (headers up to 8 KiB, no body), and
// a request it accepts is answered by the routes (http_api.h) over a small snapshot with a run,
// its job and a checkpoint, as the HTTP thread does. Seeds: tests/fuzz/corpus/http.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "coordinator/http_api.h"

namespace {

namespace http = boost::beast::http;

const dd2::CoordinatorSnapshot& Snapshot() {
  static const dd2::CoordinatorSnapshot s = [] {
    dd2::CoordinatorSnapshot snap;
    snap.state.runs["r-1"] = dd2::RunRecord{"r-1", "sub", "r", "", "running", 0, 1, 1, 0};
    dd2::JobRecord job;
    job.id = "r-1/a";
    job.run_id = "r-1";
    job.name = "a";
    job.type = "distill";
    job.state = "running";
    snap.state.jobs[job.id] = job;
    snap.state.jobs_by_run["r-1"] = {job.id};
    snap.state.latest_metrics[job.id] = {{"loss", 0.5}, {"quote\"key\\", 1.0}};
    snap.state.checkpoints[job.id][100] =
        dd2::CheckpointRecord{"r-1", job.id, "r-1/a#1", 100, "/nonexistent/step.pt", std::string(64, 'a'), 1, "committed", 1, "{}"};
    snap.artifacts_root = "/nonexistent";
    return snap;
  }();
  return s;
}

const std::string& Dashboard() {
  static const std::string dir = [] {
    std::string d = (std::filesystem::temp_directory_path() / "dd2-http-fuzz-XXXXXX").string();
    d = ::mkdtemp(d.data());
    std::filesystem::create_directories(d + "/assets");
    std::ofstream(d + "/index.html") << "<html></html>";
    std::ofstream(d + "/assets/app.js") << "//";
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  http::request_parser<http::empty_body> parser;
  parser.header_limit(8192);
  parser.body_limit(0);
  parser.eager(true);
  boost::beast::error_code ec;
  size_t used = 0;
  while (used < size && !ec && !parser.is_done()) {
    const size_t n = parser.put(boost::asio::buffer(data + used, size - used), ec);
    if (n == 0 && !ec) break;
    used += n;
  }
  if (ec || !parser.is_done()) return 0;
  const auto& req = parser.get();
  dd2::MetricSeries series = [](const std::string&) -> absl::StatusOr<std::vector<dd2::MetricRecord>> {
    return std::vector<dd2::MetricRecord>{{"r-1", "r-1/a", "loss", 1, 0.5, 1}};
  };
  dd2::HttpReply reply = dd2::Route(Snapshot(), std::string(req.method_string()), std::string(req.target()), series,
                                    Dashboard());
  if (reply.status < 200 || reply.status > 599) __builtin_trap();
  return 0;
}
