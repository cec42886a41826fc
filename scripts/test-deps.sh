#!/usr/bin/env bash
# Installs what bai's tests start for real, on a fresh Debian/Ubuntu machine, as root:
# rclone + fuse3 (FUSE mounts), samba (an SMB server for File shares), openssh-server +
# sshpass (node SSH), cifs-utils (the `mount -t cifs` path, used where the kernel has cifs),
# Node.js + npm and Azurite (a Blob service), gcc (cc builds the fake libnvidia-ml.so.1 the
# NVML backend's tests load), openmpi-bin (mpirun across a job's nodes) and python3 (the
# distributed jobs' scripts), podman, runc, catatonit (the container's init), docker.io (docker, the second runtime: each test starts its own dockerd), docker-registry and busybox-static (container jobs). Idempotent: it installs only what is missing,
# runs `apt-get update` at most once (and goes on if it fails: the install then says what
# it could not find), and starts no service (each test starts its own on
# loopback and stops it).
set -euo pipefail

AZURITE_VERSION=3.35.0

if [ "$(id -u)" -ne 0 ]; then
  echo "test-deps: run as root (it installs packages)" >&2
  exit 1
fi

# A command each package provides, so a package installed some other way (Node.js from
# another repository, say) counts as present.
declare -A provides=(
  [rclone]=rclone
  [fuse3]=fusermount3
  [samba]=smbd
  [openssh-server]=sshd
  [sshpass]=sshpass
  [cifs-utils]=mount.cifs
  [nodejs]=node
  [npm]=npm
  [sudo]=sudo
  [passwd]=useradd
  [gcc]=cc
  [openmpi-bin]=mpirun
  [python3]=python3
  [podman]=podman
  [runc]=runc
  [catatonit]=catatonit
  [docker.io]=dockerd
  [docker-registry]=docker-registry
  [busybox-static]=busybox
)
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
# sudo: the admin user gets passwordless sudo, tested where sudo exists.
# openmpi-bin: multi-node MPI jobs run a real mpirun; python3: the distributed jobs' scripts.
# podman + runc + catatonit, docker-registry and busybox-static: container jobs (catatonit is
# the container's PID 1 that passes a terminate's SIGTERM on), a local registry and the
# tiny image the container tests build.
for pkg in rclone fuse3 samba openssh-server sshpass cifs-utils nodejs npm sudo passwd gcc openmpi-bin python3 podman runc catatonit docker.io docker-registry busybox-static; do
  have "${provides[$pkg]}" || missing+=("$pkg")
done
# The tests also run jobs through bash and use coreutils (seq, head, od) and util-linux
# (rev, setsid); all are essential packages on Debian, but a slimmed image may lack one.
have bash || missing+=(bash)
for tool in seq sleep head od; do have "$tool" || { missing+=(coreutils); break; }; done
for tool in rev setsid; do have "$tool" || { missing+=(util-linux); break; }; done

updated=0
apt_update_once() {
  if [ "$updated" -eq 0 ]; then
    # A failing update (an unreachable mirror) is not fatal by itself: the install that
    # follows says what could not be found.
    apt-get update -qq || echo "test-deps: apt-get update failed; trying the install anyway" >&2
    updated=1
  fi
}

if [ ${#missing[@]} -gt 0 ]; then
  echo "test-deps: installing ${missing[*]}"
  # Package scripts must not start smbd, nmbd or sshd on their default ports: the
  # tests start their own. policy-rc.d answering 101 forbids it; put one in place only
  # for this install if the machine has none.
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  apt_update_once
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
  if [ "$policy_added" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  if [ "$status" -ne 0 ]; then
    echo "test-deps: apt-get install ${missing[*]} failed ($status)" >&2
    exit "$status"
  fi
fi

# Azurite, pinned: the version whose behaviour the tests were written against.
if ! npm ls -g --depth=0 "azurite@$AZURITE_VERSION" >/dev/null 2>&1; then
  echo "test-deps: installing azurite@$AZURITE_VERSION"
  npm install -g --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
fi

# sshd refuses to start without its privilege-separation directory; without systemd
# nothing creates it.
install -d -m 0755 /run/sshd

for tool in rclone fusermount3 smbd smbpasswd sshd sshpass mount.cifs node npm azurite-blob setsid cc; do
  have "$tool" || { echo "test-deps: $tool is still missing" >&2; exit 1; }
done
echo "test-deps: all present"
