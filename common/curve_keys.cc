#include "common/curve_keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>

#include <zmq.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/home.h"
#include "common/status_macros.h"
#include "common/yaml_checker.h"

namespace dd2 {
namespace {

namespace fs = std::filesystem;

constexpr char kHeader[] = "# dd2 CURVE key (ZeroMQ CurveZMQ, Z85). Create with `dd2ctl keygen`.\n";

bool ValidZ85Key(const std::string& key) {
  if (key.size() != 40) return false;
  uint8_t binary[32];
  return zmq_z85_decode(binary, key.c_str()) != nullptr;
}

// Writes `text` to a new file with `mode`; AlreadyExists when the file is there.
absl::Status WriteNewFile(const std::string& path, const std::string& text, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST) return absl::AlreadyExistsError(absl::StrCat(path, " exists; not overwritten"));
    return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  ::fchmod(fd, mode);  // regardless of the umask
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

absl::StatusOr<CurveKeyPair> ParseKeyFile(const std::string& path, bool want_secret) {
  DD2_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  CurveKeyPair pair;
  bool have_role = false;
  std::istringstream in(text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l[0] == '#') continue;
    const size_t colon = l.find(':');
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": ", why));
    };
    if (colon == absl::string_view::npos) return bad("expected `field: value`");
    const std::string field(absl::StripAsciiWhitespace(l.substr(0, colon)));
    const std::string value(absl::StripAsciiWhitespace(l.substr(colon + 1)));
    if (field == "role") {
      auto role = ParseRole(value);
      if (!role.ok()) return bad(std::string(role.status().message()));
      pair.role = *role;
      have_role = true;
    } else if (field == "public" || field == "secret") {
      if (!ValidZ85Key(value)) return bad(absl::StrCat(field, ": expected a 40-character Z85 key"));
      (field == "public" ? pair.public_key : pair.secret_key) = value;
    } else {
      return bad(absl::StrCat("unknown field '", field, "' (expected role, public, secret)"));
    }
  }
  if (!have_role) return absl::InvalidArgumentError(absl::StrCat(path, ": no `role:` line"));
  if (pair.public_key.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no `public:` line"));
  if (want_secret && pair.secret_key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no `secret:` line (a .pub file where a .key file belongs?)"));
  }
  if (want_secret) {
    char derived[41];
    if (zmq_curve_public(derived, pair.secret_key.c_str()) != 0 || pair.public_key != derived) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": the public key is not the secret key's"));
    }
  } else {
    pair.secret_key.clear();
  }
  return pair;
}

}  // namespace

std::string RoleName(Role role) {
  switch (role) {
    case Role::kWorker: return "worker";
    case Role::kClient: return "client";
    case Role::kAdmin: return "admin";
    case Role::kCoordinator: return "coordinator";
    case Role::kLocal: return "local";
    case Role::kRevoked: return "revoked";
  }
  return "?";
}

absl::StatusOr<Role> ParseRole(const std::string& name) {
  for (Role r : {Role::kWorker, Role::kClient, Role::kAdmin, Role::kCoordinator}) {
    if (RoleName(r) == name) return r;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("role '", name, "' is not one of worker, client, admin, coordinator"));
}

absl::StatusOr<CurveKeyPair> GenerateKeyPair(Role role) {
  if (!zmq_has("curve")) return absl::UnavailableError("this libzmq was built without CURVE");
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return absl::UnavailableError(absl::StrCat("zmq_curve_keypair failed: ", zmq_strerror(zmq_errno())));
  }
  return CurveKeyPair{role, pub, sec};
}

absl::Status WriteKeyFiles(const std::string& dir, const std::string& name, const CurveKeyPair& pair) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("key name '", name, "': 1-63 letters, digits, '_' or '-', starting with a letter or digit"));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const std::string base = absl::StrCat(dir, "/", name);
  if (fs::exists(base + ".key") || fs::exists(base + ".pub")) {
    return absl::AlreadyExistsError(absl::StrCat(base, ".key or .pub exists; not overwritten"));
  }
  const std::string pub = absl::StrCat(kHeader, "role: ", RoleName(pair.role), "\npublic: ", pair.public_key, "\n");
  DD2_RETURN_IF_ERROR(WriteNewFile(base + ".key", absl::StrCat(pub, "secret: ", pair.secret_key, "\n"), 0600));
  return WriteNewFile(base + ".pub", pub, 0644);
}

absl::StatusOr<CurveKeyPair> ReadSecretKeyFile(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot read key file ", path, ": ", std::strerror(errno)));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("secret key file ", path, " may be read by others (mode ",
                                                    absl::StrFormat("%04o", st.st_mode & 07777),
                                                    "); refused. Run: chmod 600 ", path));
  }
  return ParseKeyFile(path, true);
}

absl::StatusOr<CurveKeyPair> ReadPublicKeyFile(const std::string& path) { return ParseKeyFile(path, false); }

absl::StatusOr<std::map<std::string, AuthorizedKey>> LoadAuthorizedKeys(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat("authorized-keys folder ", dir, " does not exist"));
  std::map<std::string, AuthorizedKey> keys;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".pub") continue;
    DD2_ASSIGN_OR_RETURN(CurveKeyPair pair, ReadPublicKeyFile(entry.path().string()));
    if (pair.role == Role::kCoordinator) {
      return absl::InvalidArgumentError(absl::StrCat(entry.path().string(), ": a coordinator key cannot be authorized"));
    }
    keys[pair.public_key] = {entry.path().stem().string(), pair.role};
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  return keys;
}

KeyedHomePaths KeyedHome(const std::string& home) {
  const std::string dir = home + "/keys";
  return {dir, dir + "/coordinator.key", dir + "/coordinator.pub", dir + "/authorized", dir + "/worker.key",
          dir + "/dd2ctl.key"};
}

absl::Status EnsureKeyedHome(const std::string& home) {
  const KeyedHomePaths k = KeyedHome(home);
  std::error_code ec;
  fs::create_directories(k.authorized, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", k.authorized, ": ", ec.message()));
  struct Want {
    std::string name;
    Role role;
    bool authorize;
  };
  for (const Want& w : {Want{"coordinator", Role::kCoordinator, false}, Want{"worker", Role::kWorker, true},
                        Want{"dd2ctl", Role::kAdmin, true}}) {
    const std::string key = absl::StrCat(k.dir, "/", w.name, ".key");
    if (!fs::exists(key)) {
      DD2_ASSIGN_OR_RETURN(CurveKeyPair pair, GenerateKeyPair(w.role));
      DD2_RETURN_IF_ERROR(WriteKeyFiles(k.dir, w.name, pair));
    }
    const std::string authorized = absl::StrCat(k.authorized, "/", w.name, ".pub");
    if (w.authorize && !fs::exists(authorized)) {
      fs::copy_file(absl::StrCat(k.dir, "/", w.name, ".pub"), authorized, ec);
      if (ec) return absl::UnavailableError(absl::StrCat("cannot write ", authorized, ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<CurveClientKeys>> ClientKeys(const std::string& key_file,
                                                          const std::string& coordinator_pub,
                                                          const std::string& home_key,
                                                          const std::string& home_coordinator_pub) {
  std::string key = key_file, server = coordinator_pub;
  if (key.empty() != server.empty()) {
    return absl::InvalidArgumentError("a key file and the coordinator's public key file go together: give both");
  }
  if (key.empty()) {
    if (!fs::exists(home_coordinator_pub)) return std::optional<CurveClientKeys>();
    key = home_key;
    server = home_coordinator_pub;
  }
  CurveClientKeys keys;
  DD2_ASSIGN_OR_RETURN(keys.own, ReadSecretKeyFile(key));
  DD2_ASSIGN_OR_RETURN(CurveKeyPair coordinator, ReadPublicKeyFile(server));
  if (coordinator.role != Role::kCoordinator) {
    return absl::InvalidArgumentError(absl::StrCat(server, ": role ", RoleName(coordinator.role),
                                                   "; expected the coordinator's public key"));
  }
  keys.server_public_key = coordinator.public_key;
  return std::optional<CurveClientKeys>(std::move(keys));
}

}  // namespace dd2
