# The opi-bot GitHub Action: a container action (see action.yml).
FROM python:3.11-slim

# git for checkouts and pushes, ripgrep for the grep tool, util-linux for setpriv (drop to the
# workspace owner), ca-certificates for HTTPS to the model providers and GitHub. The workspace is
# owned by the runner user, not by whoever runs git in here, hence safe.directory.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ripgrep util-linux ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && git config --system --add safe.directory '*'

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/opi-bot
COPY pyproject.toml README.md ./
COPY bot ./bot
# The same command CI exercises in a fresh venv (tests/test_action_packaging.py).
RUN python -m pip install .

COPY docker/entrypoint.sh /usr/local/bin/opi-entrypoint
RUN chmod 0755 /usr/local/bin/opi-entrypoint \
 && ln -s opi-entrypoint /usr/local/bin/opi-post-entrypoint

ENTRYPOINT ["/usr/local/bin/opi-entrypoint"]
