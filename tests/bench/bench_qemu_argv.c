/* bench_qemu_argv.c - the benchmarks' QEMU command line. See bench_vmm.h. */
#include <stdio.h>

#include "bench_vmm.h"

#define NAV (int)(sizeof(((struct bv_qemu_argv *)0)->av) / sizeof(const char *))

int bv_qemu_argv(const struct bv_qemu_opts *o, struct bv_qemu_argv *a)
{
	int n = 0;

	snprintf(a->mem, sizeof(a->mem), "%d", o->mem_mib);
	snprintf(a->chardev, sizeof(a->chardev), "file,id=%s,path=%s", o->console_id, o->console);
	snprintf(a->serial, sizeof(a->serial), "chardev:%s", o->console_id);
	snprintf(a->qmp, sizeof(a->qmp), "unix:%s,server=on,wait=off", o->qmp);
	a->av[n++] = o->bin;
	a->av[n++] = "-M";
	a->av[n++] = o->machine;
	a->av[n++] = "-accel";
	a->av[n++] = o->accel;
	a->av[n++] = "-cpu";
	a->av[n++] = o->cpu;
	a->av[n++] = "-m";
	a->av[n++] = a->mem;
	if (o->smp) {
		a->av[n++] = "-smp";
		a->av[n++] = o->smp;
	}
	a->av[n++] = "-nodefaults";
	a->av[n++] = "-no-user-config";
	if (o->nographic)
		a->av[n++] = "-nographic";
	a->av[n++] = "-display";
	a->av[n++] = "none";
	if (o->no_reboot)
		a->av[n++] = "-no-reboot";
	a->av[n++] = "-chardev";
	a->av[n++] = a->chardev;
	a->av[n++] = "-serial";
	a->av[n++] = a->serial;
	a->av[n++] = "-kernel";
	a->av[n++] = o->kernel;
	if (o->initrd) {
		a->av[n++] = "-initrd";
		a->av[n++] = o->initrd;
	}
	if (o->append) {
		a->av[n++] = "-append";
		a->av[n++] = o->append;
	}
	/* What follows: the extra arguments, four more and the NULL. */
	for (size_t i = 0; o->extra && o->extra[i]; i++) {
		if (n + 5 >= NAV) {
			a->av[0] = NULL;
			return -1;
		}
		a->av[n++] = o->extra[i];
	}
	a->av[n++] = "-qmp";
	a->av[n++] = a->qmp;
	if (o->incoming) {
		snprintf(a->incoming, sizeof(a->incoming), "exec:cat %s", o->incoming);
		a->av[n++] = "-incoming";
		a->av[n++] = a->incoming;
	}
	a->av[n] = NULL;
	return n;
}
