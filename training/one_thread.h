// RunOnThisThreadOnly: makes the calling thread's LibTorch ops and OpenBLAS calls run on it
// alone (its own OpenMP thread count set to 1; other threads keep theirs), for threads that
// split work among themselves: the distillation's batch parts, the fused sampler's row parts.
#ifndef DD2_TRAINING_ONE_THREAD_H_
#define DD2_TRAINING_ONE_THREAD_H_

namespace dd2 {

void RunOnThisThreadOnly();

}  // namespace dd2

#endif  // DD2_TRAINING_ONE_THREAD_H_
