#include "coordinator/access.h"

#include "absl/strings/str_cat.h"

namespace dd2 {
namespace {

using Kind = proto::Envelope::BodyCase;

bool WorkerMessage(Kind k) {
  switch (k) {
    case proto::Envelope::kHello:
    case proto::Envelope::kHeartbeat:
    case proto::Envelope::kAttemptStarted:
    case proto::Envelope::kProgress:
    case proto::Envelope::kLogChunk:
    case proto::Envelope::kAttemptFinished:
    case proto::Envelope::kCheckpointCommitted:
    case proto::Envelope::kAttemptResumed:
      return true;
    default:
      return false;
  }
}

bool ClientRequest(Kind k) {
  switch (k) {
    case proto::Envelope::kSubmit:
    case proto::Envelope::kStatus:
    case proto::Envelope::kJobs:
    case proto::Envelope::kLogs:
    case proto::Envelope::kCancel:
    case proto::Envelope::kWorkers:
    case proto::Envelope::kCheckpoints:
    case proto::Envelope::kSweepSubmit:
    case proto::Envelope::kSweeps:
    case proto::Envelope::kCompare:
    case proto::Envelope::kMetrics:
    case proto::Envelope::kSlurmRecord:
    case proto::Envelope::kSlurmList:
      return true;
    default:
      return false;
  }
}

std::string KindName(Kind k) {
  const auto* field = proto::Envelope::descriptor()->FindFieldByNumber(static_cast<int>(k));
  return field != nullptr ? field->message_type()->name() : absl::StrCat("message type ", static_cast<int>(k));
}

}  // namespace

bool MayPeerSend(Role role, Kind kind) {
  const bool shutdown = kind == proto::Envelope::kShutdown;
  if (!WorkerMessage(kind) && !ClientRequest(kind) && !shutdown) return true;  // refused by the handler
  switch (role) {
    case Role::kWorker: return WorkerMessage(kind);
    case Role::kClient: return ClientRequest(kind);
    case Role::kAdmin: return ClientRequest(kind) || shutdown;
    case Role::kLocal: return !shutdown;
    case Role::kCoordinator: return false;
  }
  return false;
}

std::string AccessDeniedMessage(Role role, Kind kind) {
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
