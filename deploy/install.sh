#!/usr/bin/env bash
# Installs (or upgrades) Ward on this machine: docs/INSTALL.md explains each step. Run as root from the repository:
#   deploy/install.sh            build with the publish profile, install, keep the previous release for rollback
#   deploy/install.sh --no-build install artifacts/ward as already published
# Layout: /opt/ward/releases/<version>/ (the published folder, samples/synthea beside the binary for `ward demo`),
# /opt/ward/current -> that release, /usr/local/bin/ward -> /opt/ward/current/ward, the unit in /etc/systemd/system,
# the ward user, /var/lib/ward (0700, the node: created by `ward init`, never touched here) and /var/backups/ward (0700).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "Run as root (it creates the ward user and writes /opt/ward, /usr/local/bin, /etc/systemd/system)." >&2; exit 2; }

if [ "${1:-}" != "--no-build" ]; then
    dotnet publish src/Ward.Cli -p:PublishProfile=linux-x64 -nologo -v q
fi
[ -x artifacts/ward/ward ] || { echo "artifacts/ward/ward is missing: publish first (dotnet publish src/Ward.Cli -p:PublishProfile=linux-x64)." >&2; exit 2; }

version="$(git describe --always --dirty 2>/dev/null || date -u +%Y%m%dT%H%M%SZ)"
release="/opt/ward/releases/$version"
install -d -m 0755 /opt/ward /opt/ward/releases
rm -rf "$release"
cp -a artifacts/ward "$release"
install -d -m 0755 "$release/docs"
cp docs/INSTALL.md "$release/docs/"
chown -R root:root "$release"
chmod -R go-w "$release"

getent group ward >/dev/null || groupadd --system ward
getent passwd ward >/dev/null || useradd --system --gid ward --home-dir /var/lib/ward --no-create-home --shell /usr/sbin/nologin ward
install -d -m 0700 -o ward -g ward /var/lib/ward /var/backups/ward

previous="$(readlink /opt/ward/current || true)"
ln -sfn "$release" /opt/ward/current.new && mv -T /opt/ward/current.new /opt/ward/current
ln -sfn /opt/ward/current/ward /usr/local/bin/ward
install -m 0644 deploy/ward.service /etc/systemd/system/ward.service
systemctl daemon-reload 2>/dev/null || true

echo "Installed $release (ward on the PATH: /usr/local/bin/ward)."
[ -n "$previous" ] && [ "$previous" != "$release" ] && echo "Previous release kept for rollback: $previous"
if [ ! -f /var/lib/ward/ward.yaml ]; then
    echo "Next: sudo -u ward ward init --data /var/lib/ward --name <node name>, then docs/INSTALL.md (TLS, backups, keys), then systemctl enable --now ward"
else
    echo "Next: systemctl restart ward (the node migrates its database at start; docs/INSTALL.md, Upgrade)"
fi
