// Envelope encoding of the dd2 wire protocol (schemas/dd2.proto, schemas/PROTOCOL.md).
// Pure functions; thread-compatible.
#ifndef DD2_COMMON_PROTOCOL_H_
#define DD2_COMMON_PROTOCOL_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

inline constexpr uint32_t kMagic = 0x50324444;  // "DD2P" little-endian
inline constexpr uint32_t kProtocolVersion = 1;
// Frames larger than this are refused by every socket (ZMQ_MAXMSGSIZE).
inline constexpr int64_t kMaxFrameBytes = 16 << 20;

// Serializes `env` after stamping magic and version.
std::string EncodeEnvelope(proto::Envelope env);

// Parses one frame. InvalidArgument when it is not a protobuf Envelope, carries the wrong
// magic, or has no body. The version is not checked here: see CheckVersion.
absl::StatusOr<proto::Envelope> DecodeEnvelope(std::string_view frame);

// FailedPrecondition naming both versions when `env` speaks another protocol version.
absl::Status CheckVersion(const proto::Envelope& env);

// An Error envelope carrying `status`, replying to `request`.
proto::Envelope ErrorReply(const proto::Envelope& request, const absl::Status& status);

// The status an Error envelope carries (Ok for any other body).
absl::Status StatusFromReply(const proto::Envelope& reply);

}  // namespace dd2

#endif  // DD2_COMMON_PROTOCOL_H_
