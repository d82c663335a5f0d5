# matrix_user: `just --list` shows every recipe. `tools/just` runs this file
# on a machine that does not have `just` yet.

set positional-arguments
set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")
export CC_x86_64_unknown_linux_musl := "musl-gcc"

target := "x86_64-unknown-linux-musl"
# Built with cargo-zigbuild (zig from PyPI as the C cross compiler).
arm_target := "aarch64-unknown-linux-musl"

# List the recipes
default:
    @just --list

# Install what the project needs: virtualenv, musl targets, musl-tools, qemu-user-static
setup:
    tools/bootstrap

# Build the module as static binaries for x86_64 and aarch64, placed in library/ (collection/binaries links there)
build: setup
    cargo build --quiet --release --target {{target}}
    cargo zigbuild --quiet --release --target {{arm_target}}
    install -D -m 0755 target/{{target}}/release/matrix_user library/matrix_user_linux_x86_64
    install -D -m 0755 target/{{arm_target}}/release/matrix_user library/matrix_user_linux_aarch64

# Build the Ansible collection matrix_user.matrix into target/ and print its size
collection: build
    tools/build-collection

# Create or update one user on the configured (or local) homeserver
register-user USERNAME PASSWORD ADMIN: build
    tools/run-user-tag register-user "$1" "$2" "$3"

# Change the password of one existing user on the configured (or local) homeserver
update-user-password USERNAME PASSWORD: build
    tools/run-user-tag update-user-password "$1" "$2"

# Create or show one invitation (registration token NAME for USES people, or unlimited,
# expiring DAYS days from today, or never) on the configured (or local) homeserver, and say how to register
registration-token NAME USES DAYS: build
    tools/run-user-tag registration-token "$1" "$2" "$3"

# Stop the embedded local Synapse that register-user starts; its users stay
stop-local-homeserver: setup
    python tools/servers/synapse.py --data-dir "${MATRIX_USER_LOCAL_HOMESERVER_DIR:-.local/synapse}" --port "${MATRIX_USER_LOCAL_HOMESERVER_PORT:-18008}" stop

# Stop the embedded local Synapse and delete it: its users, data and shared secret
remove-local-homeserver: stop-local-homeserver
    rm -rf -- "${MATRIX_USER_LOCAL_HOMESERVER_DIR:-.local/synapse}"

# Run every test: unit, integration against real servers, playbooks, Molecule
test: collection lint lint-collection
    tools/install-dendrite >/dev/null
    cargo test --quiet -- --test-threads 2
    molecule test --all

# Measure N users (default 200) against the server's limit and today's loop, or with
# `--scale MAX` re-runs of 1,000, 10,000 and 100,000 users; writes docs/benchmarks.md
bench *ARGS: build
    python tools/bench/bench.py "$@"

# The built collection as Galaxy's importer, ansible-test sanity and ansible-lint (production) see it
lint-collection: collection
    tools/check-collection

# Formatting, clippy and ansible-lint, all warnings fatal
lint: setup
    cargo fmt --check
    cargo clippy --quiet --all-targets -- -D warnings
    cargo clippy --quiet --all-targets --no-default-features -- -D warnings
    ansible-lint
    python tools/check-role-specs
