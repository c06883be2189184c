# Builds the collector image. Run from the repository root:
#   docker build -f infra/collector.Dockerfile -t errorflow-collector .
# (.dockerignore keeps target/ and .git/ out of the build context.)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p errorflow-collector

FROM debian:bookworm-slim
# curl: the compose healthcheck; git: `errorflow-collector rca` reads a checkout with it (infra/github/errorflow-rca.yml).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl git && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/errorflow-collector /usr/local/bin/errorflow-collector
USER nobody
EXPOSE 8000
# curl serves the compose healthcheck (GET /readyz).
HEALTHCHECK --interval=10s --timeout=5s --retries=12 CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
ENTRYPOINT ["errorflow-collector"]
CMD ["serve"]
