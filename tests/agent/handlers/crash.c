/* Test handler: dies of SIGSEGV after logging, like a function with a bug. */
#include <signal.h>
#include <stdio.h>

int main(void)
{
	fputs("about to crash\n", stderr);
	fflush(stderr);
	raise(SIGSEGV);
	return 0;
}
