# SPDX-License-Identifier: AGPL-3.0-only
# rfm agent image: a static binary on a distroless base.
#
#   docker build -t rfm .
#   docker run --network host --cap-drop ALL \
#     --cap-add BPF --cap-add NET_ADMIN --cap-add PERFMON \
#     --read-only -v /etc/rfm:/etc/rfm:ro rfm
#
# The BPF object (internal/datapath/rfm_bpfel.o) is committed, so the
# build needs only Go: no clang or kernel headers.

FROM golang:1.25-bookworm AS build
WORKDIR /src
# Modules first, so source edits do not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/rfm ./cmd/rfm

# static-debian12 has CA certificates, /etc/passwd and tzdata but no shell.
# It runs as uid 0 on purpose: the runtime grants the added capabilities to
# uid 0 only (Kubernetes sets no ambient capabilities for other users), and
# the agent drops every capability but CAP_BPF, CAP_NET_ADMIN and
# CAP_PERFMON at start.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/rfm /usr/local/bin/rfm
# Licence texts: Go code AGPL-3.0-only, the embedded BPF program
# GPL-2.0-only.
COPY LICENSE /usr/share/doc/rfm/LICENSE
COPY LICENSES/ /usr/share/doc/rfm/LICENSES/
# Metrics and /healthz.
EXPOSE 9669/tcp
ENTRYPOINT ["/usr/local/bin/rfm", "agent", "-c", "/etc/rfm/rfm.toml"]
