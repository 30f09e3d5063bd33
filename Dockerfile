# rc_mcp: one module, a slim Python base, a non-root user, OAuth state on the /data volume.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=3000 \
    TOKEN_STORE_PATH=/data/oauth-tokens.json

WORKDIR /app
COPY requirements.txt .
# Byte-compile the dependencies at build time: site-packages is read-only for the app user.
RUN pip install -r requirements.txt \
 && python -m compileall -q "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

COPY rc_mcp.py .
RUN python -m compileall -q rc_mcp.py \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin rcmcp \
 && install -d -m 700 -o rcmcp /data

USER rcmcp
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=4)"]
# Importing the module (rather than running it as a script) uses its compiled .pyc.
CMD ["python", "-c", "import sys, rc_mcp; sys.exit(rc_mcp.main())"]
