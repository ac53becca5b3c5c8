#include "training/one_thread.h"

#include <omp.h>

#include <ATen/Parallel.h>

namespace dd2 {

void RunOnThisThreadOnly() {
  // LibTorch sets a new thread's OpenMP count to the process's on the thread's first query
  // (once); after that, ours holds. Left at the process's count, such threads open OpenMP teams
  // of their own, and libgomp, seeing more threads than cores, puts every team to sleep between
  // regions (LibTorch's ops at 2 threads ran 5x slower so). at::set_num_threads would also
  // change the process's count and rebuild LibTorch's thread pools.
  at::get_num_threads();
  omp_set_num_threads(1);
}

}  // namespace dd2
