# One image for every Python service (gateway, auth, inference worker, archiver and the RabbitMQ
# definitions job); compose and the Kubernetes manifests pick the process with `command:`. Build
# from the repository root:
#   docker build -t enterprise-chat .
# The chat page's pinned npm libraries (package-lock.json), copied into gateway/web/vendor/ by the
# same script as `make web`; only those files reach the image (no node, no node_modules).
FROM node:20-slim AS web
WORKDIR /src
COPY package.json package-lock.json ./
COPY scripts/build-web.sh scripts/
RUN mkdir -p gateway/web && bash scripts/build-web.sh

# Dependencies are the runtime part of uv.lock, exactly (uv sync --locked fails when the lock does
# not match pyproject.toml); UV_VERSION is the Makefile's.
FROM python:3.11-slim-bookworm AS build
ARG UV_VERSION=0.13.8
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON=/usr/local/bin/python3 UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# The locked dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-install-project --no-editable
COPY . .
COPY --from=web /src/gateway/web/vendor gateway/web/vendor
RUN uv sync --locked --no-editable

FROM python:3.11-slim-bookworm
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY compose/rabbitmq_definitions.py /app/compose/rabbitmq_definitions.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production
WORKDIR /app
USER ${APP_UID}:${APP_UID}
# auth, gateway, worker health/metrics, archiver health/metrics
EXPOSE 8001 8101 8201 8301
CMD ["python", "-m", "gateway"]
