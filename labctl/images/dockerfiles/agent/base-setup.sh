#!/bin/sh
# Harness layer shared by every agent runtime (run as root at build time, in the task image):
# a non-root user, git configured system-wide, and the Harbor log directories it may write.
# Env: AGENT_USER, AGENT_UID. The task image's WORKDIR and its files are left as built: a plain Harbor
# task's agent runs there as the task image's own user (labctl.session).
set -eu

pkg_install() {
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
        rm -rf /var/lib/apt/lists/*
    elif command -v apk >/dev/null 2>&1; then
        apk add --no-cache "$@"
    elif command -v dnf >/dev/null 2>&1; then
        dnf install -y "$@" && dnf clean all
    else
        echo "base-setup: cannot install $* (no apt-get, apk or dnf)" >&2
        exit 1
    fi
}

# git: the agent commits and pushes its work; the verifier reads the pushed branch.
command -v git >/dev/null 2>&1 || pkg_install git
# timeout: the verifier's first process (a container that ends on its own, even without labctl).
command -v timeout >/dev/null 2>&1 || pkg_install coreutils

if ! id -u "$AGENT_USER" >/dev/null 2>&1; then
    uid_flag=""
    # Reuse the wanted uid only when it is free (ubuntu images ship uid 1000 as `ubuntu`).
    if ! getent passwd "$AGENT_UID" >/dev/null 2>&1; then uid_flag="$AGENT_UID"; fi
    if command -v useradd >/dev/null 2>&1; then
        useradd --create-home --shell /bin/sh ${uid_flag:+--uid "$uid_flag"} "$AGENT_USER"
    else
        adduser -D -s /bin/sh ${uid_flag:+-u "$uid_flag"} "$AGENT_USER"
    fi
fi
[ "$(id -u "$AGENT_USER")" != 0 ] || { echo "base-setup: $AGENT_USER must not be root" >&2; exit 1; }

# System-wide, so root (the verifier) and the agent see the same settings. safe.directory: the
# workspace may be owned by another uid when the harness mounts it.
git config --system user.name "labctl agent"
git config --system user.email "agent@labctl.invalid"
git config --system init.defaultBranch main
git config --system safe.directory '*'
git config --system core.pager cat
git config --system advice.detachedHead false
git config --system push.autoSetupRemote true

mkdir -p /logs/agent /logs/artifacts
owner="$AGENT_USER:$(id -g "$AGENT_USER")"
chown "$owner" /logs/agent /logs/artifacts
