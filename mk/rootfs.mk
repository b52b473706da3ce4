# mk/rootfs.mk: included by the main Makefile.
#
# `make rootfs` builds $(ROOTFS), the guest's read-only root directory: Debian
# bookworm's python3 and python3-numpy with their dependency closure, unpacked
# and byte-compiled (see scripts/rootfs.sh). It returns at once when the
# rootfs is up to date; `make rootfs FORCE=1` rebuilds it anyway.

ROOTFS ?= build/rootfs

# This fragment's directory, so the script is found whatever the including
# Makefile's location.
FORKVM_ROOTFS_MK_DIR := $(dir $(lastword $(MAKEFILE_LIST)))

.PHONY: rootfs
rootfs:
	bash $(FORKVM_ROOTFS_MK_DIR)../scripts/rootfs.sh $(ROOTFS)
