# ptproxy sidecar image: one ptproxy end per container, configured by /etc/ptproxy/config.toml.
#
#   docker build -t ptproxy .
#   docker run -v ./client:/etc/ptproxy:ro -p 20080:20080 ptproxy
#
# Build arguments:
#   BASE        a Python 3.11+ image with python3 and its venv module (default python:3.11-slim).
#               The builder and the runtime stage use the same base: the venv is copied across.
#   WHEELHOUSE  offline build: a directory inside the build context holding the ptproxy wheel and
#               every dependency's wheel; installed with --no-index, nothing is downloaded.
#               Empty (default): build the wheel from the source tree (Cython speedups need gcc,
#               installed in the builder stage only) and fetch dependencies from the index.
# packaging/docker/build-and-verify.sh builds this with buildah, fully offline.

ARG BASE=python:3.11-slim

FROM ${BASE} AS builder
ARG WHEELHOUSE=""
SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /src
COPY . /src
# The last step writes the table of dataclasses' generated code (ptproxy/ops/dataclasscode.py) that
# each start then reads instead of compiling it: the runtime stage cannot write it (no bytecode,
# not root).
# hadolint ignore=DL3008,DL3013
RUN if [ -n "$WHEELHOUSE" ]; then \
        python3 -m venv /opt/ptproxy; \
        /opt/ptproxy/bin/pip install --no-cache-dir --no-index --find-links "/src/$WHEELHOUSE" ptproxy; \
    else \
        apt-get update; \
        apt-get install -y --no-install-recommends gcc libc6-dev; \
        rm -rf /var/lib/apt/lists/*; \
        python3 -m venv /opt/ptproxy; \
        /opt/ptproxy/bin/pip install --no-cache-dir /src; \
    fi; \
    /opt/ptproxy/bin/ptproxy --version; \
    /opt/ptproxy/bin/python -m ptproxy.ops.dataclasscode

FROM ${BASE}
LABEL org.opencontainers.image.title="ptproxy" \
      org.opencontainers.image.description="HTTP/1.1 reverse proxy pair over one persistent mTLS HTTP/3 session" \
      org.opencontainers.image.licenses="GPL-3.0-or-later"
COPY --from=builder /opt/ptproxy /opt/ptproxy
ENV PATH=/opt/ptproxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 ptproxy \
    && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init --shell /usr/sbin/nologin ptproxy \
    && mkdir -p /etc/ptproxy
# Numeric, so runtimes that check "non-root" without reading /etc/passwd can.
USER 10001:10001
# 20010/udp: the server end's QUIC port; 20080/tcp: the client end's HTTP listener.
EXPOSE 20010/udp 20080/tcp
# SIGTERM drains like SIGINT: finish requests in flight, close QUIC, exit 0.
STOPSIGNAL SIGTERM
# /readyz when [metrics] is configured, else the client's HTTP listener; no curl needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 CMD ["ptproxy", "healthcheck"]
ENTRYPOINT ["ptproxy", "-c", "/etc/ptproxy/config.toml"]
