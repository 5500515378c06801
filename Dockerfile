# The `strata` binary in a slim runtime image.
#
#   docker build -t strata .
#   docker run --rm -v "$PWD/project:/work/project" strata build /work/project
#
# Stage 1 compiles the workspace's binary (about 30 minutes on 2 cores); stage 2 holds only the
# binary, CA certificates (rustls reads the system roots) and an unprivileged user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# jemalloc's build needs make; everything else is Rust (rustls, no OpenSSL).
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p stratalake-cli --bin strata \
    && strip target/release/strata

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /work strata
COPY --from=build /src/target/release/strata /usr/local/bin/strata
USER 10001
WORKDIR /work
# SIGTERM (Kubernetes, Airflow's pod operator) cancels a run cleanly: nothing partial is visible.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/strata"]
CMD ["--help"]
