#include "coordinator/access.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace dd2 {
namespace {

using Kind = proto::Envelope::BodyCase;

bool WorkerMessage(Kind k) {
  static const std::set<Kind> kinds = {
      proto::Envelope::kHello,          proto::Envelope::kHeartbeat,       proto::Envelope::kAttemptStarted,
      proto::Envelope::kProgress,       proto::Envelope::kLogChunk,        proto::Envelope::kAttemptFinished,
      proto::Envelope::kCheckpointCommitted, proto::Envelope::kAttemptResumed};
  return kinds.count(k) > 0;
}

bool ClientRequest(Kind k) {
  static const std::set<Kind> kinds = {
      proto::Envelope::kSubmit,  proto::Envelope::kStatus,      proto::Envelope::kJobs,
      proto::Envelope::kLogs,    proto::Envelope::kCancel,      proto::Envelope::kWorkers,
      proto::Envelope::kCheckpoints, proto::Envelope::kSweepSubmit, proto::Envelope::kSweeps,
      proto::Envelope::kCompare, proto::Envelope::kMetrics,     proto::Envelope::kSlurmRecord,
      proto::Envelope::kSlurmList};
  return kinds.count(k) > 0;
}

std::string KindName(Kind k) {
  const auto* field = proto::Envelope::descriptor()->FindFieldByNumber(static_cast<int>(k));
  return field != nullptr ? field->message_type()->name() : absl::StrCat("message type ", static_cast<int>(k));
}

}  // namespace

bool MayPeerSend(Role role, Kind kind) {
  if (role == Role::kRevoked) return false;
  const bool shutdown = kind == proto::Envelope::kShutdown;
  if (!WorkerMessage(kind) && !ClientRequest(kind) && !shutdown) return true;  // refused by the handler
  switch (role) {
    case Role::kWorker: return WorkerMessage(kind);
    case Role::kClient: return ClientRequest(kind);
    case Role::kAdmin: return ClientRequest(kind) || shutdown;
    case Role::kLocal: return !shutdown;
    case Role::kCoordinator:
    case Role::kRevoked: return false;
  }
  return false;
}

std::string AccessDeniedMessage(Role role, Kind kind) {
  if (role == Role::kRevoked) return "this key was removed from the coordinator's authorized keys";
  std::string who;
  if (kind == proto::Envelope::kShutdown) {
    who = role == Role::kLocal ? "an admin key; a keyless coordinator is stopped by signal (`dd2ctl down` does that)"
                               : "an admin key";
  } else if (WorkerMessage(kind)) {
    who = "a worker key";
  } else {
    who = "a client or admin key";
  }
  return absl::StrCat("a ", RoleName(role), " peer may not send ", KindName(kind), "; it needs ", who);
}

}  // namespace dd2
