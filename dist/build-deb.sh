#!/bin/sh
# Builds the Debian package: both binaries, the systemd unit, man pages, shell completions and an
# example /etc/fechter/fechterd.toml. Needs cargo-deb (`cargo install cargo-deb`). Extra arguments
# go to `cargo deb`. The package lands in <target>/debian/.
set -eu
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p fechter-cli -p fechterd
generated="$target/release/dist"
mkdir -p "$generated"
"$target/release/fechterd" --man | gzip -9n > "$generated/fechterd.8.gz"
"$target/release/fechter" man | gzip -9n > "$generated/fechter.1.gz"
"$target/release/fechter" completions bash > "$generated/fechter.bash"
"$target/release/fechter" completions zsh > "$generated/_fechter"
"$target/release/fechter" completions fish > "$generated/fechter.fish"
cargo deb -p fechterd --no-build --strip "$@"
