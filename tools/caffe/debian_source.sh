# Sourced by the build scripts: Debian source packages through a private apt configuration that
# adds one deb-src line for the mirror the machine already uses; the system's own apt sources are
# untouched, and apt checks the files against the signed index.
#
#   download_debian_source DEST SUITE PACKAGE VERSION   # the .dsc and its tarballs into DEST
#   fetch_debian_source DEST SUITE PACKAGE VERSION [PATCH...]
#       ... unpacked in DEST/src with Debian's patch series applied, or only the named patches of it
#
# Both call die (the caller's) with one line on failure, ending with $DEBIAN_SOURCE_HINT if set.

debian_mirror() {
  local mirror
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "$mirror"
}

download_debian_source() {
  local dest=$1 suite=$2 package=$3 version=$4 apt=$1/apt mirror
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt sources to fetch $package=$version from"
  mkdir -p "$apt/lists/partial" "$apt/parts"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$apt/sources.list"
  local opts=(-q -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
              -o "Dir::State::Lists=$apt/lists" -o "APT::Sandbox::User=root")
  ( cd "$dest" && apt-get "${opts[@]}" update >apt.log 2>&1 \
      && apt-get "${opts[@]}" source --download-only "$package=$version" >>apt.log 2>&1 ) \
    || die "could not fetch Debian source package $package=$version ($suite; see $dest/apt.log)${DEBIAN_SOURCE_HINT:-}"
}

fetch_debian_source() {
  local dest=$1 suite=$2 package=$3 version=$4 p patches
  download_debian_source "$dest" "$suite" "$package" "$version"
  ( cd "$dest" && dpkg-source --skip-patches -x "${package}_${version#*:}.dsc" src >>apt.log 2>&1 ) \
    || die "dpkg-source could not unpack ${package}_$version.dsc in $dest${DEBIAN_SOURCE_HINT:-}"
  shift 4
  if [ $# -gt 0 ]; then
    patches=("$@")
  elif [ -f "$dest/src/debian/patches/series" ]; then
    mapfile -t patches < <(sed -e 's/[[:space:]].*//' -e '/^#/d' -e '/^$/d' "$dest/src/debian/patches/series")
  else
    patches=()
  fi
  for p in "${patches[@]}"; do
    patch -s -d "$dest/src" -p1 < "$dest/src/debian/patches/$p" \
      || die "Debian's own patch $p does not apply to $package=$version"
  done
}
