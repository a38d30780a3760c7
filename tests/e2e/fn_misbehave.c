/*
 * Test function that misbehaves on request: the event "crash" dies of
 * SIGSEGV, "exit3" exits with status 3, "hang" never returns, "touch N"
 * writes N MiB of fresh memory and says "touched N"; anything else is echoed
 * back. Built -static.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
	char buf[4096];
	ssize_t n = read(0, buf, sizeof(buf) - 1);

	if (n < 0)
		return 1;
	buf[n] = '\0';
	if (!strcmp(buf, "crash"))
		raise(SIGSEGV);
	if (!strcmp(buf, "exit3"))
		return 3;
	if (!strcmp(buf, "hang"))
		for (;;)
			pause();
	if (!strncmp(buf, "touch ", 6)) {
		size_t mib = strtoul(buf + 6, NULL, 10);
		volatile char *p = malloc(mib << 20); /* volatile: the stores must happen */

		if (!p)
			return 4;
		/* Every page written, with a pattern no zero-page merging can share. */
		for (size_t i = 0; i < mib << 20; i += 4096)
			p[i] = (char)(i >> 12 | 1);
		n = snprintf(buf, sizeof(buf), "touched %zu", mib);
	}
	return write(1, buf, (size_t)n) == n ? 0 : 1;
}
