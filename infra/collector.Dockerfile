# Builds the collector image. Run from the repository root:
#   docker build -f infra/collector.Dockerfile -t errorflow-collector .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p errorflow-collector

FROM debian:bookworm-slim
# git: `errorflow-collector rca` reads a checkout with it (infra/github/errorflow-rca.yml).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates git && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/errorflow-collector /usr/local/bin/errorflow-collector
USER nobody
EXPOSE 8000
ENTRYPOINT ["errorflow-collector"]
CMD ["serve"]
