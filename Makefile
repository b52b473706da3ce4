# forkvm: run untrusted code in sub-millisecond, hardware-isolated VMs.
#
#   make demo   build everything (forkvm, the guest root directory) and run a
#               numpy snippet in a VM
#   make test   run the test suite (real KVM VMs; needs root and /dev/kvm)

GO      ?= go
ROOTFS  ?= build/rootfs
FORKVM  := build/forkvm
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

include mk/rootfs.mk

.PHONY: all build deps demo test bench docs vet clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(FORKVM) ./cmd/forkvm

demo: build rootfs
	@echo "== a static C program in a kernel-less VM"
	@gcc -static -O2 -o build/hello testdata/hello.c
	$(FORKVM) run -- build/hello
	@echo "== numpy in a kernel-less VM"
	$(FORKVM) run --stats --rootfs $(ROOTFS) -- /usr/bin/python3 -c \
		'import numpy as np; a = np.arange(10); print("numpy", np.__version__, "says", a.sum(), "and", np.linalg.solve([[3, 1], [1, 2]], [9, 8]))'

test: build rootfs
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

bench: build rootfs
	$(GO) test -run XXX -bench . -benchtime 3x ./...

docs: build
	$(FORKVM) syscalls > docs/syscalls.md

clean:
	rm -rf build/forkvm build/hello
