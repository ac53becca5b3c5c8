#!/usr/bin/env bash
# Installs every Debian package dd2 builds and tests with. Idempotent: packages already present
# are skipped, and apt is not touched at all when nothing is missing.
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ ccache pkg-config clang libclang-rt-14-dev
  libzmq3-dev cppzmq-dev libsqlite3-dev sqlite3 libprotobuf-dev protobuf-compiler
  libabsl-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
  libgtest-dev libgmock-dev python3
  libtorch-dev libgloo-dev libssl-dev libopenblas0-openmp libblas-dev libgoogle-perftools-dev libpng-dev zlib1g-dev dataset-fashion-mnist gnuplot-nox
  slurmctld slurmd slurm-client munge iproute2 libboost-dev prometheus nodejs chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm: Debian's package, unless the nodejs installed already brings its own (NodeSource's does).
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  echo "ops/install-deps.sh: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "ops/install-deps.sh: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
