# hive recipe reader: what `makepkg --printsrcinfo` sees in a PKGBUILD.
#
# Usage: bash -c "$(cat srcinfo.sh)" hive-srcinfo CARCH   (cwd: the recipe dir)
#
# The hive runs this sealed (hive/sandbox.py): sourcing a PKGBUILD runs its top
# level, and reading package_NAME() overrides evaluates their assignments, as
# makepkg does.  The rules are makepkg 6's (libmakepkg's pkgbuild, srcinfo and
# lint_pkgbuild code), restated here: the same attributes in the same order, the
# same package overrides (assignments found in `declare -f package_NAME`), and
# the same lint checks with the same messages, in the same order.
#
# Output on fd 1 (the PKGBUILD's own stdout goes to stderr): records of
# `TAG NUL COUNT NUL ITEM NUL ...` where TAG is an attribute name, or one of
#   (error)    a lint error, makepkg's message
#   (section)  `pkgbase NAME` or `pkgname NAME`: the attributes that follow
#              belong to it, in the order .SRCINFO lists them
#   (functions) the functions the PKGBUILD defines among those makepkg runs
#   (end)      the reader finished (a PKGBUILD that calls `exit` never gets here)
# Values are raw; whitespace is normalised by the reader in Python, as
# srcinfo_write_attr does in bash.

exec 3>&1 1>&2
shopt -u extglob
__hive_carch=$1
CARCH=$__hive_carch

__hive_rec() { # TAG ITEM...
	printf '%s\0%d\0' "$1" "$(($# - 1))" >&3
	if (($# > 1)); then printf '%s\0' "${@:2}" >&3; fi
}
__hive_error() { # FORMAT ARGS...: like makepkg's error(), into the dump
	local __hive_m
	# shellcheck disable=SC2059
	printf -v __hive_m "$@"
	__hive_rec '(error)' "$__hive_m"
}

if [[ $(<PKGBUILD) = *$'\r'* ]]; then
	__hive_error '%s contains %s characters and cannot be sourced.' PKGBUILD CRLF
	__hive_rec '(end)'
	exit 0
fi

BUILDFILE=PKGBUILD
__hive_status=0
# fd 3 (the dump) is closed while the top level runs: what it starts cannot
# hold the dump open.
# shellcheck disable=SC1091
source ./PKGBUILD 3>&- || __hive_status=$?
if ((__hive_status)); then
	__hive_error 'Failed to source %s' "$BUILDFILE"
	__hive_rec '(end)'
	exit 0
fi
shopt -s extglob

pkgbase=${pkgbase:-${pkgname[0]}}

# ------------------------------------------------------------- the schema
__hive_algos=(ck md5 sha1 sha224 sha256 sha384 sha512 b2)
__hive_sums=("${__hive_algos[@]/%/sums}")
__hive_arrays=(arch backup checkdepends conflicts depends groups license makedepends
	noextract optdepends options provides replaces source validpgpkeys "${__hive_sums[@]}")
__hive_strings=(changelog epoch install pkgbase pkgdesc pkgrel pkgver url)
__hive_arch_arrays=(checkdepends conflicts depends makedepends optdepends provides replaces
	source "${__hive_sums[@]}")
__hive_overrides=(pkgdesc arch url license groups depends optdepends provides conflicts
	replaces backup options install changelog)
__hive_known_options=(strip debug docs libtool staticlibs emptydirs zipman purge
	buildflags makeflags ccache distcc lto)
declare -A __hive_is_arch_array __hive_is_override
for __hive_name in "${__hive_arch_arrays[@]}"; do __hive_is_arch_array[$__hive_name]=1; done
for __hive_name in "${__hive_overrides[@]}"; do __hive_is_override[$__hive_name]=1; done

__hive_in() { # NEEDLE ITEM...
	local __hive_n=$1 __hive_i
	shift
	for __hive_i in "$@"; do [[ $__hive_i = "$__hive_n" ]] && return 0; done
	return 1
}
__hive_is_array() { [[ ${!1@a} = *a* ]]; }
__hive_defined() { declare -p "$1" &>/dev/null; }
__hive_has_function() { declare -f "$1" >/dev/null; }

__hive_copy() { # DEST SRC: copy an array (or a string as a one-item array); 1 if SRC is unset
	local __hive_k __hive_keys __hive_values=()
	__hive_defined "$2" || return 1
	eval "__hive_keys=(\"\${!$2[@]}\")"
	eval "$1=()"
	for __hive_k in "${__hive_keys[@]}"; do
		__hive_values+=("printf -v '$1[$__hive_k]' %s \"\${$2[$__hive_k]}\";")
	done
	eval "${__hive_values[*]}"
}

__hive_global() { # ATTR ISARRAY OUT: 0 if set and not empty
	local __hive_tmp=()
	if (($2)); then
		__hive_copy __hive_tmp "$1" || return 1
		((${#__hive_tmp[@]})) && __hive_copy "$3" "$1"
	else
		[[ ${!1} ]] && printf -v "$3" %s "${!1}"
	fi
}

# The lines of each function, read once into an array of their own (no fork,
# no here-string: this runs hundreds of times).
# __hive_fn_assigns["FUNCTION|NAME|a"] (or "|s") tells, without a scan, whether
# any line could match makepkg's array (or string) pattern for NAME: most
# lookups are for attributes a function never sets.
declare -A __hive_fn_array __hive_fn_assigns
__hive_fn_lines() { # FUNCTION: prints nothing, sets __hive_fn_array[FUNCTION] to an array name
	if [[ -z ${__hive_fn_array[$1]+set} ]]; then
		local __hive_file=${TMPDIR:-/tmp}/hive-srcinfo-fn.$$ __hive_l
		local __hive_any='^[[:space:]]* ([A-Za-z_][A-Za-z0-9_]*)\+?=(.)'
		__hive_fn_array[$1]=__hive_fn_${#__hive_fn_array[@]}
		{ declare -f "$1" || declare -f package; } >"$__hive_file" 2>/dev/null
		mapfile -t "${__hive_fn_array[$1]}" <"$__hive_file"
		local -n __hive_all_lines=${__hive_fn_array[$1]}
		for __hive_l in "${__hive_all_lines[@]}"; do
			[[ $__hive_l =~ $__hive_any ]] || continue
			if [[ ${BASH_REMATCH[2]} == '(' ]]; then
				__hive_fn_assigns["$1|${BASH_REMATCH[1]}|a"]=1
			else
				__hive_fn_assigns["$1|${BASH_REMATCH[1]}|s"]=1
			fi
		done
	fi
}

__hive_function_var() { # FUNCTION ATTR ISARRAY OUT: 0 if assigned in FUNCTION
	[[ -n ${__hive_fn_array[$1]+set} ]] || __hive_fn_lines "$1"
	if (($3)); then
		[[ -n ${__hive_fn_assigns["$1|$2|a"]+set} ]] || return 1
	else
		[[ -n ${__hive_fn_assigns["$1|$2|s"]+set} ]] || return 1
	fi
	local __hive_re __hive_decl __hive_found=1 __hive_line
	if (($3)); then
		printf -v __hive_re '^[[:space:]]* %s\+?=\(' "$2"
	else
		printf -v __hive_re '^[[:space:]]* %s\+?=[^(]' "$2"
	fi
	local -n __hive_lines=${__hive_fn_array[$1]}
	for __hive_line in "${__hive_lines[@]}"; do
		[[ $__hive_line =~ $__hive_re ]] || continue
		__hive_decl=${__hive_line##*([[:space:]])}
		eval "${__hive_decl/#$2/$4}"
		__hive_found=0
	done
	return $__hive_found
}

__hive_function_var_exists() { # FUNCTION ATTR
	local __hive_out
	__hive_function_var "$1" "$2" 0 __hive_out || __hive_function_var "$1" "$2" 1 __hive_out
}

__hive_attribute() { # PKGNAME ATTR ISARRAY OUT: global value, then package override
	if (($3)); then eval "$4=()"; else printf -v "$4" %s ''; fi
	if [[ $1 ]]; then
		__hive_global "$2" "$3" "$4"
		__hive_function_var "package_$1" "$2" "$3" "$4"
	else
		__hive_global "$2" "$3" "$4"
	fi
}

__hive_all_split() { # ATTR OUT: every value of ATTR, global, per arch and per package
	# (locals named apart from any caller's OUT: bash scopes dynamically)
	local __hive_sa_all=() __hive_sa_list=() __hive_sa_a __hive_sa_p
	if __hive_global "$1" 1 __hive_sa_list; then __hive_sa_all+=("${__hive_sa_list[@]}"); fi
	for __hive_sa_a in "${arch[@]}"; do
		if __hive_global "${1}_$__hive_sa_a" 1 __hive_sa_list; then
			__hive_sa_all+=("${__hive_sa_list[@]}")
		fi
	done
	for __hive_sa_p in "${pkgname[@]}"; do
		if __hive_function_var "package_$__hive_sa_p" "$1" 1 __hive_sa_list; then
			__hive_sa_all+=("${__hive_sa_list[@]}")
		fi
		for __hive_sa_a in "${arch[@]}"; do
			if __hive_function_var "package_$__hive_sa_p" "${1}_$__hive_sa_a" 1 __hive_sa_list; then
				__hive_sa_all+=("${__hive_sa_list[@]}")
			fi
		done
	done
	((${#__hive_sa_all[@]})) && __hive_copy "$2" __hive_sa_all
}

# ------------------------------------------------------------------- lint
__hive_lint_arch() {
	local __hive_a __hive_ret=0
	if __hive_in any "${arch[@]}"; then
		((${#arch[@]} == 1)) && return 0
		__hive_error "Can not use '%s' architecture with other architectures" any
		return 1
	fi
	for __hive_a in "${arch[@]}"; do
		if [[ $__hive_a = *[![:alnum:]_]* ]]; then
			__hive_error "%s contains invalid characters: '%s'" arch "${__hive_a//[[:alnum:]_]/}"
			__hive_ret=1
		fi
	done
	return $__hive_ret
}

__hive_lint_arch_specific() {
	local __hive_a __hive_i __hive_p __hive_ret=0
	# shellcheck disable=SC2068
	for __hive_a in ${arch[@]}; do
		if [[ $__hive_a == any ]]; then
			for __hive_i in "${__hive_arch_arrays[@]}"; do
				if __hive_defined "${__hive_i}_$__hive_a"; then
					__hive_error "Can not provide architecture specific variables for the '%s' architecture: %s" any "${__hive_i}_$__hive_a"
					__hive_ret=1
				fi
			done
		fi
		for __hive_i in "${__hive_arrays[@]}" "${__hive_strings[@]}"; do
			[[ -n ${__hive_is_arch_array[$__hive_i]+set} ]] && continue
			if __hive_defined "${__hive_i}_$__hive_a"; then
				__hive_error '%s can not be architecture specific: %s' "$__hive_i" "${__hive_i}_$__hive_a"
				__hive_ret=1
			fi
		done
	done
	# shellcheck disable=SC2068
	for __hive_p in ${pkgname[@]}; do
		for __hive_a in ${arch[@]}; do
			if [[ $__hive_a == any ]]; then
				for __hive_i in "${__hive_arch_arrays[@]}"; do
					if __hive_function_var_exists "package_$__hive_p" "${__hive_i}_$__hive_a"; then
						__hive_error "Can not provide architecture specific variables for the '%s' architecture: %s" any "${__hive_i}_$__hive_a"
						__hive_ret=1
					fi
				done
			fi
			for __hive_i in "${__hive_arrays[@]}" "${__hive_strings[@]}"; do
				[[ -n ${__hive_is_arch_array[$__hive_i]+set} ]] && continue
				if __hive_function_var_exists "package_$__hive_p" "${__hive_i}_$__hive_a"; then
					__hive_error '%s can not be architecture specific: %s' "$__hive_i" "${__hive_i}_$__hive_a"
					__hive_ret=1
				fi
			done
		done
	done
	return $__hive_ret
}

__hive_lint_backup() {
	local __hive_all=("${backup[@]}") __hive_list=() __hive_p __hive_ret=0
	for __hive_p in "${pkgname[@]}"; do
		if __hive_function_var "package_$__hive_p" backup 1 __hive_list; then
			__hive_all+=("${__hive_list[@]}")
		fi
	done
	for __hive_p in "${__hive_all[@]}"; do
		if [[ ${__hive_p:0:1} = / ]]; then
			__hive_error '%s entry should not contain leading slash : %s' backup "$__hive_p"
			__hive_ret=1
		fi
	done
	return $__hive_ret
}

__hive_files_exist() { # KIND FILE...
	local __hive_f __hive_ret=0
	for __hive_f in "${@:2}"; do
		if [[ $__hive_f && ! -f $__hive_f ]]; then
			__hive_error '%s file (%s) does not exist or is not a regular file.' "$1" "$__hive_f"
			__hive_ret=1
		fi
	done
	return $__hive_ret
}

__hive_lint_file_attr() { # ATTR: install or changelog
	local __hive_ref="$1[@]" __hive_p __hive_f
	local __hive_all=("${!__hive_ref}")
	# shellcheck disable=SC2068
	for __hive_p in ${pkgname[@]}; do
		# As makepkg: a changelog counts when assigned; an install file is
		# checked again for a package that does not assign one.
		if __hive_function_var "package_$__hive_p" "$1" 0 __hive_f || [[ $1 == install ]]; then
			__hive_all+=("$__hive_f")
		fi
	done
	__hive_files_exist "$1" "${__hive_all[@]}"
}

__hive_check_epoch() { # EPOCH TYPE
	if [[ $1 != *([[:digit:]]) ]]; then
		__hive_error '%s must be an integer, not %s.' "epoch${2:+ in $2}" "$1"
		return 1
	fi
}

__hive_check_pkgrel() { # PKGREL TYPE
	if [[ -z $1 ]]; then
		__hive_error '%s is not allowed to be empty.' "pkgrel${2:+ in $2}"
		return 1
	fi
	if [[ $1 != +([0-9])?(.+([0-9])) ]]; then
		__hive_error "%s must be of the form 'integer[.integer]', not %s." "pkgrel${2:+ in $2}" "$1"
		return 1
	fi
}

__hive_check_pkgver() { # PKGVER TYPE
	if [[ -z $1 ]]; then
		__hive_error '%s is not allowed to be empty.' "pkgver${2:+ in $2}"
		return 1
	fi
	if [[ $1 = *[[:space:]/:-]* ]]; then
		__hive_error '%s is not allowed to contain colons, forward slashes, hyphens or whitespace.' "pkgver${2:+ in $2}"
		return 1
	fi
	if [[ $1 = *[![:ascii:]]* ]]; then
		__hive_error '%s may only contain ascii characters.' "pkgver${2:+ in $2}"
		return 1
	fi
}

__hive_check_fullpkgver() { # VERSION TYPE
	local __hive_v=$1 __hive_ret=0
	if [[ $__hive_v = *:* ]]; then
		__hive_check_epoch "${__hive_v%%:*}" "$2" || __hive_ret=1
		__hive_v=${__hive_v#*:}
	fi
	if [[ $__hive_v = ?*-* ]]; then
		__hive_check_pkgrel "${__hive_v##*-}" "$2" || __hive_ret=1
		__hive_v=${__hive_v%-*}
	fi
	__hive_check_pkgver "$__hive_v" "$2" || __hive_ret=1
	return $__hive_ret
}

__hive_check_name() { # TYPE NAME
	local __hive_ret=0
	if [[ -z $2 ]]; then
		__hive_error '%s is not allowed to be empty.' "$1"
		return 1
	fi
	if [[ ${2:0:1} = - ]]; then
		__hive_error '%s is not allowed to start with a hyphen.' "$1"
		__hive_ret=1
	fi
	if [[ ${2:0:1} = . ]]; then
		__hive_error '%s is not allowed to start with a dot.' "$1"
		__hive_ret=1
	fi
	if [[ $2 = *[![:ascii:]]* ]]; then
		__hive_error '%s may only contain ascii characters.' "$1"
		return 1
	fi
	if [[ $2 = *[^[:alnum:]+_.@-]* ]]; then
		__hive_error "%s contains invalid characters: '%s'" "$1" "${2//[[:alnum:]+_.@-]/}"
		__hive_ret=1
	fi
	return $__hive_ret
}

__hive_lint_pkgname() {
	local __hive_p __hive_ret=0
	if [[ -z ${pkgname[*]} ]]; then
		__hive_error '%s is not allowed to be empty.' pkgname
		return 1
	fi
	for __hive_p in "${pkgname[@]}"; do
		__hive_check_name pkgname "$__hive_p" || __hive_ret=1
	done
	return $__hive_ret
}

__hive_lint_relations() { # ATTR: checkdepends conflicts depends makedepends optdepends
	local __hive_list=() __hive_e __hive_n __hive_v __hive_ret=0
	__hive_all_split "$1" __hive_list
	if [[ $1 == optdepends ]]; then
		__hive_list=("${__hive_list[@]%%:[[:space:]]*}")
	fi
	for __hive_e in "${__hive_list[@]}"; do
		__hive_n=${__hive_e%%@(<|>|=|>=|<=)*}
		__hive_check_name "$1" "$__hive_n" || __hive_ret=1
		if [[ $__hive_n != "$__hive_e" ]]; then
			# shellcheck disable=SC2295
			__hive_v=${__hive_e##$__hive_n@(<|>|=|>=|<=)}
			if [[ $1 != depends || -n $__hive_v ]]; then
				__hive_check_fullpkgver "$__hive_v" "$1" || __hive_ret=1
			fi
		fi
	done
	return $__hive_ret
}

__hive_lint_options() {
	local __hive_all=("${options[@]}") __hive_list=() __hive_p __hive_o __hive_k __hive_ret=0
	for __hive_p in "${pkgname[@]}"; do
		if __hive_function_var "package_$__hive_p" options 1 __hive_list; then
			__hive_all+=("${__hive_list[@]}")
		fi
	done
	for __hive_o in "${__hive_all[@]}"; do
		for __hive_k in "${__hive_known_options[@]}"; do
			[[ $__hive_o = "$__hive_k" || $__hive_o = "!$__hive_k" ]] && continue 2
		done
		__hive_error "%s array contains unknown option '%s'" options "$__hive_o"
		__hive_ret=1
	done
	return $__hive_ret
}

__hive_lint_package_function() {
	local __hive_p __hive_ret=0
	if ((${#pkgname[@]} == 1)); then
		if __hive_has_function package && __hive_has_function "package_$pkgname"; then
			__hive_error 'Conflicting %s and %s functions in %s' 'package()' "package_$pkgname()" "$BUILDFILE"
			__hive_ret=1
		elif __hive_has_function build && ! { __hive_has_function package || __hive_has_function "package_$pkgname"; }; then
			__hive_error 'Missing %s function in %s' 'package()' "$BUILDFILE"
			__hive_ret=1
		fi
	else
		if __hive_has_function package; then
			__hive_error "Extra %s function for split package '%s'" 'package()' "$pkgbase"
			__hive_ret=1
		fi
		for __hive_p in "${pkgname[@]}"; do
			if ! __hive_has_function "package_$__hive_p"; then
				__hive_error "Missing %s function for split package '%s'" "package_$__hive_p()" "$__hive_p"
				__hive_ret=1
			fi
		done
	fi
	return $__hive_ret
}

__hive_lint_package_function_variable() {
	local __hive_p __hive_a __hive_i __hive_ret=0
	# shellcheck disable=SC2068
	for __hive_p in ${pkgname[@]}; do
		for __hive_a in ${arch[@]}; do
			[[ $__hive_a == any ]] && continue
			for __hive_i in "${__hive_arrays[@]}" "${__hive_strings[@]}"; do
				[[ -n ${__hive_is_override[$__hive_i]+set} ]] && continue
				if __hive_function_var_exists "package_$__hive_p" "${__hive_i}_$__hive_a"; then
					__hive_error '%s can not be set inside a package function' "${__hive_i}_$__hive_a"
					__hive_ret=1
				fi
			done
		done
		for __hive_i in "${__hive_arrays[@]}" "${__hive_strings[@]}"; do
			[[ -n ${__hive_is_override[$__hive_i]+set} ]] && continue
			if __hive_function_var_exists "package_$__hive_p" "$__hive_i"; then
				__hive_error '%s can not be set inside a package function' "$__hive_i"
				__hive_ret=1
			fi
		done
	done
	return $__hive_ret
}

__hive_lint_provides() {
	local __hive_list=() __hive_e __hive_n __hive_ret=0
	__hive_all_split provides __hive_list
	for __hive_e in "${__hive_list[@]}"; do
		if [[ $__hive_e == *['<>']* ]]; then
			__hive_error '%s array cannot contain comparison (< or >) operators.' provides
			__hive_ret=1
			continue
		fi
		__hive_n=${__hive_e%=*}
		__hive_check_name provides "$__hive_n" || __hive_ret=1
		if [[ $__hive_n != "$__hive_e" ]]; then
			# shellcheck disable=SC2295
			__hive_check_fullpkgver "${__hive_e##$__hive_n=}" provides || __hive_ret=1
		fi
	done
	return $__hive_ret
}

__hive_lint_source() {
	local __hive_idx=("${!source[@]}")
	if ((${#source[*]} > 0 && (${__hive_idx[@]: -1} + 1) != ${#source[*]})); then
		__hive_error 'Sparse arrays are not allowed for source'
		return 1
	fi
}

__hive_lint_variable() {
	local __hive_i __hive_a __hive_p __hive_out __hive_ret=0
	for __hive_i in "${__hive_arrays[@]}"; do
		if __hive_defined "$__hive_i" && ! __hive_is_array "$__hive_i"; then
			__hive_error '%s should be an array' "$__hive_i"
			__hive_ret=1
		fi
	done
	for __hive_a in "${arch[@]}"; do
		[[ $__hive_a == any ]] && continue
		for __hive_i in "${__hive_arch_arrays[@]}"; do
			if __hive_defined "${__hive_i}_$__hive_a" && ! __hive_is_array "${__hive_i}_$__hive_a"; then
				__hive_error '%s should be an array' "${__hive_i}_$__hive_a"
				__hive_ret=1
			fi
		done
	done
	for __hive_i in "${__hive_strings[@]}"; do
		if __hive_defined "$__hive_i" && __hive_is_array "$__hive_i"; then
			__hive_error '%s should not be an array' "$__hive_i"
			__hive_ret=1
		fi
	done
	# shellcheck disable=SC2068
	for __hive_p in ${pkgname[@]}; do
		for __hive_i in "${__hive_arrays[@]}"; do
			if __hive_function_var "package_$__hive_p" "$__hive_i" 0 __hive_out; then
				__hive_error '%s should be an array' "$__hive_i"
				__hive_ret=1
			fi
		done
		for __hive_a in "${arch[@]}"; do
			[[ $__hive_a == any ]] && continue
			for __hive_i in "${__hive_arch_arrays[@]}"; do
				if __hive_function_var "package_$__hive_p" "${__hive_i}_$__hive_a" 0 __hive_out; then
					__hive_error '%s should be an array' "${__hive_i}_$__hive_a"
					__hive_ret=1
				fi
			done
		done
		for __hive_i in "${__hive_strings[@]}"; do
			if __hive_function_var "package_$__hive_p" "$__hive_i" 1 __hive_out; then
				__hive_error '%s should not be an array' "$__hive_i"
				__hive_ret=1
			fi
		done
	done
	return $__hive_ret
}

__hive_lint_arch
__hive_lint_arch_specific
__hive_lint_backup
__hive_lint_file_attr changelog
__hive_check_epoch "$epoch"
__hive_check_pkgrel "$pkgrel"
__hive_check_pkgver "$pkgver"
__hive_lint_pkgname
__hive_lint_relations checkdepends
__hive_lint_relations conflicts
__hive_lint_relations depends
__hive_lint_file_attr install
__hive_lint_relations makedepends
__hive_lint_relations optdepends
__hive_lint_options
__hive_lint_package_function
__hive_lint_package_function_variable
[[ -z $pkgbase ]] || __hive_check_name pkgbase "$pkgbase"
__hive_lint_provides
__hive_lint_source
__hive_lint_variable

# ---------------------------------------------------------------- sections
__hive_section_attrs() { # PKGNAME ('' for pkgbase) SINGLE... -- MULTI...
	local __hive_p=$1 __hive_attr __hive_value __hive_a __hive_arch=()
	shift
	while [[ $1 != -- ]]; do
		if __hive_attribute "$__hive_p" "$1" 0 __hive_value; then
			__hive_rec "$1" "$__hive_value"
		fi
		shift
	done
	shift
	for __hive_attr in "$@"; do
		if __hive_attribute "$__hive_p" "$__hive_attr" 1 __hive_value; then
			__hive_rec "$__hive_attr" "${__hive_value[@]}"
		fi
	done
	__hive_attribute "$__hive_p" arch 1 __hive_arch
	for __hive_a in "${__hive_arch[@]}"; do
		[[ $__hive_a = any ]] && continue
		for __hive_attr in source provides conflicts depends replaces optdepends makedepends \
			checkdepends "${__hive_sums[@]}"; do
			if __hive_attribute "$__hive_p" "${__hive_attr}_$__hive_a" 1 __hive_value; then
				__hive_rec "${__hive_attr}_$__hive_a" "${__hive_value[@]}"
			fi
		done
	done
}

__hive_rec '(section)' pkgbase "$pkgbase"
__hive_section_attrs '' pkgdesc pkgver pkgrel epoch url install changelog -- \
	arch groups license checkdepends makedepends depends optdepends provides conflicts \
	replaces noextract options backup source validpgpkeys "${__hive_sums[@]}"
for __hive_name in "${pkgname[@]}"; do
	__hive_rec '(section)' pkgname "$__hive_name"
	__hive_section_attrs "$__hive_name" pkgdesc url install changelog -- \
		arch groups license checkdepends depends optdepends provides conflicts replaces \
		options backup
done

__hive_functions=()
for __hive_name in pkgver prepare build check package $(compgen -A function package_); do
	__hive_has_function "$__hive_name" && __hive_functions+=("$__hive_name")
done
__hive_rec '(functions)' "${__hive_functions[@]}"
__hive_rec '(end)'
