#include "common/curve_keys.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/home.h"
#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

using ::testing::HasSubstr;

TEST(CurveKeysTest, KeyFilesRoundTripWithTheSecretPrivate) {
  testing::TempDir dir;
  auto pair = GenerateKeyPair(Role::kWorker);
  ASSERT_TRUE(pair.ok()) << pair.status();
  ASSERT_TRUE(WriteKeyFiles(dir.path(), "w1", *pair).ok());
  struct stat st{};
  ASSERT_EQ(::stat((dir.path() + "/w1.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto secret = ReadSecretKeyFile(dir.path() + "/w1.key");
  ASSERT_TRUE(secret.ok()) << secret.status();
  EXPECT_EQ(secret->role, Role::kWorker);
  EXPECT_EQ(secret->public_key, pair->public_key);
  EXPECT_EQ(secret->secret_key, pair->secret_key);
  auto pub = ReadPublicKeyFile(dir.path() + "/w1.pub");
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(pub->public_key, pair->public_key);
  EXPECT_TRUE(pub->secret_key.empty());
  EXPECT_THAT(*ReadFile(dir.path() + "/w1.pub"), ::testing::Not(HasSubstr(pair->secret_key)));
  // Never overwritten.
  EXPECT_TRUE(absl::IsAlreadyExists(WriteKeyFiles(dir.path(), "w1", *pair)));
  EXPECT_TRUE(absl::IsInvalidArgument(WriteKeyFiles(dir.path(), "../escape", *pair)));
}

TEST(CurveKeysTest, SecretKeyReadableByOthersIsRefused) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteKeyFiles(dir.path(), "c", *GenerateKeyPair(Role::kClient)).ok());
  const std::string path = dir.path() + "/c.key";
  for (mode_t mode : {0640, 0604, 0644}) {
    ::chmod(path.c_str(), mode);
    auto key = ReadSecretKeyFile(path);
    EXPECT_TRUE(absl::IsPermissionDenied(key.status())) << mode;
    EXPECT_THAT(std::string(key.status().message()), HasSubstr("chmod 600 " + path));
  }
  ::chmod(path.c_str(), 0400);
  EXPECT_TRUE(ReadSecretKeyFile(path).ok());
}

TEST(CurveKeysTest, MalformedKeyFilesNameTheFileAndLine) {
  testing::TempDir dir;
  auto pair = *GenerateKeyPair(Role::kAdmin);
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = dir.path() + "/" + name;
    std::ofstream(path) << text;
    ::chmod(path.c_str(), 0600);
    return path;
  };
  struct Case {
    std::string text, expect;
  };
  const std::vector<Case> cases = {
      {"role: admin\npublic: short\n", "bad.key:2: public: expected a 40-character Z85 key"},
      {"role: root\npublic: " + pair.public_key + "\n", "bad.key:1: role 'root' is not one of"},
      {"# comment\nrole admin\n", "bad.key:2: expected `field: value`"},
      {"role: admin\ncolour: blue\n", "bad.key:2: unknown field 'colour'"},
      {"role: admin\npublic: " + pair.public_key + "\n", "no `secret:` line"},
      {"public: " + pair.public_key + "\nsecret: " + pair.secret_key + "\n", "no `role:` line"},
      {"role: admin\npublic: " + GenerateKeyPair(Role::kAdmin)->public_key + "\nsecret: " + pair.secret_key + "\n",
       "the public key is not the secret key's"},
  };
  for (const auto& c : cases) {
    auto key = ReadSecretKeyFile(write("bad.key", c.text));
    EXPECT_TRUE(absl::IsInvalidArgument(key.status())) << c.text;
    EXPECT_THAT(std::string(key.status().message()), HasSubstr(c.expect)) << c.text;
  }
}

TEST(CurveKeysTest, AuthorizedKeysFolderMapsKeysToRolesAndRefusesCoordinatorKeys) {
  testing::TempDir dir;
  auto w = *GenerateKeyPair(Role::kWorker), a = *GenerateKeyPair(Role::kAdmin);
  ASSERT_TRUE(WriteKeyFiles(dir.path() + "/all", "w", w).ok());
  ASSERT_TRUE(WriteKeyFiles(dir.path() + "/all", "a", a).ok());
  std::filesystem::create_directories(dir.path() + "/auth");
  std::filesystem::copy_file(dir.path() + "/all/w.pub", dir.path() + "/auth/w.pub");
  std::filesystem::copy_file(dir.path() + "/all/a.pub", dir.path() + "/auth/a.pub");
  std::ofstream(dir.path() + "/auth/README") << "not a key";
  auto keys = LoadAuthorizedKeys(dir.path() + "/auth");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ(keys->at(w.public_key).role, Role::kWorker);
  EXPECT_EQ(keys->at(w.public_key).name, "w");
  EXPECT_EQ(keys->at(a.public_key).role, Role::kAdmin);
  ASSERT_TRUE(WriteKeyFiles(dir.path() + "/auth", "coord", *GenerateKeyPair(Role::kCoordinator)).ok());
  EXPECT_THAT(std::string(LoadAuthorizedKeys(dir.path() + "/auth").status().message()),
              HasSubstr("coord.pub: a coordinator key cannot be authorized"));
  EXPECT_TRUE(absl::IsNotFound(LoadAuthorizedKeys(dir.path() + "/none").status()));
}

TEST(CurveKeysTest, KeyedHomeIsCreatedOnceAndClientsFindTheirKeysThere) {
  testing::TempDir dir;
  EXPECT_FALSE(*ClientKeys("", "", KeyedHome(dir.path()).ctl_key, KeyedHome(dir.path()).coordinator_pub));
  ASSERT_TRUE(EnsureKeyedHome(dir.path()).ok());
  const KeyedHomePaths k = KeyedHome(dir.path());
  const std::string before = *ReadFile(k.coordinator_key);
  ASSERT_TRUE(EnsureKeyedHome(dir.path()).ok());
  EXPECT_EQ(*ReadFile(k.coordinator_key), before);  // kept
  auto authorized = LoadAuthorizedKeys(k.authorized);
  ASSERT_TRUE(authorized.ok());
  EXPECT_EQ(authorized->size(), 2u);
  auto ctl = ClientKeys("", "", k.ctl_key, k.coordinator_pub);
  ASSERT_TRUE(ctl.ok() && ctl->has_value());
  EXPECT_EQ((*ctl)->own.role, Role::kAdmin);
  EXPECT_EQ((*ctl)->server_public_key, ReadPublicKeyFile(k.coordinator_pub)->public_key);
  EXPECT_TRUE(absl::IsInvalidArgument(ClientKeys(k.ctl_key, "", k.ctl_key, k.coordinator_pub).status()));
  EXPECT_THAT(std::string(ClientKeys(k.ctl_key, k.worker_key, "", "").status().message()),
              HasSubstr("expected the coordinator's public key"));
}

}  // namespace
}  // namespace dd2
