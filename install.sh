#!/usr/bin/env bash
# Installs what nanoclaw needs on Debian/Ubuntu (bubblewrap, uv, the Python deps),
# then starts the terminal chat. Safe to run again.
#   ./install.sh            install; without a .env, run `nanoclaw setup` (key and channels,
#                           checked live); then start `nanoclaw chat`
#   ./install.sh --no-chat  install only
#   ./install.sh --test     install, plus the servers the tests run against, and run the tests
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-}"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v prlimit >/dev/null || need_apt+=(util-linux)
# libseccomp builds the sandbox's seccomp filter; without it no sandbox starts
{ /sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null; } | grep 'libseccomp\.so\.2 ' >/dev/null \
  || need_apt+=(libseccomp2)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if [ "$mode" = "--test" ]; then
  # Prosody: the real XMPP server of the XMPP tests (Debian's package may also start a
  # system service; the tests use their own instances on random ports). nix-bin parses
  # flake.nix and builds the groups' environments; openssl makes the tests' TLS
  # certificates; procps gives pgrep.
  command -v prosody >/dev/null || need_apt+=(prosody)
  command -v nix-instantiate >/dev/null || need_apt+=(nix-bin)
  # the tests' stub nixpkgs (tests/nixpkgs) builds its packages from a static /bin/busybox
  # (ldd fails on a static binary: a dynamic or missing busybox needs the static one)
  if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then need_apt+=(busybox-static); fi
  command -v openssl >/dev/null || need_apt+=(openssl)
  command -v pgrep >/dev/null || need_apt+=(procps)
  # systemd-analyze checks the unit `nanoclaw service install` writes
  command -v systemd-analyze >/dev/null || need_apt+=(systemd)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} with apt"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null; then
  echo "installing uv"
  python3 -m pip install --user --quiet uv 2>/dev/null \
    || python3 -m pip install --user --quiet --break-system-packages uv 2>/dev/null \
    || { $SUDO apt-get install -y -qq pipx && pipx install uv; }
fi

uv sync --frozen --compile-bytecode --quiet

if [ "$mode" = "--test" ]; then
  exec uv run --frozen pytest -q
fi

if [ ! -f .env ] && [ -t 0 ]; then
  # A new installation with someone at the terminal: the guided setup asks for the key and
  # each channel's credentials, checks each with a live call and writes .env (mode 0600).
  uv run --frozen nanoclaw setup
elif [ ! -f .env ]; then
  (umask 077 && cp .env.example .env)
  echo "created .env from .env.example"
fi
if ! grep -qE '^ANTHROPIC_API_KEY=.+' .env && [ -z "${ANTHROPIC_API_KEY:-}" ]; then
  if [ -t 0 ]; then
    key=""
    while [ -z "$key" ]; do
      read -r -s -p "Anthropic API key (stays on this host, never enters the sandbox): " key
      echo
      case "$key" in
        *[[:space:]\"\'\\\$#]*) echo "a key has no spaces, quotes, \\, \$ or #; try again" >&2; key="" ;;
      esac
    done
    # No sed: the key is data, whatever it holds (a '|' in it broke `sed s|...|`). mktemp
    # makes the new file 0600; the rename replaces .env at once.
    tmp="$(mktemp .env.XXXXXX)"
    grep -v '^ANTHROPIC_API_KEY=' .env >"$tmp" || true
    printf 'ANTHROPIC_API_KEY=%s\n' "$key" >>"$tmp"
    mv "$tmp" .env
  else
    echo "set ANTHROPIC_API_KEY in .env (or run: uv run nanoclaw setup), then run: uv run nanoclaw chat" >&2
    exit 1
  fi
fi

uv run --frozen nanoclaw doctor || echo "(doctor found problems above; the chat may not work)"
[ "$mode" = "--no-chat" ] && exit 0
exec uv run --frozen nanoclaw chat
