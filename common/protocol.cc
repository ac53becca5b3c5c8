#include "common/protocol.h"

#include "absl/strings/str_cat.h"

namespace dd2 {

std::string EncodeEnvelope(proto::Envelope env) {
  env.set_magic(kMagic);
  if (env.version() == 0) env.set_version(kProtocolVersion);
  return env.SerializeAsString();
}

absl::StatusOr<proto::Envelope> DecodeEnvelope(std::string_view frame) {
  proto::Envelope env;
  if (!env.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame of ", frame.size(), " bytes is not a dd2 envelope"));
  }
  if (env.magic() != kMagic) {
    return absl::InvalidArgumentError(absl::StrCat("bad magic 0x", absl::Hex(env.magic())));
  }
  if (env.body_case() == proto::Envelope::BODY_NOT_SET) {
    return absl::InvalidArgumentError("envelope has no body");
  }
  return env;
}

absl::Status CheckVersion(const proto::Envelope& env) {
  if (env.version() == kProtocolVersion) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("protocol version mismatch: peer speaks version ", env.version(),
                   ", this coordinator speaks version ", kProtocolVersion,
                   "; upgrade the older side"));
}

proto::Envelope ErrorReply(const proto::Envelope& request, const absl::Status& status) {
  proto::Envelope reply;
  reply.set_request_id(request.request_id());
  reply.mutable_error()->set_code(static_cast<int>(status.code()));
  reply.mutable_error()->set_message(std::string(status.message()));
  return reply;
}

absl::Status StatusFromReply(const proto::Envelope& reply) {
  if (!reply.has_error()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(reply.error().code()), reply.error().message());
}

}  // namespace dd2
