/* cbuild: demo worker.  Runs every generated unit over a seed and prints the
 * resulting 64-bit digest, so check() can tell a sane build from a broken one. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t cbuild_digest(uint64_t seed);

int main(int argc, char **argv)
{
	uint64_t seed = 1;

	if (argc > 1 && strcmp(argv[1], "--version") == 0) {
		puts("cbuild " CBUILD_VERSION);
		return 0;
	}
	if (argc > 1)
		seed = strtoull(argv[1], NULL, 0);
	printf("cbuild digest(%" PRIu64 ") = %016" PRIx64 "\n", seed, cbuild_digest(seed));
	return 0;
}
