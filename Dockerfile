# classiclink-mirror in a container. Usage: docs/operations.md, "Docker".
#
#   docker build -t classiclink-mirror .
#   docker run -d --name classiclink-mirror --stop-timeout 40 -p 9464:9464 \
#     -v /etc/classiclink-mirror:/etc/classiclink-mirror:ro \
#     -v classiclink-mirror-state:/var/lib/classiclink-mirror classiclink-mirror
#
# The mapping file is read from /etc/classiclink-mirror/classiclink-mirror.toml:
# mount the directory (a single-file bind mount keeps the old inode when an
# editor replaces the file, so the daemon would never see the change).
# Inside a container, daemon.listen must be "0.0.0.0:9464": the default
# 127.0.0.1 is the container's own loopback, unreachable through -p.

# --- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/classiclink-mirror /out/classiclink-mirror \
 && install -d -m 0700 /out/state

# --- runtime -----------------------------------------------------------------
# distroless/cc: glibc and libgcc_s for the Rust binary (built on the same
# Debian 12), CA certificates, a "nonroot" user (65532), no shell, no package
# manager. TLS: aws-sdk-ec2's default-https-client is rustls, whose root
# store comes from rustls-native-certs: SSL_CERT_FILE / SSL_CERT_DIR when set,
# else the well-known bundle paths, on Debian /etc/ssl/certs/ca-certificates.crt,
# which this image ships. (Without it every HTTPS call to EC2 fails and the SDK
# logs "no native root CA certificates found".)
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/classiclink-mirror /usr/local/bin/classiclink-mirror
# daemon.state_dir: the state file (docs/operations.md, "What survives a
# restart"). Mount a named volume here to keep it across containers.
COPY --from=build --chown=65532:65532 /out/state /var/lib/classiclink-mirror
VOLUME /var/lib/classiclink-mirror
# JSON logs on stderr, one object per line (also the default off a TTY).
ENV CLASSICLINK_MIRROR_LOG_FORMAT=json
# /metrics /healthz /readyz /status (daemon.listen).
EXPOSE 9464
USER nonroot
# No curl in the image: the binary checks its own /healthz
# (http://127.0.0.1:9464/healthz by default; pass --url for another port).
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD ["/usr/local/bin/classiclink-mirror", "healthcheck"]
# SIGTERM (docker stop) drains in-flight actions for up to 20 s: give the
# container more than Docker's default 10 s (--stop-timeout 40 above).
ENTRYPOINT ["/usr/local/bin/classiclink-mirror"]
CMD ["run", "--config", "/etc/classiclink-mirror/classiclink-mirror.toml"]
