#!/usr/bin/env bash
# Make the toolchain rust-toolchain.toml pins available on a machine that cannot download it:
# if rustup has no toolchain of that name but the installed stable is exactly that version,
# the stable is made available under the pinned name (a symlink in rustup's toolchain
# directory, the layout rustup itself gives an installed toolchain; `rustup toolchain link`
# refuses official names). Anywhere else rustup's own message says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rustup >/dev/null || exit 0
want=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if rustup toolchain list | grep -q "^${want}-"; then
  exit 0
fi
have=$(rustup run stable rustc -V 2>/dev/null | awk '{ print $2 }')
if [ "$have" != "$want" ]; then
  echo "toolchain.sh: rust-toolchain.toml pins Rust $want and the installed stable is" \
    "${have:-missing}: run 'rustup toolchain install $want'" >&2
  exit 0
fi
host=$(rustup run stable rustc -vV | sed -n 's/^host: //p')
home=$(rustup show home)
ln -s "$home/toolchains/stable-$host" "$home/toolchains/$want-$host"
echo "toolchain.sh: the installed stable ($have) serves as toolchain $want"
