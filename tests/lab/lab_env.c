#include "lab_env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void lab_skip(const char *why)
{
	printf("SKIP: %s\n", why);
	fflush(stdout);
	exit(77);
}

const char *lab_kernel(void)
{
	static char kernel[600];
	char cmd[1024], dir[512] = "";

	snprintf(cmd, sizeof(cmd), "%s/kernel-config/build --print 2>/dev/null", HEARTH_SOURCE_DIR);
	FILE *p = popen(cmd, "r");
	if (p && fgets(dir, sizeof(dir), p))
		dir[strcspn(dir, "\n")] = 0;
	if (p)
		pclose(p);
	snprintf(kernel, sizeof(kernel), "%s/vmlinux", dir);
	return dir[0] && access(kernel, R_OK) == 0 ? kernel : NULL;
}

const char *lab_require(void)
{
	if (!getenv("HEARTH_LAB"))
		lab_skip("not inside the KVM lab: run it through ci/kvm-lab (ctest -L lab does)");
	if (access("/dev/kvm", R_OK | W_OK) < 0)
		lab_skip("no usable /dev/kvm");
	const char *kernel = lab_kernel();
	if (!kernel)
		lab_skip("the guest kernel is not built (run kernel-config/build)");
	return kernel;
}
