// CURVE key files (ZeroMQ's CurveZMQ, keys in Z85 text) and roles.
//   <name>.key  the key pair, mode 0600; a file that group or others may read is refused at load
//   <name>.pub  the public half, handed to whoever must recognise this key
// Both are short text files of `field: value` lines (role, public, and secret in .key only).
// An authorized-keys folder holds the .pub files of every peer the coordinator accepts; each
// key's role says what it may send (coordinator/access.h). A keyed local cluster keeps its keys
// under <home>/keys (KeyedHomePaths). Pure apart from the file system; thread-compatible.
#ifndef DD2_COMMON_CURVE_KEYS_H_
#define DD2_COMMON_CURVE_KEYS_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dd2 {

// worker: the worker messages only. client: submit, query, cancel. admin: a client that may
// also shut the coordinator down. coordinator: the coordinator's own key pair. local: a peer
// of a keyless coordinator on loopback (every message but shutdown). revoked: a connection
// whose key was removed from the authorized keys after it connected (nothing).
enum class Role { kWorker, kClient, kAdmin, kCoordinator, kLocal, kRevoked };

std::string RoleName(Role role);
// InvalidArgument naming the accepted roles.
absl::StatusOr<Role> ParseRole(const std::string& name);

struct CurveKeyPair {
  Role role = Role::kClient;
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters; empty for a public key file
};

// A fresh key pair (libzmq's zmq_curve_keypair). Unavailable when libzmq lacks CURVE.
absl::StatusOr<CurveKeyPair> GenerateKeyPair(Role role);

// Writes <dir>/<name>.key (0600) and <dir>/<name>.pub (0644); refuses to overwrite either.
// `name`: a ValidName (common/yaml_checker.h), as job names are.
absl::Status WriteKeyFiles(const std::string& dir, const std::string& name, const CurveKeyPair& pair);

// A .key file: PermissionDenied when group or others may read it; InvalidArgument naming the
// file and line when it does not parse.
absl::StatusOr<CurveKeyPair> ReadSecretKeyFile(const std::string& path);
// A .pub (or .key: only its public half is read) file.
absl::StatusOr<CurveKeyPair> ReadPublicKeyFile(const std::string& path);

struct AuthorizedKey {
  std::string name;  // the file's name without .pub
  Role role = Role::kClient;
};

// Every <name>.pub in `dir`, by public key. InvalidArgument naming the first file that does not
// parse or has the coordinator role; NotFound when `dir` does not exist.
absl::StatusOr<std::map<std::string, AuthorizedKey>> LoadAuthorizedKeys(const std::string& dir);

// What a CURVE client needs: its key pair and the coordinator's public key.
struct CurveClientKeys {
  CurveKeyPair own;
  std::string server_public_key;
};

// The key files of a keyed local cluster under <home>/keys.
struct KeyedHomePaths {
  std::string dir, coordinator_key, coordinator_pub, authorized, worker_key, ctl_key;
};
KeyedHomePaths KeyedHome(const std::string& home);

// Creates whichever of a keyed home's key files are missing: the coordinator's pair, a worker
// pair and an admin pair for dd2ctl, both authorized. Existing files are kept.
absl::Status EnsureKeyedHome(const std::string& home);

// A client's keys: `key_file` and `coordinator_pub` when given (both, or neither), else the
// keyed home's (`home_key`: worker_key or ctl_key) when <home>/keys/coordinator.pub exists,
// else none (a keyless coordinator on loopback).
absl::StatusOr<std::optional<CurveClientKeys>> ClientKeys(const std::string& key_file,
                                                          const std::string& coordinator_pub,
                                                          const std::string& home_key,
                                                          const std::string& home_coordinator_pub);

}  // namespace dd2

#endif  // DD2_COMMON_CURVE_KEYS_H_
