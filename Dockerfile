# POSPal license server image. Build: docker build -t pospal-server .
# BASE is any image with Python 3.11+ as python3 and the venv module (scripts/image_smoke.sh builds on a
# Debian bookworm rootfs where no registry is reachable; scripts/compose_smoke.sh runs compose.yaml on it).
ARG BASE=python:3.11-slim
# Builder: the server's locked dependencies (requirements-server.lock: hashes, no Qt, no dev tools) into a venv.
FROM ${BASE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
COPY requirements-server.lock /tmp/requirements-server.lock
RUN /opt/venv/bin/pip install --require-hashes -r /tmp/requirements-server.lock
COPY . /src
RUN /opt/venv/bin/pip install --no-deps /src

# Final: the venv only, no build tools, a non-root user.
FROM ${BASE}
RUN useradd --system --uid 10001 --home-dir /var/lib/pospal --create-home pospal \
    && mkdir -p /var/lib/pospal/keys && chown -R pospal:pospal /var/lib/pospal && chmod 0700 /var/lib/pospal/keys
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    POSPAL_SERVER_DATA_DIR=/var/lib/pospal \
    POSPAL_SIGNING_KEY_DIR=/var/lib/pospal/keys
USER pospal
WORKDIR /var/lib/pospal
VOLUME ["/var/lib/pospal/keys"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["pospal-server"]
CMD ["run", "--host", "0.0.0.0"]
