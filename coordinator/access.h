// Who may send what to the coordinator: a pure policy over a peer's role (common/curve_keys.h)
// and a message's kind. worker: the worker messages (Hello .. AttemptResumed). client: submit,
// query and cancel (every request but ShutdownRequest). admin: a client that may also shut the
// coordinator down. local (a keyless coordinator on loopback): worker and client messages, no
// shutdown. coordinator and revoked (a key removed while connected): nothing. Kinds the
// coordinator never accepts are left to its handler, which refuses them as malformed.
#ifndef DD2_COORDINATOR_ACCESS_H_
#define DD2_COORDINATOR_ACCESS_H_

#include <string>

#include "common/curve_keys.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

bool MayPeerSend(Role role, proto::Envelope::BodyCase kind);

// Why `role` may not send `kind`, for the Error reply: names both and who may.
std::string AccessDeniedMessage(Role role, proto::Envelope::BodyCase kind);

}  // namespace dd2

#endif  // DD2_COORDINATOR_ACCESS_H_
