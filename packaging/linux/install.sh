#!/usr/bin/env bash
# Installs, updates and removes the POSPal License Agent's systemd service on a Linux till (run as root).
#
#   install.sh install [--venv DIR]     the account (sysusers), its state dir (tmpfiles), the first agent
#                                       version seeded from DIR's agent, the unit; enable and (re)start it
#   install.sh update [--from BUNDLE]   check the signed repository now (or a USB bundle) and stage what it
#                                       offers; the service swaps to it when the POS is idle
#   install.sh status                   running, previous, pending and failed versions, the last swap
#   install.sh remove [--purge]         stop, disable and delete the unit; --purge also deletes the
#                                       license data, the versions and the account (deactivate first)
#
# DIR defaults to /opt/pospal-agent/venv: a venv with this project installed (`pospal-agent` and
# `pospal-launcher` in its bin/), owned by root so that the service's account cannot change the launcher.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
account=pospal-agent
unit=/etc/systemd/system/pospal-agent.service
state=/var/lib/pospal-agent
install_dir="$state/install"
venv=/opt/pospal-agent/venv

die() { echo "install.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (sudo)"

# The unit's environment (with any drop-in's), for commands run as the service's account.
as_service() {
  local env
  [ -f "$unit" ] || die "the service is not installed (install.sh install)"
  env="$(systemctl show -p Environment --value pospal-agent)"
  # shellcheck disable=SC2086  # the unit's NAME=value words, none with spaces
  (cd / && runuser -u "$account" -- env $env POSPAL_INSTALL_DIR="$install_dir" "$@")
}

# The venv the installed unit runs (install --venv may have chosen another).
installed_venv() {
  local launcher
  launcher="$(sed -n 's|^ExecStart=\(.*\)/bin/pospal-launcher .*|\1|p' "$unit" 2>/dev/null || true)"
  echo "${launcher:-$venv}"
}

cmd_install() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --venv) venv="$(cd "$2" && pwd)"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  if [ ! -x "$venv/bin/pospal-agent" ] || [ ! -x "$venv/bin/pospal-launcher" ]; then
    die "$venv/bin has no pospal-agent and pospal-launcher (pip install this project into $venv first)"
  fi
  install -m 0644 "$here/pospal-agent.sysusers.conf" /usr/lib/sysusers.d/pospal-agent.conf
  systemd-sysusers /usr/lib/sysusers.d/pospal-agent.conf
  install -m 0644 "$here/pospal-agent.tmpfiles.conf" /usr/lib/tmpfiles.d/pospal-agent.conf
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/pospal-agent.conf
  # The first version (or this venv's newer one): versions/<v>/pospal-agent runs the venv's agent.
  # From /, so that python finds the venv's agent package, never a checkout in the working directory.
  (cd / && runuser -u "$account" -- "$venv/bin/python" -m agent.selfupdate.install seed "$install_dir" "$venv/bin/pospal-agent")
  sed "s|/opt/pospal-agent/venv/|$venv/|" "$here/pospal-agent.service" > "$unit.tmp"
  chmod 0644 "$unit.tmp" && mv "$unit.tmp" "$unit"
  systemctl daemon-reload
  systemctl enable pospal-agent
  systemctl restart pospal-agent  # a re-install starts the launcher on the version it seeded
  echo "pospal-agent is running: systemctl status pospal-agent, journalctl -u pospal-agent"
}

bundle_copy=""  # global: the EXIT trap removes it after the function has returned

cmd_update() {
  local args=(update apply)
  venv="$(installed_venv)"
  if [ "${1:-}" = "--from" ]; then
    [ -d "${2:-}" ] || die "--from needs the bundle's directory"
    # The service's account may not read a stick mounted for a user: it reads a copy of its own.
    bundle_copy="$(mktemp -d)"
    trap 'rm -rf "$bundle_copy"' EXIT
    cp -r "$2" "$bundle_copy/bundle"
    chown -R "$account:" "$bundle_copy"
    args+=(--from "$bundle_copy/bundle")
  elif [ $# -gt 0 ]; then
    die "unknown option $1"
  fi
  as_service "$venv/bin/pospal-agent" "${args[@]}"
}

cmd_status() {
  venv="$(installed_venv)"
  as_service "$venv/bin/pospal-agent" update status
}

cmd_remove() {
  local purge=no
  [ "${1:-}" = "--purge" ] && purge=yes
  systemctl disable --now pospal-agent 2>/dev/null || true
  rm -f "$unit"
  systemctl daemon-reload
  if [ "$purge" = yes ]; then
    rm -rf "$state"
    rm -f /usr/lib/tmpfiles.d/pospal-agent.conf /usr/lib/sysusers.d/pospal-agent.conf
    userdel "$account" 2>/dev/null || true
    echo "removed the service, its license data, its versions and its account"
  else
    echo "removed the service; $state (identity, license, versions) stays for a re-install"
  fi
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  update) shift; cmd_update "$@" ;;
  status) shift; cmd_status ;;
  remove) shift; cmd_remove "$@" ;;
  *) die "usage: install.sh install [--venv DIR] | update [--from BUNDLE] | status | remove [--purge]" ;;
esac
