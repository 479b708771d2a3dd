#!/usr/bin/env bash
# Install the host tools the harness needs, from Debian's packages only.
# Idempotent: does nothing when everything is already there.
# Debian 12 ships QEMU 7.2 (no igb); QEMU >= 8.0 comes from bookworm-backports.
set -euo pipefail

need_cmds=(qemu-system-x86_64 ip sysctl iperf3 busybox cpio depmod dpkg-deb)
need_pkgs=(qemu-system-x86 iproute2 procps iperf3 busybox-static cpio kmod libpcap0.8 python3-venv)
# The small guest kernel (harness/kernel.py) is built from Debian's kernel source:
# objtool links libelf, the host tools need libc's headers.
need_cmds+=(gcc make flex bison bc perl tar xz)
need_pkgs+=(gcc make flex bison bc perl tar xz-utils libelf-dev libc6-dev)
need_headers=(/usr/include/libelf.h /usr/include/stdio.h)
# The SSH host layer's tests (tests/e2e/test_ssh_hosts.py) run a throwaway sshd of their own.
need_cmds+=(sshd ssh-keygen)
need_pkgs+=(openssh-server)
# The certification record reads the PF's driver and firmware with ethtool -i on each lab
# host; the nested topology's L1s (the lab hosts of its tests) run this host's userspace.
need_cmds+=(ethtool)
need_pkgs+=(ethtool)
# The host topology tells the standby's replies apart with tcpdump on each lab host (here: the L1s).
need_cmds+=(tcpdump)
need_pkgs+=(tcpdump)

log() { printf 'setup-host: %s\n' "$*" >&2; }

qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null || return 1
    local v
    v=$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p')
    [ -n "$v" ] && [ "$v" -ge 8 ]
}

all_present() {
    local c p
    for c in "${need_cmds[@]}"; do command -v "$c" >/dev/null || return 1; done
    for h in "${need_headers[@]}"; do [ -e "$h" ] || return 1; done
    dpkg-query -W -f='${Status}' libpcap0.8 2>/dev/null | grep -q 'install ok installed' || return 1
    python3 -c 'import ensurepip, venv' 2>/dev/null || return 1
    # The guest image is assembled from apt's package lists: they must exist.
    apt-cache show busybox-static >/dev/null 2>&1 || return 1
    qemu_ok
}

if all_present; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "missing host packages and not root: run 'sudo make setup' or install: ${need_pkgs[*]} (QEMU >= 8.0)"
    exit 1
fi

. /etc/os-release
backports=()
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    src=/etc/apt/sources.list.d/bookworm-backports.sources
    if [ ! -e "$src" ]; then
        log "adding bookworm-backports (Debian 12's QEMU 7.2 has no igb)"
        cat >"$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    backports=(-t bookworm-backports)
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
apt-get update -qq
log "installing ${need_pkgs[*]}"
apt-get install -y -qq --no-install-recommends "${backports[@]}" qemu-system-x86 >/dev/null
had_sshd=$(command -v sshd || true)
apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
if [ -z "$had_sshd" ] && [ -d /run/systemd/system ]; then
    # Debian enables and starts ssh.service on install; the tests need only the binary.
    log "openssh-server was installed for the tests only: disabling its service"
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
fi
if ! qemu_ok; then
    log "QEMU >= 8.0 still missing after install: $(qemu-system-x86_64 --version 2>&1 | head -1)"
    exit 1
fi
log "ok: $(qemu-system-x86_64 --version | head -1)"
