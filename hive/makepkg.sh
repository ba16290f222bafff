#!/usr/bin/env bash
# hive build driver: a small, makepkg-like interpreter for PKGBUILD recipes.
#
# Usage: bash makepkg.sh RECIPE_DIR BUILD_DIR
#
# The hive runs one instance of this script per install job, as the leader of
# its own process group, and cancels a job by signalling that group.  For that
# reason nothing here daemonizes, detaches or calls setsid: every process the
# build starts stays in this process tree.
#
# Layout inside BUILD_DIR (which the hive creates empty):
#   startdir/           copy of RECIPE_DIR (the recipe itself is never touched);
#                       downloaded sources are stored here too, like makepkg's
#                       default SRCDEST
#   src/                $srcdir: sources are symlinked/cloned/extracted here
#   pkg/<pkgname>/      $pkgdir: what package() installs = the finished worker
#
# Environment read:
#   HIVE_JOB_ID         informational, passed through to the recipe functions
#   HIVE_SKIP_CHECK=1   do not run check()
#   MAKEFLAGS           passed through untouched
#
# Output protocol (stdout): one "==> " line per stage, in this order:
#   ==> Fetching sources / Verifying checksums / Extracting sources /
#   Starting prepare() / Starting build() / Starting check() (or Skipping
#   check()) / Starting package() / Finished: <pkgname> <pkgver>-<pkgrel>
# "Starting X()" lines appear only for functions the recipe defines.  Detail
# lines start with "  -> ".  The driver reports its own errors on stderr as a
# single "==> ERROR: <reason>" line (tools it runs, like curl or git, may have
# written their own diagnostics just before).
#
# Exit status: 0 on success; the failing command's status when a recipe
# function fails; 1 for every other error (bad usage, bad recipe, missing
# dependency, download or checksum failure); 143/130/129 after SIGTERM/
# SIGINT/SIGHUP ("==> ERROR: Aborted by SIGTERM").

# Internal names carry a _hive prefix because the PKGBUILD is sourced into this
# very shell and must not clobber (or be clobbered by) the driver's state.

umask 0022
exec </dev/null
shopt -s extglob

_hive_msg() { printf '==> %s\n' "$*"; }
_hive_msg2() { printf '  -> %s\n' "$*"; }
_hive_die() {
	printf '==> ERROR: %s\n' "$1" >&2
	exit "${2:-1}"
}

trap '_hive_die "Aborted by SIGTERM" 143' TERM
trap '_hive_die "Aborted by SIGINT" 130' INT
trap '_hive_die "Aborted by SIGHUP" 129' HUP

if (( $# != 2 )); then
	_hive_die "usage: makepkg.sh RECIPE_DIR BUILD_DIR"
fi
[[ -f $1/PKGBUILD ]] || _hive_die "no PKGBUILD in recipe directory: $1"
[[ -d $2 ]] || _hive_die "build directory does not exist: $2"
_hive_recipe=$(cd -- "$1" && pwd -P) || _hive_die "cannot resolve recipe directory: $1"
_hive_build=$(cd -- "$2" && pwd -P) || _hive_die "cannot resolve build directory: $2"
for _hive_d in startdir src pkg; do
	if [[ -e $_hive_build/$_hive_d ]]; then
		_hive_die "build directory is not fresh: $_hive_build/$_hive_d already exists"
	fi
done

# Syntax errors are reported up front, with bash's own first message line.
if ! _hive_out=$(bash -n "$_hive_recipe/PKGBUILD" 2>&1); then
	_hive_out=${_hive_out%%$'\n'*}
	_hive_die "PKGBUILD${_hive_out#"$_hive_recipe/PKGBUILD"}"
fi

startdir=$_hive_build/startdir
srcdir=$_hive_build/src
CARCH=$(uname -m)
export startdir srcdir CARCH

mkdir -p -- "$startdir" "$srcdir" || _hive_die "cannot create build directories"
cp -a -- "$_hive_recipe/." "$startdir/" || _hive_die "cannot copy recipe into $startdir"

cd -- "$startdir" || _hive_die "cannot enter $startdir"
# shellcheck disable=SC1091
source "$startdir/PKGBUILD" || _hive_die "sourcing PKGBUILD failed"
cd -- "$startdir" || _hive_die "cannot enter $startdir"

# ---------------------------------------------------------------- validation
[[ -n ${pkgname-} ]] || _hive_die "pkgname is not set in PKGBUILD"
[[ -n ${pkgver-} ]] || _hive_die "pkgver is not set in PKGBUILD"
[[ -n ${pkgrel-} ]] || _hive_die "pkgrel is not set in PKGBUILD"
declare -F package >/dev/null || _hive_die "PKGBUILD has no package() function"

_hive_pkgname=${pkgname[0]}
# The same rules as hive/pkgbuild.py; pkgname also becomes a path component.
if [[ ! $_hive_pkgname =~ ^[a-z0-9@_+][a-z0-9@._+-]*$ ]]; then
	_hive_die "invalid pkgname: $_hive_pkgname"
fi
if [[ $pkgver =~ [[:space:]:/-] ]]; then
	_hive_die "pkgver must not contain hyphens, colons, slashes or whitespace: $pkgver"
fi
[[ $pkgrel =~ ^[0-9]+(\.[0-9]+)?$ ]] || _hive_die "invalid pkgrel: $pkgrel"
pkgdir=$_hive_build/pkg/$_hive_pkgname
export pkgdir

(( ${#arch[@]} )) || _hive_die "arch is not set in PKGBUILD"
_hive_arch_ok=0
for _hive_a in "${arch[@]}"; do
	[[ $_hive_a == any || $_hive_a == "$CARCH" ]] && _hive_arch_ok=1
done
(( _hive_arch_ok )) || _hive_die "$_hive_pkgname is not available for the '$CARCH' architecture"

# Combine the generic and the architecture-specific arrays, as makepkg does.
_hive_concat() { # _hive_concat OUT NAME: OUT=(NAME[@] NAME_$CARCH[@])
	local -n _hive_out_ref=$1 _hive_gen_ref=$2 _hive_arch_ref=$2_$CARCH
	_hive_out_ref=("${_hive_gen_ref[@]}" "${_hive_arch_ref[@]}")
}
_hive_concat _hive_sources source
_hive_concat _hive_sums sha256sums
_hive_concat _hive_deps depends
_hive_concat _hive_mdeps makedepends

if (( ${#_hive_sources[@]} != ${#_hive_sums[@]} )); then
	_hive_die "sha256sums has ${#_hive_sums[@]} entries but source has ${#_hive_sources[@]}"
fi

# -------------------------------------------------------------- dependencies
# A dependency is a command that must be on PATH; version constraints such as
# "gcc>=12" are accepted and ignored.  `type -P` (not `command -v`) so that a
# function of the same name defined in the PKGBUILD cannot mask a missing tool.
_hive_missing=()
for _hive_d in "${_hive_deps[@]}" "${_hive_mdeps[@]}"; do
	_hive_d=${_hive_d%%[<>=]*}
	[[ -n $_hive_d ]] || continue
	type -P -- "$_hive_d" >/dev/null || _hive_missing+=("$_hive_d")
done
if (( ${#_hive_missing[@]} )); then
	_hive_list=$(printf '%s, ' "${_hive_missing[@]}")
	_hive_die "missing dependencies: ${_hive_list%, }"
fi

# ------------------------------------------------------------------- sources
# Each source entry is split into a file name (what appears in $srcdir), a
# kind, and a location.  Parallel arrays keep bash 4/5 portable.
_hive_names=()
_hive_kinds=()
_hive_urls=()
for _hive_s in "${_hive_sources[@]}"; do
	_hive_n=
	_hive_u=$_hive_s
	if [[ $_hive_s == *::* ]]; then
		_hive_n=${_hive_s%%::*}
		_hive_u=${_hive_s#*::}
	fi
	case $_hive_u in
		git+*) _hive_k=git ;;
		file://*) _hive_k=file ;;
		http://* | https://*) _hive_k=http ;;
		*://*) _hive_die "unsupported source protocol: $_hive_u" ;;
		*) _hive_k=local ;;
	esac
	if [[ -z $_hive_n ]]; then
		_hive_n=${_hive_u%%#*}
		_hive_n=${_hive_n%%\?*}
		_hive_n=${_hive_n%/}
		_hive_n=${_hive_n##*/}
		[[ $_hive_k == git ]] && _hive_n=${_hive_n%.git}
	fi
	if [[ -z $_hive_n || $_hive_n == . || $_hive_n == .. || $_hive_n == */* ]]; then
		_hive_die "cannot derive a file name from source: $_hive_s"
	fi
	_hive_names+=("$_hive_n")
	_hive_kinds+=("$_hive_k")
	_hive_urls+=("$_hive_u")
done

_hive_download() { # URL DEST
	if type -P curl >/dev/null; then
		curl -fsSL --retry 0 --connect-timeout 30 -o "$2" -- "$1"
	else
		python3 - "$1" "$2" <<-'EOF'
			import shutil, sys, urllib.request
			try:
			    with urllib.request.urlopen(sys.argv[1], timeout=30) as r, open(sys.argv[2], "wb") as f:
			        shutil.copyfileobj(r, f)
			except Exception as e:
			    sys.exit(f"python download: {e}")
		EOF
	fi
}

_hive_git() { # URL(with git+ and #fragment) DEST-DIR
	local url=${1#git+} frag= ref=
	if [[ $url == *#* ]]; then
		frag=${url#*#}
		url=${url%%#*}
	fi
	url=${url%%\?*}
	# A build runs as its own user: a local upstream belongs to someone else,
	# which git refuses to serve unless told (upload-pack only reads it).
	local pack=(git upload-pack)
	[[ $url == file://* || $url == /* ]] && pack=(git -c 'safe.directory=*' upload-pack)
	GIT_TERMINAL_PROMPT=0 git clone --quiet --no-checkout --upload-pack "${pack[*]}" -- "$url" "$2" || return 1
	case $frag in
		'') ref=origin/HEAD ;;
		tag=*) ref="refs/tags/${frag#tag=}" ;;
		branch=*) ref="origin/${frag#branch=}" ;;
		commit=* | revision=*) ref=${frag#*=} ;;
		*)
			printf 'unsupported git fragment: %s\n' "$frag" >&2
			return 1
			;;
	esac
	git -C "$2" -c advice.detachedHead=false checkout --quiet --detach "$ref^{commit}" --
}

_hive_msg "Fetching sources"
for _hive_i in "${!_hive_names[@]}"; do
	_hive_n=${_hive_names[_hive_i]}
	_hive_u=${_hive_urls[_hive_i]}
	case ${_hive_kinds[_hive_i]} in
		local)
			[[ -f $startdir/$_hive_u ]] || _hive_die "source file not found: $_hive_u"
			_hive_msg2 "Found $_hive_u"
			if [[ $_hive_n != "$_hive_u" ]]; then
				cp -- "$startdir/$_hive_u" "$startdir/$_hive_n" ||
					_hive_die "cannot copy $_hive_u to $_hive_n"
			fi
			;;
		file)
			_hive_p=${_hive_u#file://}
			_hive_p=${_hive_p%%#*}
			_hive_msg2 "Copying $_hive_p"
			cp -- "$_hive_p" "$startdir/$_hive_n" || _hive_die "cannot copy source: $_hive_u"
			;;
		http)
			if [[ -f $startdir/$_hive_n ]]; then
				_hive_msg2 "Found $_hive_n"
			else
				_hive_msg2 "Downloading $_hive_n from $_hive_u"
				if ! _hive_download "$_hive_u" "$startdir/$_hive_n.part"; then
					rm -f -- "$startdir/$_hive_n.part"
					_hive_die "failed to download $_hive_u"
				fi
				mv -- "$startdir/$_hive_n.part" "$startdir/$_hive_n" ||
					_hive_die "cannot store $_hive_n"
			fi
			;;
		git)
			_hive_msg2 "Cloning $_hive_n from ${_hive_u#git+}"
			_hive_git "$_hive_u" "$srcdir/$_hive_n" || _hive_die "git checkout failed for $_hive_u"
			continue
			;;
	esac
	ln -sfn -- "$startdir/$_hive_n" "$srcdir/$_hive_n" || _hive_die "cannot link $_hive_n"
done

_hive_msg "Verifying checksums"
for _hive_i in "${!_hive_names[@]}"; do
	_hive_n=${_hive_names[_hive_i]}
	_hive_want=${_hive_sums[_hive_i],,}
	if [[ ${_hive_sums[_hive_i]} == SKIP || ${_hive_kinds[_hive_i]} == git ]]; then
		_hive_msg2 "$_hive_n ... Skipped"
		continue
	fi
	if [[ ! $_hive_want =~ ^[0-9a-f]{64}$ ]]; then
		_hive_die "invalid sha256sum for $_hive_n: ${_hive_sums[_hive_i]}"
	fi
	_hive_got=$(sha256sum -- "$startdir/$_hive_n") || _hive_die "cannot checksum $_hive_n"
	_hive_got=${_hive_got%% *}
	if [[ $_hive_got != "$_hive_want" ]]; then
		_hive_die "checksum mismatch for $_hive_n"
	fi
	_hive_msg2 "$_hive_n ... Passed"
done

_hive_msg "Extracting sources"
for _hive_i in "${!_hive_names[@]}"; do
	_hive_n=${_hive_names[_hive_i]}
	[[ ${_hive_kinds[_hive_i]} == git ]] && continue
	_hive_skip=0
	for _hive_x in "${noextract[@]}"; do
		[[ $_hive_x == "$_hive_n" ]] && _hive_skip=1
	done
	(( _hive_skip )) && continue
	case $_hive_n in
		*.tar | *.tar.gz | *.tgz | *.tar.xz | *.txz | *.tar.bz2 | *.tbz2 | *.tar.zst)
			_hive_msg2 "Extracting $_hive_n"
			tar -xf "$srcdir/$_hive_n" -C "$srcdir" --no-same-owner ||
				_hive_die "failed to extract $_hive_n"
			;;
		*.zip)
			_hive_msg2 "Extracting $_hive_n"
			if type -P unzip >/dev/null; then
				unzip -q -o "$srcdir/$_hive_n" -d "$srcdir"
			else
				python3 -m zipfile -e "$srcdir/$_hive_n" "$srcdir"
			fi || _hive_die "failed to extract $_hive_n"
			;;
	esac
done

# ---------------------------------------------------------- recipe functions
# Like makepkg's run_function_safe: errexit + errtrace while a recipe function
# runs, and an ERR trap that names the stage.  Only the top-level shell prints
# the message, so a failure inside a ( subshell ) is reported once.
_hive_pid=$BASHPID
_hive_run() { # FUNCTION
	_hive_msg "Starting $1()"
	cd -- "$srcdir" || _hive_die "cannot enter $srcdir"
	_hive_stage=$1
	trap '_hive_rc=$?
		if (( BASHPID == _hive_pid )); then
			_hive_die "A failure occurred in ${_hive_stage}()." "$_hive_rc"
		fi
		exit "$_hive_rc"' ERR
	set -eE
	"$1"
	set +eE
	trap - ERR
}

if declare -F prepare >/dev/null; then _hive_run prepare; fi
if declare -F build >/dev/null; then _hive_run build; fi
if declare -F check >/dev/null; then
	if [[ ${HIVE_SKIP_CHECK-} == 1 ]]; then
		_hive_msg "Skipping check()"
	else
		_hive_run check
	fi
fi
mkdir -p -- "$pkgdir" || _hive_die "cannot create $pkgdir"
_hive_run package

_hive_msg "Finished: $_hive_pkgname $pkgver-$pkgrel"
exit 0
