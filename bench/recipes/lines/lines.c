/* Write N numbered lines to stdout, one write(2) per line. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
	long n = argc > 1 ? atol(argv[1]) : 0;
	char line[32];
	for (long i = 0; i < n; i++) {
		int len = snprintf(line, sizeof line, "line %ld\n", i);
		if (write(1, line, (size_t)len) != len)
			return 1;
	}
	return 0;
}
