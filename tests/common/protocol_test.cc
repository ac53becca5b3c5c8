#include "common/protocol.h"

#include <gtest/gtest.h>

namespace dd2 {
namespace {

TEST(ProtocolTest, RoundTripsAnEnvelope) {
  proto::Envelope env;
  env.set_request_id(7);
  env.mutable_status()->set_run_id("r-1");
  auto decoded = DecodeEnvelope(EncodeEnvelope(env));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->version(), kProtocolVersion);
  EXPECT_EQ(decoded->status().run_id(), "r-1");
  EXPECT_TRUE(CheckVersion(*decoded).ok());
}

TEST(ProtocolTest, RejectsGarbageWrongMagicAndEmptyBody) {
  EXPECT_FALSE(DecodeEnvelope("\xff\xff\xff garbage").ok());
  proto::Envelope env;
  env.mutable_workers();
  env.set_magic(1);
  EXPECT_FALSE(DecodeEnvelope(env.SerializeAsString()).ok());
  proto::Envelope empty;
  EXPECT_FALSE(DecodeEnvelope(EncodeEnvelope(empty)).ok());
}

TEST(ProtocolTest, WrongVersionIsRefusedWithBothVersions) {
  proto::Envelope env;
  env.set_version(kProtocolVersion + 1);
  env.mutable_hello();
  auto decoded = DecodeEnvelope(EncodeEnvelope(env));
  ASSERT_TRUE(decoded.ok());
  absl::Status st = CheckVersion(*decoded);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("version 2"), std::string::npos);
}

}  // namespace
}  // namespace dd2
