#!/usr/bin/env bash
# scripts/rootfs.sh [OUTDIR] - build the guest's root directory from Debian packages.
#
# The guest sees a read-only root directory holding Debian bookworm's python3
# and python3-numpy with everything they depend on. This script:
#
#   1. resolves the Depends/Pre-Depends closure of $PACKAGES with apt's own
#      solver, simulating an install onto an empty system (no Recommends);
#   2. downloads the .debs into build/debs (kept as a cache);
#   3. unpacks them with dpkg-deb -x into a temporary directory next to OUTDIR
#      (nothing is ever installed into the host's root);
#   4. does the few things maintainer scripts would have done that matter to
#      us: the usr-merge symlinks (/bin, /sbin, /lib, /lib64 -> usr/...) and
#      the update-alternatives links (libblas.so.3, liblapack.so.3, awk, ...);
#      absolute symlinks are rewritten to relative ones so that a host-side
#      path walk below OUTDIR can never escape into the host's own /;
#   5. precompiles the standard library and dist-packages to .pyc with the
#      rootfs's own interpreter (chroot), and checks numpy works;
#   6. writes <rootfs>/etc/forkvm-rootfs.manifest and renames the directory
#      into place, then writes OUTDIR.stamp (build/rootfs.stamp).
#
# When OUTDIR exists and its stamp matches the inputs (this script's content
# and the package list) nothing is done and no network is used. FORCE=1
# rebuilds anyway, e.g. to pick up Debian security updates.
#
# apt runs with its own configuration and state under build/apt: only the
# Debian sources below are used, whatever the host's /etc/apt lists, and the
# host's package lists and dpkg database are neither read nor changed.
set -euo pipefail

PACKAGES=(base-files python3 python3-numpy)
SUITE=bookworm
ARCH=amd64
DEBIAN_SOURCES="Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
# Package lists older than this are refreshed before resolving.
LISTS_MAX_AGE_MIN=1440

say() { printf 'forkvm rootfs: %s\n' "$*"; }
die() { printf 'forkvm rootfs: %s\n' "$*" >&2; exit 1; }

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SCRIPT")/.." && pwd -P)
BUILD=$REPO/build
DEBS=$BUILD/debs
APTDIR=$BUILD/apt

if [[ $# -gt 1 || ${1:-} == -h || ${1:-} == --help ]]; then
	echo "usage: scripts/rootfs.sh [OUTDIR]   (default: build/rootfs in the repository)" >&2
	exit 2
fi
OUTDIR=${1:-$REPO/build/rootfs}
[[ $OUTDIR == /* ]] || OUTDIR=$PWD/$OUTDIR
OUTDIR=$(realpath -m "$OUTDIR")
[[ $OUTDIR != / ]] || die "refusing to use / as OUTDIR"
STAMP=$OUTDIR.stamp
SHOW=${OUTDIR#"$REPO"/} # how OUTDIR is named in messages
MANIFEST_REL=etc/forkvm-rootfs.manifest
START=$SECONDS

sha256() { sha256sum | cut -d' ' -f1; }

# The inputs: this script (which holds the sources, suite and every step) and
# the requested packages. Nothing here needs the network.
SCRIPT_SHA=$(sha256 <"$SCRIPT")
REQUESTED=$(printf '%s\n' "${PACKAGES[@]}" | LC_ALL=C sort -u)
INPUTS_SHA=$(printf 'script %s\n%s\n' "$SCRIPT_SHA" "$REQUESTED" | sha256)

stamp_field() { sed -n "s/^$1 //p" "$STAMP" 2>/dev/null | head -n1; }
manifest_sha() { grep -v '^#' "$1/$MANIFEST_REL" | sha256; }
up_to_date() {
	[[ -z ${FORCE:-} && -f $STAMP && -f $OUTDIR/$MANIFEST_REL ]] || return 1
	[[ $(stamp_field inputs) == "$INPUTS_SHA" ]] || return 1
	[[ $(stamp_field closure) == "$(manifest_sha "$OUTDIR")" ]]
}

if up_to_date; then
	say "$SHOW is up to date"
	exit 0
fi

# One build at a time: build/apt and build/debs are shared by every OUTDIR.
mkdir -p "$BUILD" "$(dirname "$OUTDIR")"
exec 9>"$BUILD/.rootfs.lock"
if ! flock -n 9; then
	say "waiting for another rootfs build to finish"
	flock 9
	if up_to_date; then
		say "$SHOW is up to date"
		exit 0
	fi
fi

TMP=""
OLD=""
cleanup() {
	local rc=$?
	[[ -n $TMP && -e $TMP ]] && rm -rf "$TMP"
	[[ -n $OLD && -e $OLD ]] && rm -rf "$OLD"
	return $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of builds that were killed outright (we hold the lock, so no
# other build is using them).
outparent=$(dirname "$OUTDIR")
outbase=$(basename "$OUTDIR")
rm -rf "$outparent/.$outbase.tmp."* "$outparent/.$outbase.old."*

PATH=$PATH:/usr/sbin:/sbin
for tool in apt-get apt-cache dpkg-deb chroot flock sha256sum realpath; do
	command -v "$tool" >/dev/null || die "missing tool: $tool (this script needs a Debian-like host with apt)"
done
# chroot needs CAP_SYS_CHROOT; without root, a user namespace gives it.
# (Absolute paths: the commands run under env -i with the guest's PATH.)
if [[ $EUID -eq 0 ]]; then
	CHROOT=("$(command -v chroot)")
else
	command -v unshare >/dev/null || die "not root and no unshare: cannot chroot into the rootfs"
	CHROOT=("$(command -v unshare)" --map-root-user "$(command -v chroot)")
fi

# ---------------------------------------------------------------- apt setup
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" \
	"$APTDIR/sources.list.d" "$APTDIR/preferences.d" "$DEBS"
: >"$APTDIR/status"
if ! printf '%s' "$DEBIAN_SOURCES" | cmp -s - "$APTDIR/sources.list.d/debian.sources"; then
	printf '%s' "$DEBIAN_SOURCES" >"$APTDIR/sources.list.d/debian.sources"
	rm -f "$APTDIR/lists/.forkvm-updated"
fi
APT_OPTS=(
	-o "Dir::Etc::SourceList=/dev/null"
	-o "Dir::Etc::SourceParts=$APTDIR/sources.list.d"
	-o "Dir::Etc::Preferences=/dev/null"
	-o "Dir::Etc::PreferencesParts=$APTDIR/preferences.d"
	-o "Dir::State::Lists=$APTDIR/lists"
	-o "Dir::State::status=$APTDIR/status"
	-o "Dir::State::extended_states=$APTDIR/extended_states"
	-o "Dir::Cache=$APTDIR/cache"
	-o "Dir::Cache::pkgcache=pkgcache.bin"
	-o "Dir::Cache::srcpkgcache=srcpkgcache.bin"
	-o "APT::Architecture=$ARCH"
	-o "APT::Architectures::=$ARCH"
	-o "APT::Install-Recommends=false"
	-o "APT::Install-Suggests=false"
	-o "Acquire::Languages=none"
	-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
	-o "Debug::NoLocking=true"
)
apt_() { "$1" "${APT_OPTS[@]}" "${@:2}"; }

marker=$APTDIR/lists/.forkvm-updated
if [[ ! -f $marker ]] || [[ -n $(find "$marker" -mmin +"$LISTS_MAX_AGE_MIN" 2>/dev/null) ]]; then
	say "updating the package lists (apt-get update)"
	log=$APTDIR/update.log
	if ! apt_ apt-get -q -o APT::Update::Error-Mode=any update >"$log" 2>&1; then
		reason=$(grep -m1 '^E: ' "$log" | sed 's/^E: //')
		[[ -n $reason ]] || reason=$(grep -m1 -E '^(W: |Err:)' "$log" || true)
		[[ -n $reason ]] || reason=$(tail -n1 "$log")
		die "cannot reach the Debian package registry (apt-get update failed): $reason"
	fi
	touch "$marker"
fi

# ----------------------------------------------------------------- resolve
say "resolving the dependencies of ${PACKAGES[*]}"
# apt's solver on an empty dpkg status: the exact set apt would install on an
# empty system (Depends and Pre-Depends, first satisfiable alternative, one
# real provider per virtual package; no Recommends or Suggests).
if ! sim=$(apt_ apt-get -s -q install "${PACKAGES[@]}" 2>&1); then
	die "cannot resolve ${PACKAGES[*]}:"$'\n'"$sim"
fi
# Inst NAME (VERSION ARCHIVE[, ARCHIVE...] [ARCH]) ...
CLOSURE=$(sed -n 's/^Inst \([^ :]*\)\(:[^ ]*\)\{0,1\} (\([^ ]*\) .*\[\([^]]*\)\]).*/\1 \3 \4/p' <<<"$sim" | LC_ALL=C sort -u)
[[ -n $CLOSURE ]] || die "apt resolved no packages:"$'\n'"$sim"
for p in "${PACKAGES[@]}"; do
	grep -q "^$p " <<<"$CLOSURE" || die "apt did not select $p:"$'\n'"$sim"
done
while read -r name ver arch; do
	[[ $arch == "$ARCH" || $arch == all ]] || die "unexpected architecture for $name: $arch"
done <<<"$CLOSURE"
N=$(wc -l <<<"$CLOSURE")
say "resolved $N packages"

# ---------------------------------------------------------------- download
deb_name() { printf '%s_%s_%s.deb' "$1" "${2//:/%3a}" "$3"; }

# Expected SHA256 of each .deb, from the (signed) package lists.
declare -A WANT_SHA
want=()
while read -r name ver arch; do want+=("$name=$ver"); done <<<"$CLOSURE"
while read -r name ver arch sha; do
	WANT_SHA["$name $ver $arch"]=$sha
done < <(apt_ apt-cache show --no-all-versions "${want[@]}" | awk '
	/^Package: /      { p = $2 }
	/^Version: /      { v = $2 }
	/^Architecture: / { a = $2 }
	/^SHA256: /       { s = $2 }
	/^$/ { if (p != "") print p, v, a, s; p = v = a = s = "" }
	END  { if (p != "") print p, v, a, s }')

missing=()
cached=0
while read -r name ver arch; do
	f=$DEBS/$(deb_name "$name" "$ver" "$arch")
	sha=${WANT_SHA["$name $ver $arch"]:-}
	[[ -n $sha ]] || die "no checksum for $name $ver $arch in the package lists"
	if [[ -f $f ]] && [[ $(sha256 <"$f") == "$sha" ]]; then
		cached=$((cached + 1))
	else
		rm -f "$f"
		missing+=("$name=$ver")
	fi
done <<<"$CLOSURE"

if [[ ${#missing[@]} -eq 0 ]]; then
	say "downloading: all $N packages already in ${DEBS#"$REPO"/}"
else
	[[ $cached -eq 0 ]] || say "downloading: $cached of $N packages already in ${DEBS#"$REPO"/}"
	stage=$DEBS/.partial
	rm -rf "$stage"
	mkdir -p "$stage"
	# apt downloads as the unprivileged _apt user when it can write here.
	[[ $EUID -ne 0 ]] || chown _apt "$stage" 2>/dev/null || true
	log=$APTDIR/download.log
	i=$cached
	set +e
	(cd "$stage" && apt_ apt-get -q download "${missing[@]}") 2>&1 | tee "$log" | while read -r tag _ _ _ name _ ver _; do
		if [[ $tag == Get:* ]]; then
			i=$((i + 1))
			say "downloading $i/$N $name $ver"
		fi
	done
	rc=${PIPESTATUS[0]}
	set -e
	[[ $rc -eq 0 ]] || die "apt-get download failed:"$'\n'"$(grep -E '^(E|W|Err):' "$log" || tail -n5 "$log")"
	for f in "$stage"/*.deb; do
		mv -f "$f" "$DEBS/"
	done
	rmdir "$stage"
	while read -r name ver arch; do
		f=$DEBS/$(deb_name "$name" "$ver" "$arch")
		[[ -f $f ]] || die "apt-get download did not produce $(basename "$f")"
		[[ $(sha256 <"$f") == "${WANT_SHA["$name $ver $arch"]}" ]] || die "checksum mismatch: $f"
	done <<<"$CLOSURE"
fi

# ------------------------------------------------------------------ unpack
TMP=$(mktemp -d "$outparent/.$outbase.tmp.XXXXXX")
say "unpacking $N packages into ${TMP#"$REPO"/}"
while read -r name ver arch; do
	dpkg-deb -x "$DEBS/$(deb_name "$name" "$ver" "$arch")" "$TMP"
done <<<"$CLOSURE"
chmod 0755 "$TMP"

# usr-merge, as on any bookworm system: bookworm's packages still ship files
# under /bin, /sbin, /lib and /lib64, which on an installed system are
# symlinks into /usr. Move their content into /usr and leave the symlinks.
same_entry() { # $1 $2: the same symlink, or files with the same content
	if [[ -L $1 || -L $2 ]]; then
		[[ -L $1 && -L $2 && $(readlink "$1") == "$(readlink "$2")" ]]
	else
		[[ -f $1 && -f $2 ]] && cmp -s "$1" "$2"
	fi
}
merge_usr() {
	local root=$1 d rel src dst
	for d in bin sbin lib lib64 lib32 libx32; do
		if [[ -L $root/$d ]]; then continue; fi
		if [[ ! -d $root/$d ]]; then
			case $d in bin | sbin | lib | lib64)
				mkdir -p "$root/usr/$d"
				ln -s "usr/$d" "$root/$d"
				;;
			esac
			continue
		fi
		mkdir -p "$root/usr/$d"
		while IFS= read -r -d '' rel; do
			src=$root/$d/$rel
			dst=$root/usr/$d/$rel
			if [[ -d $src && ! -L $src ]]; then
				if [[ ! -e $dst ]]; then
					mkdir "$dst"
					chmod --reference="$src" "$dst"
				fi
				[[ -d $dst ]] || die "usr-merge: /$d/$rel is a directory but /usr/$d/$rel is not"
			elif [[ -e $dst || -L $dst ]]; then
				same_entry "$src" "$dst" || die "usr-merge: /$d/$rel and /usr/$d/$rel differ"
			else
				mv "$src" "$dst"
			fi
		done < <(cd "$root/$d" && find . -mindepth 1 -printf '%P\0')
		rm -rf "${root:?}/$d"
		ln -s "usr/$d" "$root/$d"
	done
}
merge_usr "$TMP"

# update-alternatives links that the packages' postinst scripts would make,
# e.g. libblas.so.3 and liblapack.so.3, without which numpy cannot load.
# Each --install line gives: LINK NAME PATH PRIORITY [--slave LINK NAME PATH]...
# The highest priority per NAME wins, as in dpkg's automatic mode.
declare -A ALT_PRIO ALT_LINE
while read -r name ver arch; do
	while read -r aname prio rest; do
		if [[ -z ${ALT_PRIO[$aname]:-} ]] || ((prio > ALT_PRIO[$aname])); then
			ALT_PRIO[$aname]=$prio
			ALT_LINE[$aname]=$rest
		fi
	done < <(dpkg-deb -I "$DEBS/$(deb_name "$name" "$ver" "$arch")" postinst 2>/dev/null |
		sed -e ':a' -e '/\\$/{N;s/\\\n/ /;ba}' |
		awk '{
			for (i = 1; i <= NF; i++) if ($i == "--install") break
			if (i > NF || $0 ~ /[$`"'"'"']/) next
			out = $(i+2) " " $(i+4) " " $(i+1) " " $(i+3)
			for (j = i + 5; j + 3 <= NF; j++) if ($j == "--slave") { out = out " " $(j+1) " " $(j+2) " " $(j+3); j += 3 }
			print out
		}')
done <<<"$CLOSURE"
add_alternative() { # LINK NAME PATH
	local link=$1 aname=$2 path=$3
	[[ -e $TMP$path ]] || return 0
	[[ -e $TMP$link || -L $TMP$link ]] && return 0
	mkdir -p "$TMP/etc/alternatives" "$(dirname "$TMP$link")"
	ln -sfn "$path" "$TMP/etc/alternatives/$aname"
	ln -s "/etc/alternatives/$aname" "$TMP$link"
}
for aname in "${!ALT_LINE[@]}"; do
	read -ra f <<<"${ALT_LINE[$aname]}" # LINK PATH [SLINK SNAME SPATH]...
	add_alternative "${f[0]}" "$aname" "${f[1]}"
	for ((k = 2; k + 2 < ${#f[@]}; k += 3)); do
		add_alternative "${f[k]}" "${f[k + 1]}" "${f[k + 2]}"
	done
done

# Absolute symlinks -> relative ones (same meaning inside the guest's root;
# on the host they stay inside OUTDIR instead of pointing into the host's /).
while IFS= read -r -d '' l; do
	t=$(readlink "$l")
	[[ $t == /* ]] || continue
	rel=${l#"$TMP"}
	ln -sfn "$(realpath -m -s --relative-to="$(dirname "$rel")" "$t")" "$l"
done < <(find "$TMP" -type l -print0)

# /etc/ld.so.cache, which libc-bin's ldconfig trigger makes on an installed
# system: ld.so then opens each library directly instead of probing every
# glibc-hwcaps and search directory. (libc-bin is not in the closure; the
# host's ldconfig writes the same format. -X: leave the packages' links.)
if command -v ldconfig >/dev/null; then
	[[ -e $TMP/etc/ld.so.conf ]] || echo 'include /etc/ld.so.conf.d/*.conf' >"$TMP/etc/ld.so.conf"
	ldconfig -X -r "$TMP" || die "ldconfig -r failed on the rootfs"
else
	say "no ldconfig on this host: the rootfs gets no /etc/ld.so.cache (ld.so searches its default paths)"
fi

# Where the project's guest agent goes; /tmp for the guest.
mkdir -p "$TMP/forkvm" "$TMP/tmp"
chmod 0755 "$TMP/forkvm"
chmod 1777 "$TMP/tmp"

interp=$(readelf -l "$TMP/usr/bin/python3.11" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p' || true)
interp=${interp:-/lib64/ld-linux-x86-64.so.2}
[[ -e $TMP$interp ]] || die "python3's program interpreter $interp is missing from the rootfs"

# ----------------------------------------------------------------- compile
in_root() { env -i PATH=/usr/bin:/bin LANG=C.UTF-8 "${CHROOT[@]}" "$TMP" "$@"; }
pyver=$(in_root /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
	die "the rootfs's python3 does not start (chroot $TMP /usr/bin/python3)"
say "compiling the Python $pyver standard library and dist-packages to .pyc"
dirs=()
for d in /usr/lib/python$pyver /usr/lib/python3/dist-packages; do
	[[ -d $TMP$d ]] && dirs+=("$d")
done
out=$(in_root /usr/bin/python3 -I -m compileall -q --invalidation-mode timestamp "${dirs[@]}" 2>&1) ||
	die "compileall failed in the rootfs:"$'\n'"$out"
npyc=$(find "$TMP/usr/lib" -name '*.pyc' | wc -l)
say "compiled $npyc .pyc files"

# --------------------------------------------------------------- self-check
got=$(in_root /usr/bin/python3 -c 'import numpy; print(numpy.arange(10).sum())' 2>&1) || true
[[ $got == 45 ]] || die "self-check failed: chroot <rootfs> /usr/bin/python3 -c 'import numpy; ...' gave:"$'\n'"$got"
say "self-check: numpy.arange(10).sum() = 45 inside the rootfs"

# ------------------------------------------------------- manifest, install
{
	printf '# forkvm rootfs built %s from Debian %s %s: %s\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SUITE" "$ARCH" "${PACKAGES[*]}"
	printf '%s\n' "$CLOSURE"
} >"$TMP/$MANIFEST_REL"
chmod 0644 "$TMP/$MANIFEST_REL"
CLOSURE_SHA=$(manifest_sha "$TMP")

rm -f "$STAMP"
if [[ -e $OUTDIR || -L $OUTDIR ]]; then
	OLD=$(mktemp -u "$outparent/.$outbase.old.XXXXXX")
	mv -T "$OUTDIR" "$OLD"
fi
mv -T "$TMP" "$OUTDIR"
TMP=""
[[ -z $OLD ]] || rm -rf "$OLD"
OLD=""

{
	echo "inputs $INPUTS_SHA"
	echo "closure $CLOSURE_SHA"
	echo "script $SCRIPT_SHA"
	echo "packages ${PACKAGES[*]}"
} >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"

size=$(du -sh "$OUTDIR" | cut -f1)
say "done: $SHOW, $N packages, $size, in $((SECONDS - START))s"
