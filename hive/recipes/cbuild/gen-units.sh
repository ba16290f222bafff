#!/bin/sh
# gen-units.sh UNITS FUNCS: write UNITS translation units (unit_NN.c), each with
# FUNCS mixing functions, plus units.h and units.list.  The code is generated so
# that the recipe stays small while the compiler gets real -O2 work to do: every
# function has unrollable loops, a large switch and arithmetic over a table.
set -eu
units=${1:-48}
funcs=${2:-24}

: >units.list
{
	echo '#include <stdint.h>'
	u=0
	while [ "$u" -lt "$units" ]; do
		echo "uint64_t unit_${u}_run(uint64_t seed);"
		u=$((u + 1))
	done
} >units.h

u=0
while [ "$u" -lt "$units" ]; do
	awk -v u="$u" -v funcs="$funcs" '
	BEGIN {
		print "#include <stdint.h>"
		print "#include \"units.h\""
		print ""
		printf "static const uint32_t table_%d[64] = {", u
		for (i = 0; i < 64; i++) printf "%s%uu", (i ? ", " : ""), (i * 2654435761 + u * 40503) % 4294967296
		print "};"
		for (f = 0; f < funcs; f++) {
			print ""
			printf "static uint64_t mix_%d_%d(uint64_t x, uint64_t y)\n{\n", u, f
			print "\tuint64_t acc[16];"
			print "\tfor (int i = 0; i < 16; i++)"
			printf "\t\tacc[i] = x * %d + y * (i + %d) + table_%d[(i * %d) & 63];\n", f + 3, u + 1, u, f + 1
			print "\tfor (int r = 0; r < 8; r++) {"
			print "\t\tfor (int i = 0; i < 16; i++) {"
			printf "\t\t\tacc[i] ^= (acc[(i + %d) & 15] << %d) | (acc[(i + 3) & 15] >> %d);\n", f % 7 + 1, f % 13 + 1, 64 - (f % 13 + 1)
			printf "\t\t\tacc[i] += table_%d[(acc[i] >> %d) & 63] * %du;\n", u, f % 17 + 3, 2 * f + 1
			print "\t\t}"
			print "\t\tswitch ((acc[r] + y) % 16) {"
			for (c = 0; c < 16; c++)
				printf "\t\tcase %d: x = x * %du + (acc[%d] ^ %du); break;\n", c, 6364136223 % (c + 97) * 2 + 1, (c + f) % 16, c * 977 + f
			print "\t\tdefault: x ^= y; break;"
			print "\t\t}"
			print "\t}"
			print "\tfor (int i = 0; i < 16; i++)"
			print "\t\tx += acc[i] * (uint64_t)(i + 1);"
			print "\treturn x;"
			print "}"
		}
		print ""
		printf "uint64_t unit_%d_run(uint64_t seed)\n{\n", u
		print "\tuint64_t h = seed;"
		for (f = 0; f < funcs; f++)
			printf "\th = mix_%d_%d(h, %du);\n", u, f, f * 31 + u
		print "\treturn h;"
		print "}"
	}' >"unit_$u.c"
	echo "unit_$u" >>units.list
	u=$((u + 1))
done

{
	echo '#include <inttypes.h>'
	echo '#include <stdio.h>'
	echo '#include "units.h"'
	echo ''
	echo 'uint64_t cbuild_digest(uint64_t seed)'
	echo '{'
	echo '	uint64_t h = seed;'
	u=0
	while [ "$u" -lt "$units" ]; do
		echo "	h = unit_${u}_run(h);"
		u=$((u + 1))
	done
	echo '	return h;'
	echo '}'
} >digest.c
