# hubwatch's container image: a static-ish release build on Debian, run from a distroless image as a non-root
# user. The root filesystem can be read-only: the only file hubwatch writes is its state database, whose path
# (`state_path`) the Helm chart puts on a volume.
#
#   docker build -t hubwatch:0.1.0 .
#   docker run --rm hubwatch:0.1.0 --version
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# The manifest names the benchmark targets, so their sources come along; tests are not built.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# jemalloc is built for the page size of the build host; arm64 kernels may use 4, 16 or 64 KiB pages, and a
# 64 KiB build runs on all three.
ARG TARGETARCH
RUN if [ "$TARGETARCH" = arm64 ]; then export JEMALLOC_SYS_WITH_LG_PAGE=16; fi \
 && cargo build --release --locked --bin hubwatch \
 && strip target/release/hubwatch

# glibc and CA certificates, nothing else; uid/gid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hubwatch /usr/local/bin/hubwatch
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/hubwatch"]
CMD ["run", "--config", "/etc/hubwatch/config.yaml"]
