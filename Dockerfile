# The allocwatch image: the daemon on Debian bookworm-slim.
#
#   docker build -t allocwatch:0.1.0 .
#
# Stage 1 builds allocwatch the way `cargo xtask setup` prepares a Debian
# machine: Debian's rustc-web (with a precompiled core for
# bpfel-unknown-none) and bpf-linker build the eBPF programs, which
# allocwatch/build.rs embeds; Rust 1.95 (the workspace's rust-version)
# builds the rest. Stage 2 is the binary and /bin/sh
# (the DaemonSet's entrypoint finds the PIDs with it).
#
# This file is not built by the project's tests (they run without Docker
# and without network access beyond Debian's and crates.io's registries):
# see docs/deploy.md.

FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y --no-install-recommends \
      rustc-web libstd-rust-web-dev-bpf llvm-22-dev \
 && rm -rf /var/lib/apt/lists/*
RUN PATH="/usr/lib/llvm-22/bin:$PATH" LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
    cargo install bpf-linker --version 0.13.0 --locked \
      --no-default-features --features llvm-22
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p allocwatch \
 && install -m 0755 target/release/allocwatch /allocwatch

FROM debian:bookworm-slim
COPY --from=build /allocwatch /usr/local/bin/allocwatch
# Nothing is written at run time: the root file system can be read-only.
EXPOSE 9464
# Root inside the container, with only the capabilities the DaemonSet
# grants (Kubernetes gives added capabilities to uid 0 only).
USER 0
ENTRYPOINT ["/usr/local/bin/allocwatch"]
CMD ["daemon", "--help"]
