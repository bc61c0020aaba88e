# spatialgen-sync for NAS and container hosts.
#   docker build -t spatialgen-sync .
#   docker run -d --name spatialgen-sync \
#     -e SPATIALGEN_API_KEY=... \
#     -v /volume1/exports:/watch -v spatialgen-state:/state \
#     spatialgen-sync
# The default config watches /watch (one subfolder per video, polling every
# 15s because NAS bind mounts often deliver no change events) and keeps its
# journal in /state. Mount your own at /config/config.toml to change it.
# The HEALTHCHECK asks the agent's /healthz on 127.0.0.1:9464 (the default
# config's [metrics] listen; keep that line in a config of your own): 200 is
# healthy, a 503 (key refused, watch folder missing, journal unreadable) or
# no answer is not. The image has no curl: bash's /dev/tcp does the GET.
# Open files: the agent raises its soft limit to the hard one when it starts
# (Docker's default hard limit is 524288 or more); where a runtime gives a low
# hard limit, add --ulimit nofile=65536:65536 (compose: ulimits: nofile: 65536).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/spatialgen-sync

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /state --shell /usr/sbin/nologin spatialgen \
    && mkdir -p /state /watch /config && chown spatialgen:spatialgen /state
COPY --from=build /src/target/release/spatialgen-sync /usr/local/bin/spatialgen-sync
COPY packaging/docker/config.toml /config/config.toml
USER spatialgen
VOLUME ["/watch", "/state"]
ENV SPATIALGEN_SYNC_CONFIG=/config/config.toml
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/spatialgen-sync"]
CMD ["run"]
