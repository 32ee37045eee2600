# xdplb images: FROM scratch, one static binary each, no shell.
#
# From source (needs the golang image, i.e. a registry):
#   docker build --target xdplb  -t xdplb:latest  .
#   docker build --target whoami -t whoami:latest .
# From binaries built on the host (offline; what `make image` does):
#   make build && docker build --build-arg BUILD=prebuilt --target xdplb -t xdplb:latest .
#
# BUILD picks the stage that provides /src/bin/{xdplb,whoami}. BuildKit builds
# only the stages the target needs, so BUILD=prebuilt never touches golang.
# (No "# syntax=" line on purpose: it would make BuildKit pull a frontend image.)
ARG BUILD=source

FROM golang:1.26-bookworm AS build-source
# bookworm's libbpf (1.1) is too old for libbpfgo; bookworm-backports has 1.4.
# Exactly as scripts/deps.sh: copy the image's own first apt stanza with the
# suite changed, so no mirror host name is written here. Only libbpf-dev comes
# from backports: with `-t bookworm-backports` for everything, apt also takes
# libelf-dev 0.192 from there, whose static libelf.a does not link
# (undefined eu_search_tree_init).
RUN set -eux; \
	awk 'BEGIN{RS="";ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources \
		| sed -E 's/^Suites:.*/Suites: bookworm-backports/' \
		> /etc/apt/sources.list.d/xdplb-backports.sources; \
	apt-get update -qq; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -qq --no-install-recommends make clang llvm libelf-dev zlib1g-dev libzstd-dev; \
	apt-get install -y -qq --no-install-recommends -t bookworm-backports libbpf-dev; \
	rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# The caches only speed up rebuilds; the binaries do not depend on them.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	make build VERSION=${VERSION}

FROM scratch AS build-prebuilt
# Whatever of bin/xdplb and bin/whoami exists (.dockerignore admits only those).
COPY bin/ /src/bin/

FROM build-${BUILD} AS build

# The demo and test backend (cmd/whoami): HTTP :8080, TCP echo :9000, UDP echo :9001.
FROM scratch AS whoami
COPY --from=build /src/bin/whoami /whoami
EXPOSE 8080/tcp 9000/tcp 9001/udp
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["/whoami", "check"]
ENTRYPOINT ["/whoami"]
CMD ["serve"]

# Holds the balancer's network namespace (docker-compose.yml, lbnet). No
# HEALTHCHECK: it has nothing to check but that it runs.
FROM scratch AS hold
COPY --from=build /src/bin/xdplb-hold /xdplb-hold
ENTRYPOINT ["/xdplb-hold"]

# The load balancer. Needs cap_add NET_ADMIN and SYS_ADMIN, not privileged
# (see README.md); in docker discovery mode, also the Docker socket.
FROM scratch AS xdplb
COPY --from=build /src/bin/xdplb /xdplb
EXPOSE 9180/tcp
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["/xdplb", "health"]
ENTRYPOINT ["/xdplb"]
CMD ["run"]
