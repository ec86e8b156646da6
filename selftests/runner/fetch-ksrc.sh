#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Fetch and unpack Debian's linux-source-<series> into a cache dir through a
# private apt list, without touching the system's apt configuration.
#
# usage: fetch-ksrc.sh CACHE_DIR SERIES
# prints the path of the unpacked kernel tree on stdout (last line).
set -euo pipefail

cache=$1
series=$2
aptdir=$cache/apt
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

log() { echo "fetch-ksrc: $*" >&2; }

mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$cache/src"

# Already unpacked?
for d in "$cache"/src/linux-source-"$series"; do
	if [ -f "$d/.unpacked" ]; then
		echo "$d"
		exit 0
	fi
done

[ -r "$keyring" ] || { log "missing $keyring (package debian-archive-keyring)"; exit 1; }
for suite in sid trixie-backports; do
	echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main"
done >"$aptdir/sources.list"
aptopts=(-o "Dir::Etc::sourcelist=$aptdir/sources.list"
	 -o Dir::Etc::sourceparts=/dev/null
	 -o "Dir::State::Lists=$aptdir/lists"
	 -o "Dir::Cache=$aptdir/cache"
	 -o "Dir::State::status=/dev/null"
	 -o APT::Sandbox::User=root)

log "updating private package list (sid, trixie-backports)"
apt-get "${aptopts[@]}" -qq update >&2

# Prefer the highest version of linux-source-SERIES the lists offer.
ver=$(apt-cache "${aptopts[@]}" madison "linux-source-$series" 2>/dev/null |
	awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -V | tail -1)
[ -n "$ver" ] || { log "linux-source-$series not found in sid/trixie-backports"; exit 1; }

log "downloading linux-source-$series=$ver (about 160 MB)"
(cd "$aptdir" && rm -f linux-source-"$series"_*.deb &&
	apt-get "${aptopts[@]}" -qq download "linux-source-$series=$ver" >&2)
deb=$(ls "$aptdir"/linux-source-"$series"_*.deb)

log "unpacking $(basename "$deb")"
tmp=$(mktemp -d "$cache/src/.unpack.XXXXXX")
dpkg-deb --fsys-tarfile "$deb" |
	tar -xO --wildcards "./usr/src/linux-source-$series.tar.*" |
	tar -xJ -C "$tmp"
dir=$cache/src/linux-source-$series
rm -rf "$dir"
mv "$tmp/linux-source-$series" "$dir"
rmdir "$tmp"
echo "$ver" >"$dir/.debian-version"
touch "$dir/.unpacked"
rm -f "$deb"
echo "$dir"
