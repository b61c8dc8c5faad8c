# syntax=docker/dockerfile:1
# Gateway image for the compose demo: Debian's NGINX with njs, plus TokenSentry for
# the enforcement agent (`tokensentry enforce`), which runs `nginx -t` and
# `nginx -s reload` and so needs the same binary, modules and configuration.
# The compose file runs NGINX and the agent as two containers of this image
# that share the PID namespace, the generated-config volume and /run/nginx.
#
#   docker build -f deploy/docker/gateway.Dockerfile -t tokensentry-gateway:dev .
#
# Bookworm, because the NGINX renderer's njs code is written for bookworm's njs 0.7.9.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/tokensentry/bin:$PATH
RUN python -m venv /opt/tokensentry
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY detectors ./detectors
COPY schemas ./schemas
RUN pip install .

FROM python:3.11-slim-bookworm
# Debian pins these through the bookworm release; the image follows its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx libnginx-mod-http-js \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /etc/nginx/tokensentry /run/nginx /var/log/gateway /var/lib/tokensentry
COPY --from=build /opt/tokensentry /opt/tokensentry
# DL3064 flags any variable whose name contains "TOKEN"; these hold no secret.
# hadolint ignore=DL3064
ENV PATH=/opt/tokensentry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TOKENSENTRY_DATA_DIR=/var/lib/tokensentry \
    TOKENSENTRY_LOG_FORMAT=json
WORKDIR /var/lib/tokensentry
EXPOSE 8080
ENTRYPOINT ["tokensentry"]
CMD ["enforce", "--nginx-dir=/etc/nginx/tokensentry"]
