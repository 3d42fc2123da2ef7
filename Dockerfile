# One image, every nvmirror binary. Static Go binaries are built in the first
# stage; the runtime stage carries only what the node plugin and the target
# agent shell out to.
FROM golang:1.26-bookworm AS builder
WORKDIR /src
# Modules first, so source edits do not invalidate the module cache layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make build VERSION=${VERSION}

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends mdadm e2fsprogs xfsprogs util-linux kmod ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /src/bin/ /usr/local/bin/
