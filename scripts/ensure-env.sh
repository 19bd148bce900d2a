#!/usr/bin/env bash
# Shared, idempotent bring-up for make, CI (.ci/run) and the pytest fixtures (tests/conftest.py).
#
#   scripts/ensure-env.sh [all|docker|base-images]     (default: all)
#
#   docker       ensure a Docker engine answers `docker info` (DOCKER_HOST is respected);
#                as root on Debian it installs docker.io and starts dockerd when needed.
#   base-images  ensure debian:bookworm-slim (and the tag debian:bookworm) exist: pull, else
#                re-import the cached rootfs, else build it with debootstrap (and cache it).
#   all          both.
#
# Environment knobs (all optional):
#   LABCTL_CACHE_DIR        default ${XDG_CACHE_HOME:-$HOME/.cache}/labctl (rootfs tarball, lock)
#   LABCTL_DEBIAN_MIRROR    default http://deb.debian.org/debian
#   LABCTL_PULL_TIMEOUT     seconds for `docker pull`, default 60; 0 skips the pull
#   LABCTL_DOCKERD_TIMEOUT  seconds to wait for a started dockerd, default 60
#   LABCTL_DOCKERD_LOG      default /var/log/labctl-dockerd.log (cache dir if not writable)
#
# Everything it says goes to stderr, one short line each, prefixed "ensure-env:".
set -euo pipefail

BASE_IMAGE=debian:bookworm-slim
BASE_ALIAS=debian:bookworm
BASE_LABEL_SOURCE=labctl-debootstrap
CACHE_DIR=${LABCTL_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/labctl}
if ! mkdir -p "$CACHE_DIR" 2>/dev/null || [ ! -w "$CACHE_DIR" ]; then # e.g. HOME=/nonexistent
    CACHE_DIR=${TMPDIR:-/tmp}/labctl-cache-$(id -u)
    mkdir -p "$CACHE_DIR"
fi
ROOTFS_TAR=$CACHE_DIR/base/debian-bookworm-minbase.tar
MIRROR=${LABCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PULL_TIMEOUT=${LABCTL_PULL_TIMEOUT:-60}
DOCKERD_TIMEOUT=${LABCTL_DOCKERD_TIMEOUT:-60}
DOCKERD_PIDFILE=/var/run/docker.pid
DEFAULT_SOCK=unix:///var/run/docker.sock
IMAGE_PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

START_S=$(date +%s.%N)
APT_UPDATED=0
LOCKED=0
LOG_OFFSET=1
DOCKER=

say() { printf 'ensure-env: %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}
usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
}
elapsed() { awk -v s="$START_S" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1fs", e - s }'; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# Serialise the slow paths (make, CI and several pytest processes may run this at once).
# Fast paths never take the lock; slow paths take it and re-check.
lock() {
    [ "$LOCKED" -eq 1 ] && return 0
    exec 9>"$CACHE_DIR/ensure-env.lock"
    if ! flock -n 9; then
        say "another ensure-env is running; waiting for it"
        flock -w 1800 9 || die "timed out waiting for $CACHE_DIR/ensure-env.lock"
    fi
    LOCKED=1
}

apt_install() {
    is_root && command -v apt-get >/dev/null 2>&1 || return 1
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-o DPkg::Lock::Timeout=600 -q)
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        apt-get "${opts[@]}" update >&2 || return 1
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    apt-get "${opts[@]}" install -y --no-install-recommends "$@" >&2
}

# ---------------------------------------------------------------------------------------- engine

# Which client to use: the first `docker` on PATH (here possibly /usr/local/bin/docker, client 28,
# which negotiates the API version down to a 20.10 daemon), else Debian's /usr/bin/docker.
client_answers() { timeout 20 "$1" info >/dev/null 2>&1; }
pick_client() {
    local cands=() c
    DOCKER=
    for c in "$(command -v docker 2>/dev/null || true)" /usr/bin/docker; do
        [ -n "$c" ] && [ -x "$c" ] || continue
        [[ " ${cands[*]} " == *" $c "* ]] || cands+=("$c")
    done
    for c in "${cands[@]}"; do
        client_answers "$c" && { DOCKER=$c; break; }
    done
    [ -n "$DOCKER" ] || return 1
    # The preferred client may just have raced a starting daemon: ask it once more.
    if [ "$DOCKER" != "${cands[0]}" ]; then
        if client_answers "${cands[0]}"; then
            DOCKER=${cands[0]}
        else
            say "note: ${cands[0]} cannot talk to this engine; using $DOCKER (put it first in PATH)"
        fi
    fi
}

find_dockerd() {
    command -v dockerd 2>/dev/null && return 0
    local d
    for d in /usr/sbin/dockerd /usr/bin/dockerd /usr/local/bin/dockerd; do
        [ -x "$d" ] && { echo "$d"; return 0; }
    done
    return 1
}

dockerd_log_path() {
    local log=${LABCTL_DOCKERD_LOG:-/var/log/labctl-dockerd.log}
    if ! { touch "$log"; } 2>/dev/null; then
        mkdir -p "$CACHE_DIR"
        log=$CACHE_DIR/dockerd.log
    fi
    echo "$log"
}

# Alive and not a zombie (PID 1 on some sandboxes reaps orphans late, so a killed dockerd
# can linger as a zombie that `kill -0` still reports as alive).
pid_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ] && [ "${stat%% *}" != X ]
}

# dockerd 20.10 trusts the pidfile of the containerd it manages: if that pid is "alive" (a zombie
# left by a killed daemon counts), it waits for that containerd's socket and gives up after ~10s.
clear_stale_containerd_pidfile() {
    local f=/var/run/docker/containerd/containerd.pid pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -z "$pid" ] || ! pid_alive "$pid" || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != containerd ]; then
        say "removing stale $f (pid ${pid:-?} is not a running containerd)"
        rm -f "$f"
    fi
}

# Prints the pid of a live dockerd named by the pidfile; removes a stale pidfile (killed daemon).
live_dockerd_pid() {
    [ -f "$DOCKERD_PIDFILE" ] || return 1
    local pid
    pid=$(cat "$DOCKERD_PIDFILE" 2>/dev/null || true)
    if [ -n "$pid" ] && pid_alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
        echo "$pid"
        return 0
    fi
    say "removing stale $DOCKERD_PIDFILE (pid ${pid:-?} is not a running dockerd)"
    rm -f "$DOCKERD_PIDFILE"
    return 1
}

wait_for_engine() { # <pid or empty> <timeout s>
    local pid=$1 deadline=$(($(date +%s) + $2))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        pick_client && return 0
        if [ -n "$pid" ] && ! pid_alive "$pid"; then
            return 1
        fi
        sleep 0.5
    done
    return 1
}

iptables_usable() { command -v iptables >/dev/null 2>&1 && iptables -w 5 -nL >/dev/null 2>&1; }

start_dockerd() { # <extra dockerd flags...>
    local dockerd log pid
    dockerd=$(find_dockerd)
    log=$(dockerd_log_path)
    live_dockerd_pid >/dev/null && die "a dockerd is already running (pid $(cat "$DOCKERD_PIDFILE"))"
    clear_stale_containerd_pidfile
    LOG_OFFSET=$(($(stat -c %s "$log" 2>/dev/null || echo 0) + 1))
    say "starting $dockerd${*:+ $*} (log: $log)"
    printf '\n==== %s ensure-env: %s %s\n' "$(date -Is)" "$dockerd" "$*" >>"$log"
    # setsid+nohup: the daemon must outlive make, pytest and the CI step that started it.
    # 9>&-: it must not inherit (and so hold forever) our lock.
    setsid nohup "$dockerd" "$@" </dev/null >>"$log" 2>&1 9>&- &
    pid=$!
    if wait_for_engine "$pid" "$DOCKERD_TIMEOUT"; then
        return 0
    fi
    say "dockerd did not answer within ${DOCKERD_TIMEOUT}s; last lines of $log:"
    tail -n 15 "$log" | sed 's/^/ensure-env:   | /' >&2
    if pid_alive "$pid"; then
        kill "$pid" 2>/dev/null || true
        sleep 3
    fi
    return 1
}

no_engine_help() {
    say "no Docker engine answers \`docker info\`${DOCKER_HOST:+ (DOCKER_HOST=$DOCKER_HOST)}."
    if [ -z "${DOCKER_HOST:-}" ] && [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ]; then
        say "/var/run/docker.sock exists but $(id -un) may not use it (not in group docker?)"
    fi
    say "to get one, either:"
    say "  - run this script as root on Debian/Ubuntu (sudo $0 docker): it installs docker.io and starts dockerd;"
    say "  - or install Docker (https://docs.docker.com/engine/install/), start it (systemctl start docker)"
    say "    and let your user reach it (usermod -aG docker \$USER, then log in again);"
    say "  - or point DOCKER_HOST at a reachable engine."
}

ensure_docker() {
    if pick_client; then
        say "docker engine answers ($DOCKER, server $("$DOCKER" version -f '{{.Server.Version}}' 2>/dev/null))"
        return 0
    fi
    lock
    pick_client && { say "docker engine answers ($DOCKER)"; return 0; }

    # A DOCKER_HOST we cannot serve ourselves (tcp://, ssh://, another socket): nothing to start.
    local host=${DOCKER_HOST:-$DEFAULT_SOCK} extra=()
    case "$host" in
        "$DEFAULT_SOCK" | unix:///run/docker.sock) ;;
        unix://*) extra=(-H "$host") ;;
        *)
            no_engine_help
            die "DOCKER_HOST=$host does not answer and is not a local socket this script can serve"
            ;;
    esac
    if ! is_root; then
        no_engine_help
        die "not root: cannot install or start dockerd"
    fi

    if ! find_dockerd >/dev/null; then
        command -v apt-get >/dev/null 2>&1 || { no_engine_help; die "dockerd missing and no apt-get"; }
        apt_install docker.io || die "apt-get install docker.io failed"
    fi
    # The 20.10 client only as a fallback if the PATH client cannot talk to the daemon.
    [ -x /usr/bin/docker ] || command -v docker >/dev/null 2>&1 || apt_install docker.io ||
        die "no docker client"

    local pid
    if pid=$(live_dockerd_pid); then
        say "dockerd (pid $pid) is running but does not answer yet; waiting"
        wait_for_engine "$pid" "$DOCKERD_TIMEOUT" && { say "docker engine answers ($DOCKER)"; return 0; }
        pid_alive "$pid" &&
            die "dockerd pid $pid runs but does not answer; see $(dockerd_log_path) or stop it and retry"
        say "dockerd pid $pid exited; starting a new one"
        rm -f "$DOCKERD_PIDFILE"
    fi

    # systemd hosts: prefer the packaged service.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && [ ${#extra[@]} -eq 0 ]; then
        say "systemctl start docker"
        if systemctl start docker >&2 && wait_for_engine "" "$DOCKERD_TIMEOUT"; then
            say "docker engine answers ($DOCKER) after $(elapsed)"
            return 0
        fi
        say "systemctl start docker did not give an engine; starting dockerd directly"
    fi

    # dockerd sets up NAT with iptables; make sure it is there and works, else run without it.
    if ! command -v iptables >/dev/null 2>&1; then
        apt_install iptables || say "could not install iptables"
    fi
    if ! iptables_usable; then
        say "iptables unusable here: starting dockerd with --iptables=false (no NAT for containers)"
        extra+=(--iptables=false --ip-masq=false)
    fi
    if ! start_dockerd "${extra[@]}"; then
        # One retry: without iptables if that is what failed, else as is (a killed daemon's
        # leftovers are often gone a few seconds later).
        if [[ " ${extra[*]} " != *" --iptables=false "* ]] &&
            tail -c "+$LOG_OFFSET" "$(dockerd_log_path)" | grep -v "^==== " | grep -qiE 'iptables|nf_tables|xtables'; then
            say "dockerd failed on iptables; retrying with --iptables=false --ip-masq=false (no NAT)"
            extra+=(--iptables=false --ip-masq=false)
        else
            say "retrying dockerd once"
        fi
        start_dockerd "${extra[@]}" || die "dockerd does not start; see $(dockerd_log_path)"
    fi
    say "docker engine answers ($DOCKER, server $("$DOCKER" version -f '{{.Server.Version}}')) after $(elapsed)"
}

# ----------------------------------------------------------------------------------- base images

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

verify_base() {
    local v
    v=$("$DOCKER" run --rm "$BASE_IMAGE" cat /etc/debian_version) || die "$BASE_IMAGE does not run"
    case "$v" in
        12.* | bookworm*) say "$BASE_IMAGE runs: debian_version $v" ;;
        *) die "$BASE_IMAGE reports debian_version '$v', expected 12.x (bookworm)" ;;
    esac
}

tag_alias() {
    if ! have_image "$BASE_ALIAS"; then
        say "tagging $BASE_IMAGE as $BASE_ALIAS"
        "$DOCKER" tag "$BASE_IMAGE" "$BASE_ALIAS"
    fi
}

import_rootfs() {
    local sha
    sha=$(sha256sum "$ROOTFS_TAR" | cut -d' ' -f1)
    say "docker import $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1), sha256 ${sha:0:12}) as $BASE_IMAGE"
    "$DOCKER" import \
        --change 'CMD ["bash"]' \
        --change "ENV $IMAGE_PATH_ENV" \
        --change "LABEL org.opencontainers.image.source=$BASE_LABEL_SOURCE" \
        --change 'LABEL org.opencontainers.image.description="debian bookworm, debootstrap --variant=minbase, slimmed"' \
        --change "LABEL labctl.rootfs.sha256=$sha" \
        --message "labctl: debootstrap --variant=minbase bookworm $MIRROR" \
        "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
}

# Trim a minbase rootfs towards what the official -slim image is.
slim_rootfs() {
    local root=$1
    mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d" "$root/etc/apt/sources.list.d"
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# as in the official debian:*-slim images
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'Acquire::GzipIndexes "true";\n' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    printf 'APT::Install-Recommends "false";\n' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$root/usr/share/man"/* "$root/usr/share/info"/* "$root/usr/share/groff"/* \
        "$root/usr/share/lintian"/* "$root/usr/share/linda"/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    rm -rf "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/*.bin "$root/var/cache/apt/archives"/*.deb \
        "$root/var/log"/*.log "$root/var/log/apt"/* "$root/var/cache/debconf"/*-old \
        "$root/etc/hostname" "$root/etc/resolv.conf" "$root/tmp"/* "$root/root/.bash_history"
    : >"$root/etc/hostname"
    mkdir -p "$root/var/lib/apt/lists/partial"
}

build_rootfs() {
    is_root || die "debootstrap needs root (run: sudo $0 base-images), or make $BASE_IMAGE pullable"
    if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
        apt_install debootstrap || die "debootstrap is missing and cannot be installed"
    fi
    local debootstrap tmp t0
    debootstrap=$(command -v debootstrap || echo /usr/sbin/debootstrap)
    mkdir -p "$(dirname "$ROOTFS_TAR")"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/labctl-debootstrap.XXXXXX")
    # shellcheck disable=SC2064 # expand now: $tmp is local
    trap "rm -rf '$tmp'" EXIT
    t0=$(date +%s)
    say "debootstrap --variant=minbase bookworm $MIRROR (about a minute; log: $tmp.log)"
    if ! "$debootstrap" --variant=minbase bookworm "$tmp/root" "$MIRROR" >"$tmp.log" 2>&1; then
        tail -n 15 "$tmp.log" | sed 's/^/ensure-env:   | /' >&2
        die "debootstrap failed (full log: $tmp.log)"
    fi
    say "debootstrap done in $(($(date +%s) - t0))s"
    slim_rootfs "$tmp/root"
    tar --numeric-owner --xattrs -C "$tmp/root" -cf "$ROOTFS_TAR.part" .
    mv -f "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf "$tmp" "$tmp.log"
    trap - EXIT
    say "cached rootfs: $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
}

ensure_base_images() {
    if have_image "$BASE_IMAGE"; then
        tag_alias
        say "$BASE_IMAGE present"
        return 0
    fi
    lock
    if have_image "$BASE_IMAGE"; then
        tag_alias
        say "$BASE_IMAGE present"
        return 0
    fi
    if [ "$PULL_TIMEOUT" != 0 ]; then
        say "docker pull $BASE_IMAGE (timeout ${PULL_TIMEOUT}s)"
        if timeout "$PULL_TIMEOUT" "$DOCKER" pull -q "$BASE_IMAGE" >/dev/null 2>"$CACHE_DIR/pull.err"; then
            tag_alias
            verify_base
            return 0
        fi
        say "pull failed: $(tail -n 1 "$CACHE_DIR/pull.err" | cut -c1-160)"
    fi
    if [ -s "$ROOTFS_TAR" ]; then
        say "re-importing the cached rootfs (delete it to rebuild with debootstrap)"
    else
        build_rootfs
    fi
    if ! import_rootfs; then
        die "docker import of $ROOTFS_TAR failed (a corrupt cache? delete it and rerun)"
    fi
    tag_alias
    verify_base
}

# ------------------------------------------------------------------------------------------ main

main() {
    local what=${1:-all}
    [ $# -le 1 ] || { usage; exit 2; }
    case "$what" in
        all | --all) ensure_docker; ensure_base_images ;;
        docker | --docker) ensure_docker ;;
        base-images | --base-images) ensure_docker; ensure_base_images ;;
        -h | --help | help) usage 2>&1; exit 0 ;;
        *) say "unknown subcommand '$what'"; usage; exit 2 ;;
    esac
    say "ready ($what) in $(elapsed)"
}

main "$@"
