# syntax=docker/dockerfile:1
#
# The persister image: a static binary on distroless, non-root, no shell.
#
#   docker build --build-arg VERSION="$(git describe --always --dirty)" -t persister .
#   docker run --rm -p 9464:9464 -e REDIS_URL=... -e MONGO_URI=... persister
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the Go toolchain cross-compiles; no emulation needed).
#
# CI has no container engine; tools/helmcheck checks this file and runs the
# build stage's `go build` line itself on the .dockerignore'd context, so the
# command below is exactly what CI compiles.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first: this layer is reused while go.mod and go.sum do not change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Set by buildx for the target platform; empty means the build host's.
ARG TARGETOS
ARG TARGETARCH
# Stamped into the binary (persister version).
ARG VERSION=dev
ENV CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH}
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/persister ./cmd/persister

# Static base: CA certificates and tzdata, user nonroot (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/persister /persister
USER nonroot:nonroot
# /metrics, /healthz, /readyz (PERSISTER_HTTP_ADDR, default :9464).
EXPOSE 9464
ENTRYPOINT ["/persister"]
CMD ["run"]
