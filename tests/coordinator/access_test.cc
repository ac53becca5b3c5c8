#include "coordinator/access.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zmq.h>

#include "coordinator/zap_handler.h"

namespace dd2 {
namespace {

using E = proto::Envelope;

TEST(AccessTest, EachRoleMaySendItsOwnMessagesOnly) {
  const std::vector<E::BodyCase> worker = {E::kHello, E::kHeartbeat, E::kAttemptStarted, E::kProgress, E::kLogChunk,
                                           E::kAttemptFinished, E::kCheckpointCommitted, E::kAttemptResumed};
  const std::vector<E::BodyCase> client = {E::kSubmit, E::kStatus, E::kJobs, E::kLogs, E::kCancel, E::kWorkers,
                                           E::kCheckpoints, E::kSweepSubmit, E::kSweeps, E::kCompare, E::kMetrics,
                                           E::kSlurmRecord, E::kSlurmList};
  // Allowed for worker, client, admin, local, coordinator.
  auto check = [](const std::vector<E::BodyCase>& kinds, std::vector<bool> allowed) {
    const std::vector<Role> roles = {Role::kWorker, Role::kClient, Role::kAdmin, Role::kLocal, Role::kCoordinator};
    for (auto k : kinds) {
      for (size_t r = 0; r < roles.size(); ++r) EXPECT_EQ(MayPeerSend(roles[r], k), allowed[r]) << k << " " << r;
    }
  };
  check(worker, {true, false, false, true, false});
  check(client, {false, true, true, true, false});
  for (Role r : {Role::kWorker, Role::kClient, Role::kLocal, Role::kCoordinator}) {
    EXPECT_FALSE(MayPeerSend(r, E::kShutdown)) << RoleName(r);
  }
  EXPECT_TRUE(MayPeerSend(Role::kAdmin, E::kShutdown));
  EXPECT_THAT(AccessDeniedMessage(Role::kClient, E::kShutdown),
              ::testing::StrEq("a client peer may not send ShutdownRequest; it needs an admin key"));
  EXPECT_THAT(AccessDeniedMessage(Role::kLocal, E::kShutdown), ::testing::HasSubstr("dd2ctl down"));
}

std::vector<std::string> Request(const std::string& mechanism, const std::string& z85_key) {
  std::string binary(32, '\0');
  if (!z85_key.empty()) zmq_z85_decode(reinterpret_cast<uint8_t*>(binary.data()), z85_key.c_str());
  return {"1.0", "7", "dd2", "127.0.0.1", "", mechanism, binary};
}

TEST(ZapReplyTest, OnlyAuthorizedCurveKeysAreAcceptedWithTheKeyAsUserId) {
  auto listed = *GenerateKeyPair(Role::kClient), other = *GenerateKeyPair(Role::kClient);
  const std::map<std::string, AuthorizedKey> keys = {{listed.public_key, {"alice", Role::kClient}}};
  auto ok = ZapReply(Request("CURVE", listed.public_key), keys);
  EXPECT_EQ(ok, (std::vector<std::string>{"1.0", "7", "200", "OK", listed.public_key, ""}));
  EXPECT_EQ(ZapReply(Request("CURVE", other.public_key), keys)[2], "400");
  EXPECT_EQ(ZapReply({"1.0", "7", "dd2", "127.0.0.1", "", "NULL"}, keys)[2], "400");
  EXPECT_EQ(ZapReply({"1.0", "7", "dd2", "127.0.0.1", "", "PLAIN", "user", "pass"}, keys)[2], "400");
  auto bad = ZapReply({"2.0", "9"}, keys);
  EXPECT_EQ(bad[1], "9");
  EXPECT_EQ(bad[2], "500");
  auto short_key = Request("CURVE", listed.public_key);
  short_key[6].resize(31);
  EXPECT_EQ(ZapReply(short_key, keys)[2], "400");
}

}  // namespace
}  // namespace dd2
