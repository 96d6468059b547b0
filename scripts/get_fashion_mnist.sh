#!/usr/bin/env bash
# Fashion-MNIST into the checkout's data folder, .data/fashion-mnist, as any user (no root).
#
# Usage: bash scripts/get_fashion_mnist.sh     (what `make data` runs)
#
# The four files come from Debian's package dataset-fashion-mnist. In a temporary folder,
# `apt-get download` fetches the package file (an ordinary user may do that) and
# `dpkg-deb -x` unpacks it; the files are checked against the SHA-256 sums below, moved into
# .data/fashion-mnist, and the temporary folder goes, the package file with it.
#
# Where apt's package lists do not have the package (a fresh container has none, or they are
# stale), a private `apt-get update` writes lists into the temporary folder and the download
# reads those: nothing outside the checkout and the temporary folder is written.
#
# Once the files are there, a stamp (.data/fashion-mnist/SHA256SUMS, the sums they were
# checked against) makes every later run return at once.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=dataset-fashion-mnist
DEST=.data/fashion-mnist
STAMP=$DEST/SHA256SUMS
# The files of dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Debian 12), in sha256sum's format.
SUMS="cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  t10k-images-idx3-ubyte.gz
8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  t10k-labels-idx1-ubyte.gz
b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  train-images-idx3-ubyte.gz
0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  train-labels-idx1-ubyte.gz"
FILES=$(awk '{print $2}' <<<"$SUMS")

say() { echo "data: $*"; }
fail() {
    echo "data: error: $*" >&2
    exit 1
}

have_files() {
    local name
    for name in $FILES; do
        [ -f "$1/$name" ] || return 1
    done
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SUMS" ] && have_files "$DEST"; then
    say "Fashion-MNIST is in $DEST"
    exit 0
fi

# Files copied in by hand need no download: check them and write the stamp.
if have_files "$DEST" && (cd "$DEST" && sha256sum --check --quiet --status <<<"$SUMS"); then
    printf '%s\n' "$SUMS" >"$STAMP"
    say "Fashion-MNIST is in $DEST (checked the files that were there)"
    exit 0
fi

elsewhere="Elsewhere, copy the four *-ubyte.gz files of Fashion-MNIST into $DEST, or into any
folder DIR/fashion-mnist and set FASTERVIT_DATA=DIR."
command -v apt-get >/dev/null || fail "apt-get not found: this step fetches Debian's $PACKAGE package.
$elsewhere"
command -v dpkg-deb >/dev/null || fail "dpkg-deb not found: it unpacks Debian's $PACKAGE package.
$elsewhere"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
apt_options=()
# Run as root, apt downloads as the user _apt, who may not write into a root-only temporary
# folder (it would warn and download as root anyway): say so up front.
[ "$(id -u)" -eq 0 ] && apt_options+=(-o APT::Sandbox::User=root)

download() {
    (cd "$tmp" && apt-get "${apt_options[@]}" "$@" -q=2 download "$PACKAGE")
}

say "downloading Debian's $PACKAGE (31 MB) with apt-get download"
if ! download 2>"$tmp/apt.log"; then
    say "the system's package lists do not offer it ($(tail -n 1 "$tmp/apt.log")); reading private ones"
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
    apt_options+=(-o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache")
    apt-get "${apt_options[@]}" -q=2 update || fail "apt-get update into a private folder failed (above).
$elsewhere"
    download || fail "apt-get download $PACKAGE failed (above).
$elsewhere"
fi

dpkg-deb -x "$tmp"/"$PACKAGE"_*.deb "$tmp/tree"
unpacked=$tmp/tree/usr/share/datasets/fashion-mnist
have_files "$unpacked" || fail "the package has no usr/share/datasets/fashion-mnist/ with the four files."
(cd "$unpacked" && sha256sum --check --quiet <<<"$SUMS") ||
    fail "the package's files differ from the SHA-256 sums in $0 (a new version of $PACKAGE?)."

mkdir -p "$DEST"
for name in $FILES; do
    mv -f "$unpacked/$name" "$DEST/$name"
done
printf '%s\n' "$SUMS" >"$STAMP" # last: an interrupted run leaves no stamp, and the next one starts over
say "Fashion-MNIST is in $DEST, checked against its SHA-256 sums"
