# pound in a container: build with Rust alone, run as a non-root user on a
# slim Debian base.
#   docker build --build-arg POUND_COMMIT=$(git rev-parse --short=12 HEAD) -t pound .
#   docker run -v /srv/pound:/var/lib/pound -v /etc/pound:/etc/pound:ro \
#     -p 8080:8080 -p 5060:5060/udp pound
FROM rust:1-slim-bookworm AS build
ARG POUND_COMMIT=unknown
ENV POUND_COMMIT=${POUND_COMMIT}
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/pound

FROM debian:bookworm-slim
# Root certificates for webhooks to https:// callback URLs.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/pound --shell /usr/sbin/nologin pound \
    && mkdir -p /var/lib/pound /etc/pound && chown pound:pound /var/lib/pound
COPY --from=build /src/target/release/pound /usr/local/bin/pound
USER pound
WORKDIR /var/lib/pound
# The API binds 127.0.0.1:8080 by default: set api.bind = "0.0.0.0:8080" in
# /etc/pound/pound.toml (or POUND_API_BIND) to publish it.
ENV POUND_API_BIND=0.0.0.0:8080 POUND_STORE=sqlite:///var/lib/pound/pound.db
EXPOSE 8080/tcp 5060/udp 5060/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["pound"]
CMD ["serve", "--config", "/etc/pound/pound.toml"]
