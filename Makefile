# The two commands of the README, and the steps they share.
#   make demo   Temporal dev server + two local Kubernetes clusters + worker + a workflow
#   make test   lint, format check, type check, import contracts, then the whole test suite
#               (installs Debian's chromium for the UI test if it is missing)
#   make bench  a move's per-ordinal time and unavailability against a kubectl script and
#               the cluster's floor, then preflight's wall time for 200 and 1,000 ordinals
#               (prints figures only)
# Both create .venv, install the project with its dev extras, and build (once) or
# reuse the Kubernetes binaries in ~/.cache/statefulset-migrator.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo demo-redis test faults field real bench bench-binding bench-scale lint binaries test-packages clusters clean image image-lock image-test image-packages

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

binaries: $(STAMP)
	@$(BIN)/python -m devenv build >/dev/null

# Debian packages the tests use, installed once: Chromium (driven by Playwright in the
# Temporal UI test) and redis-server/redis-cli (a real Redis Cluster for the health probe).
test-packages:
	@command -v chromium >/dev/null && command -v redis-server >/dev/null || { \
	  echo "installing Debian's chromium and redis-server for the tests ..."; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium redis-server \
	    >/dev/null; }

demo: binaries
	$(BIN)/python -m devenv demo $(ARGS)

# The seed's Redis Cluster for real (devenv/redisdemo.py): six real redis-server pods on
# the real kubelet nodes, moved with the failover hooks while a client on this machine
# reads and writes; ARGS='--no-hooks' to compare, '--exit' to stop at the end. Needs root.
demo-redis: binaries test-packages
	$(BIN)/python -m devenv demo --redis $(ARGS)

clusters: binaries
	$(BIN)/python -m devenv up $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# pytest exits 5 when it collected nothing; say so loudly rather than pass silently.
test: lint binaries test-packages
	@$(BIN)/pytest $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# Every fault-injection scenario (the slow ones too), then the scenario table.
faults: binaries test-packages
	$(BIN)/pytest -m faults -p no:cacheprovider -rA $(ARGS)

# Benchmarks, never tests, each on its own local clusters, one after the other. First
# moves: per-ordinal time and per-identity unavailability of the product, of a kubectl
# script of the KEP-3335 procedure and of a pod recreated in place (6 replicas, two pod
# profiles; MOVES_ARGS='--replicas 20 --profile 5s:10' for others). Then preflight
# (build_plan) for StatefulSets of 200 and 1,000 replicas; ARGS='--also /other/checkout'
# times that checkout's preflight on the same StatefulSets too. Then scale (as
# bench-scale): 1,000 replicas with max_unavailable 1 and 10, and 20 migrations at once
# against a lone one (SCALE_ARGS='--large 200' for a shorter run). About 40 minutes.
SCALE_ARGS ?= --large 1000 --max-unavailable 1,10 --concurrent 20
bench: binaries
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/moves.py $(MOVES_ARGS)
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/preflight.py $(ARGS)
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/scale.py $(SCALE_ARGS)

# Create-to-Bound of imported volumes, 20 ordinals one at a time, on its own local
# clusters; a benchmark, never a test. ARGS='--also /other/checkout --raw' adds that
# checkout's order and both orders made with bare API calls.
# One migration of a large StatefulSet (runs, events, bytes) and many small ones at once
# (slowdown, and the CPU of the worker, each cluster process and Temporal), on one
# worker, with its peak RSS; ARGS='--large 1000 --max-unavailable 1,10 --concurrent 0' or
# '--large 0 --concurrent 20'.
bench-scale: binaries
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/scale.py $(ARGS)

bench-binding: binaries
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/binding.py $(ARGS)

# The worker under exactly the shipped roles, and what preflight refuses of the destination
# and of other writers (about 7 minutes; left out of make test to keep it under 20).
field: binaries test-packages
	$(BIN)/pytest -m field -p no:cacheprovider $(ARGS)

# Real kubelet nodes beside the kwok ones (devenv/realnodes.py): real redis-server pods from
# local images, one hostPath volume read in both clusters, pod IPs routed between them, and
# nothing left when the launcher is killed. Installs Debian's containerd, runc and CNI
# plugins when missing and builds the kubelet once; needs root (not part of make test).
real: binaries test-packages
	$(BIN)/pytest -m real -p no:cacheprovider $(ARGS)

# The worker image without Docker (deploy/image/build.sh): mmdebstrap, the locked wheels,
# umoci; an OCI layout in build/image/oci and its digest in build/image/image.digest,
# the same for two builds of one commit. Needs root (mmdebstrap --mode=root).
IMAGE_DIR := build/image

image-packages:
	@command -v mmdebstrap >/dev/null && command -v umoci >/dev/null && command -v runc >/dev/null || { \
	  echo "installing Debian's mmdebstrap, umoci and runc for the image ..."; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap umoci runc \
	    >/dev/null; }

image: $(STAMP) image-packages
	$(SUDO) env PYTHON=$(CURDIR)/$(BIN)/python deploy/image/build.sh $(IMAGE_DIR)

# Pin the image's dependencies again (from pyproject.toml's ranges), with their hashes.
image-lock: $(STAMP)
	$(BIN)/python deploy/image/lock.py > deploy/image/requirements.lock

# Build the image, then run it with runc against the local clusters and Temporal and
# migrate a StatefulSet with it (tests/cluster/test_image.py; not part of make test).
image-test: image binaries
	$(BIN)/pytest -m image -p no:cacheprovider $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
