/*
 * Test handler: writes argv[2] MiB to stdout (argv[1] == "out") or stderr
 * ("err"), then prints "end" to stdout.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	static char buf[1 << 20];
	int fd = argc > 1 && strcmp(argv[1], "err") == 0 ? 2 : 1;
	long mib = argc > 2 ? atol(argv[2]) : 64;

	memset(buf, 'x', sizeof(buf));
	for (long i = 0; i < mib; i++)
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			return 1;
	return write(1, "end", 3) == 3 ? 0 : 1;
}
