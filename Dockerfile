# Multi-stage build: wheels are built in one stage and the front-end libraries fetched from npm
# in another; the runtime stage has neither compiler nor npm and runs as an unprivileged user.
# Run it with a real key (placeholders are refused in production):
#   docker run -e SUPPORTBROKER_SECRET_KEY=... -p 8080:8080 -v sb-var:/srv/supportbroker/var IMAGE
FROM node:20-slim AS assets
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY broker ./broker
COPY agent ./agent
COPY audit ./audit
COPY web ./web
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
RUN useradd --system --create-home --home-dir /srv/supportbroker --uid 10001 broker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The broker serves htmx, xterm.js, ... from node_modules beside its package directory
# (broker/ui/common.py: NODE_MODULES), i.e. in site-packages once installed.
COPY --from=assets /assets/node_modules /usr/local/lib/python3.11/site-packages/node_modules
USER broker
WORKDIR /srv/supportbroker
ENV SUPPORTBROKER_ENVIRONMENT=production \
    SUPPORTBROKER_HOST=0.0.0.0 \
    SUPPORTBROKER_DATA_DIR=/srv/supportbroker/var \
    PYTHONUNBUFFERED=1
EXPOSE 8080 2222
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
CMD ["supportbroker", "serve"]
