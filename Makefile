# forkvm: run untrusted code in sub-millisecond, hardware-isolated VMs.
#
#   make demo   build forkvm, the guest root directory and the python template,
#               then run a numpy snippet in a sandbox forked from the template
#   make test   the test suite: real KVM VMs, real CPython in the guest, a real
#               HTTP server on loopback with both SDKs (needs root and /dev/kvm)

GO      ?= go
ROOTFS  ?= build/rootfs
FORKVM  := build/forkvm
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Templates go to forkvm's default state directory (~/.local/share/forkvm)
# unless STATE_DIR is set.
STATE_FLAG := $(if $(STATE_DIR),--state-dir $(STATE_DIR),)

include mk/rootfs.mk

.PHONY: all build deps template demo test test-go test-sdk bench docs clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(FORKVM) ./cmd/forkvm

# The template is rebuilt every time (about a second) so that it always
# matches this forkvm and rootfs.
template: build rootfs
	$(FORKVM) template build python --rootfs $(ROOTFS) $(STATE_FLAG)

demo: template
	@echo
	@echo "== a static C program in a fresh kernel-less VM"
	@gcc -static -O2 -o build/hello testdata/hello.c
	$(FORKVM) run -- build/hello
	@echo
	@echo "== Python with numpy in a sandbox forked from the template"
	$(FORKVM) exec $(STATE_FLAG) 'import numpy as np; print("numpy", np.__version__, "in a forked VM:", np.arange(10).sum(), np.linalg.solve([[3, 1], [1, 2]], [9, 8]), np.random.rand(3))'

test: test-go test-sdk

test-go: build rootfs
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# The SDKs' tests against a real `forkvm serve` on loopback.
test-sdk: template
	FORKVM_SERVE_CMD="$(FORKVM) serve $(STATE_FLAG) --pool 2" bash sdk/run-tests.sh

bench: template
	$(FORKVM) bench $(STATE_FLAG)

docs: build
	$(FORKVM) syscalls > docs/syscalls.md

clean:
	rm -rf build/forkvm build/hello
