/*
 * Test function that misbehaves on request: the event "crash" dies of
 * SIGSEGV, "exit3" exits with status 3, "hang" never returns; anything else
 * is echoed back. Built -static.
 */
#include <signal.h>
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
	return write(1, buf, (size_t)n) == n ? 0 : 1;
}
