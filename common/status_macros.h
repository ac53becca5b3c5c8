// DD2_RETURN_IF_ERROR and DD2_ASSIGN_OR_RETURN for absl::Status / absl::StatusOr (our Abseil,
// 20220623, has no status_macros.h), and DD2_CHECK for invariants whose violation is a bug.
#ifndef DD2_COMMON_STATUS_MACROS_H_
#define DD2_COMMON_STATUS_MACROS_H_

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DD2_RETURN_IF_ERROR(expr)                  \
  do {                                             \
    ::absl::Status dd2_status_ = (expr);           \
    if (!dd2_status_.ok()) return dd2_status_;     \
  } while (0)

#define DD2_CONCAT_INNER_(a, b) a##b
#define DD2_CONCAT_(a, b) DD2_CONCAT_INNER_(a, b)
#define DD2_ASSIGN_OR_RETURN(lhs, expr) \
  DD2_ASSIGN_OR_RETURN_IMPL_(DD2_CONCAT_(dd2_statusor_, __LINE__), lhs, expr)
#define DD2_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#define DD2_CHECK(cond)                                                        \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: DD2_CHECK failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                     \
      std::abort();                                                            \
    }                                                                          \
  } while (0)

#endif  // DD2_COMMON_STATUS_MACROS_H_
