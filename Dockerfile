# syntax=docker/dockerfile:1
# Build: compile TypeScript with the dev dependencies, once; run: production dependencies only, non-root.
# The base is the current Node LTS (26, "lithium"), pinned to a full version tag so a rebuild gets the
# same Node; pin it further with `--build-arg NODE_IMAGE=node:26.13.0-bookworm-slim@sha256:<digest>`.
ARG NODE_IMAGE=node:26.13.0-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# the dashboard bundle (dist/ui) is built from web/ by scripts/build-ui.ts
COPY web ./web
COPY scripts/build-ui.ts ./scripts/
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
# tini as PID 1: forwards SIGTERM to node (which drains) and reaps zombies; node as PID 1 would get
# no default signal handling and the kubelet's SIGTERM could go unheard until SIGKILL
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config/tollgate.example.yaml ./config/tollgate.example.yaml
USER node
EXPOSE 8080 8081
ENV TOLLGATE_CONFIG=/etc/tollgate/tollgate.yaml
HEALTHCHECK --interval=10s --timeout=5s CMD node -e "fetch('http://127.0.0.1:'+(process.env.TOLLGATE_PORT||8080)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["/usr/bin/tini", "--"]
# node directly, not `npm start`: no npm process between tini and node, and nothing compiled at start.
# dist/main.js sets its own V8 memory options (see the README, Operating Tollgate: Memory)
CMD ["node", "dist/main.js"]
