# syntax=docker/dockerfile:1
#
# ltigate container image: a release build on Debian 12, run on distroless
# (glibc, CA certificates, no shell) as the unprivileged user 65532.
#
#   docker build -t registry.example.com/ltigate:0.1.0 .     (or podman build)
#
# The chart runs it as `ltigate serve --config /etc/ltigate/ltigate.toml`.
#
# BUILD_IMAGE and RUNTIME_IMAGE name the two bases, for a registry mirror:
#   --build-arg BUILD_IMAGE=mirror.example.com/library/rust:1.95-bookworm
# scripts/image-local builds a runtime-only image on a base made locally.

ARG RUST_VERSION=1.95
ARG BUILD_IMAGE=docker.io/library/rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/ltigate /out/bin/ltigate \
 && install -d -m 0750 /out/data/data

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/bin/ltigate /usr/local/bin/ltigate
# Working directory owned by the runtime user, so the embedded store's default
# path (data/ltigate.db) is writable in a plain `docker run`; the chart mounts
# a volume at /var/lib/ltigate instead.
COPY --from=build --chown=65532:65532 /out/data /var/lib/ltigate
WORKDIR /var/lib/ltigate
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/ltigate"]
CMD ["serve", "--config", "/etc/ltigate/ltigate.toml"]
