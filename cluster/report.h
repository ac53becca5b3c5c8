// dd2ctl report: PNG plots and report.md for a sweep or a run, from the coordinator's documents
// (metrics table, checkpoint metrics, sweep points). Plots are drawn by gnuplot (Debian's
// gnuplot-nox, pngcairo terminal), run as a child process without a shell; the data files and
// scripts stay beside the images so a plot can be redrawn or restyled by hand.
#ifndef DD2_CLUSTER_REPORT_H_
#define DD2_CLUSTER_REPORT_H_

#include <string>

#include "common/client.h"

namespace dd2 {

// Writes into `out_dir`: training-*.png (each metric against step, a line per point),
// checkpoint-*.png (metrics of committed checkpoints, e.g. FID of periodic evals), for a sweep
// final-*.png (the final metric against each swept key, error bars over seeds), and report.md
// with the tables and every image. Returns the exit code.
int Report(CoordinatorClient& client, const std::string& target, const std::string& out_dir, bool json);

}  // namespace dd2

#endif  // DD2_CLUSTER_REPORT_H_
