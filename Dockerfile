# syntax=docker/dockerfile:1
# Build: compile TypeScript with the dev dependencies; run: production dependencies only, non-root.
ARG NODE_IMAGE=node:26-bookworm-slim

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
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config/tollgate.example.yaml ./config/tollgate.example.yaml
USER node
EXPOSE 8080 8081
ENV TOLLGATE_CONFIG=/etc/tollgate/tollgate.yaml
HEALTHCHECK --interval=10s --timeout=2s CMD node -e "fetch('http://127.0.0.1:'+(process.env.TOLLGATE_PORT||8080)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/main.js"]
