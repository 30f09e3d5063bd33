# rc_mcp: one module on a slim Python base, run as a numeric non-root user, OAuth state on /data.
# Build: docker build -t rc_mcp .   (the same file is built by `fly deploy`)
FROM python:3.12-slim

# Build-time settings only. hadolint's DL3064 flags ENV names that look like secrets (TOKEN_*): the
# token store's path is none, but it is run-time configuration, so it is not here. rc_mcp defaults
# to /data/oauth-tokens.json when /data is writable, and the deploy files that want a 0700
# subdirectory (fly.toml, compose.yaml, the Kubernetes ConfigMap) set TOKEN_STORE_PATH at run time.
# Secrets are never baked into the image. HOST: a container listens on all its interfaces.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=3000 \
    HOST=0.0.0.0

WORKDIR /app

# The dependencies in a layer of their own: it is rebuilt only when requirements.txt changes.
# Byte-compiled once, by compileall, at build time: site-packages is read-only for the app user
# (and the root filesystem may be read-only altogether, as in the Kubernetes manifest).
COPY requirements.txt .
RUN pip install --no-compile -r requirements.txt \
 && python -m compileall -q "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# The app user (uid/gid 10001, numeric below so Kubernetes' runAsNonRoot can verify it) owns
# nothing but /data.
RUN groupadd --system --gid 10001 rcmcp \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin rcmcp \
 && install -d -m 700 -o 10001 -g 10001 /data

COPY rc_mcp.py .
RUN python -m compileall -q rc_mcp.py

USER 10001:10001
VOLUME ["/data"]
EXPOSE 3000
# rc_mcp shuts down gracefully on SIGTERM (open streams get 5 s); give it 10 s (docker stop -t 10).
STOPSIGNAL SIGTERM
# Docker's own check (Fly ignores it and uses fly.toml's; Kubernetes uses its probes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=4)"]
# Importing the module (rather than running it as a script) uses its compiled .pyc.
CMD ["python", "-c", "import sys, rc_mcp; sys.exit(rc_mcp.main())"]
