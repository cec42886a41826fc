#!/usr/bin/env bash
# bai's test command: installs the components the tests start for real (scripts/test-deps.sh,
# as root; without root it says so and the tests that need them skip), then builds the
# binaries the end-to-end tests drive and runs every test. `--no-deps` skips the install
# (CI installs in its own step); other arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

deps=1
args=()
for a in "$@"; do
  case "$a" in
    --no-deps) deps=0 ;;
    *) args+=("$a") ;;
  esac
done

if [ "$deps" -eq 1 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    bash scripts/test-deps.sh
  else
    echo "test.sh: not root, so not installing the test components; tests that need root, rclone, smbd, Azurite or sshd skip" >&2
  fi
fi

# One build of every target: bins, tests and benches resolved together get the same
# features (dev-dependencies add tokio's test-util and bai-common's standins), so the
# binaries the e2e tests drive are built once and `cargo test` compiles nothing again.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked "${args[@]}"
