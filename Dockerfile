# The opi-bot GitHub Action: a container action (see action.yml). Releases pull a prebuilt image by
# digest (.github/workflows/release.yml); `runs.image: Dockerfile` on branches builds this file.
#
# The base: python:3.11-slim-bookworm (Python 3.11.16 on Debian 12), pinned by the digest of its
# multi-platform index (linux/amd64 and linux/arm64 included). Where the digest comes from:
# docker-library/repo-info, repos/python/remote/3.11-slim-bookworm.md (commit 33a22f41ac7b). To move it:
# `docker buildx imagetools inspect python:3.11-slim-bookworm`, then update both lines below.
# The first stage is only this base, so `buildah bud --from IMAGE` (which replaces the first FROM)
# swaps the base of every stage.
FROM python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b AS base

# -- build: the Python dependencies from the hashed lock, then opi itself, into /opt/opi ----------------
FROM base AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# requirements/image.lock pins every dependency with its sha256 (regenerate: requirements/README.md);
# wheels only, so nothing is compiled and no build tool is needed. It leaves out the REPL's libraries,
# which the action never imports.
COPY requirements/image.lock requirements/image.lock
RUN python -m venv /opt/opi \
 && /opt/opi/bin/python -m pip install --require-hashes --no-deps --only-binary=:all: \
      -r requirements/image.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
# opi's own wheel is built from this checkout with the base image's setuptools (no download), then
# installed without dependencies (they all came from the lock above). pip and setuptools leave the venv.
# pip compiles what it installs, so opi and its dependencies ship with their .pyc files (14 MB of
# /opt/opi's 52 MB): every Python process of a step imports bytecode instead of compiling the sources.
# PYTHONDONTWRITEBYTECODE only keeps Python itself from writing more at build and run time.
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
 && /opt/opi/bin/python -m pip install --no-deps --no-index /tmp/dist/*.whl \
 && /opt/opi/bin/python -m pip uninstall -y -q pip setuptools

# -- the image ---------------------------------------------------------------------------------------
FROM base
# git for checkouts and pushes, ripgrep for the grep tool, tini as PID 1 (forwards the runner's SIGTERM
# to opi and reaps orphaned processes), util-linux for setpriv, ca-certificates for HTTPS. The packages
# this layer adds are pinned to their upstream release with a wildcard for Debian's revision: bookworm
# only changes the revision for security fixes, and an exact pin would fail the build as soon as the
# mirror drops the old revision. ca-certificates and util-linux come with the base (pinned by digest)
# and stay at its versions. The workspace belongs to the runner user, not root, hence safe.directory.
# dpkg leaves out what the action never runs: git's servers and rarely used helpers (git-daemon,
# http-backend, imap-send, dumb-HTTP transport, git-shell, scalar, gitweb) and the full Perl library
# git's package pulls in (perl-base's /usr/bin/perl stays): about 19 MB of git helpers and 47 MB of
# Perl on the official base, with dpkg's records intact (docker/dpkg-slim.cfg).
COPY docker/dpkg-slim.cfg /etc/dpkg/dpkg.cfg.d/opi-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      'git=1:2.39.*' 'ripgrep=13.0.*' 'tini=0.19.*' ca-certificates util-linux \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log \
 && git config --system --add safe.directory '*'

COPY --from=build /opt/opi /opt/opi
ENV PATH=/opt/opi/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY docker/entrypoint.sh /usr/local/bin/opi-entrypoint
RUN chmod 0755 /usr/local/bin/opi-entrypoint \
 && ln -s opi-entrypoint /usr/local/bin/opi-post-entrypoint

ENTRYPOINT ["/usr/local/bin/opi-entrypoint"]
