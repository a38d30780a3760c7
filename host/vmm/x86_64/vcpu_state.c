#include "vcpu_state.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define MAX_MSRS 512

static int say(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

#define GET(fd, req, arg, name)                                                            \
	do {                                                                               \
		if (ioctl((fd), (req), (arg)) < 0)                                         \
			return say(err, errlen, "KVM: ioctl (%s) failed: %s", name, strerror(errno)); \
	} while (0)

static bool has_xcrs(struct vm *vm)
{
	return ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
}

static size_t xsave_size(struct vm *vm)
{
	int n = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	return n > (int)sizeof(struct kvm_xsave) ? (size_t)n : sizeof(struct kvm_xsave);
}

int x86_vm_save(struct vm *vm, struct snap_builder *b, char *err, size_t errlen)
{
	snap_node_begin(b, "vm");
	for (int chip = 0; chip < 3; chip++) {
		struct kvm_irqchip ic = { .chip_id = (uint32_t)chip };
		GET(vm->vm_fd, KVM_GET_IRQCHIP, &ic, "GET_IRQCHIP");
		static const char *names[] = { "pic-master", "pic-slave", "ioapic" };
		snap_prop(b, names[chip], &ic, sizeof(ic));
	}
	struct kvm_pit_state2 pit;
	GET(vm->vm_fd, KVM_GET_PIT2, &pit, "GET_PIT2");
	snap_prop(b, "pit", &pit, sizeof(pit));
	struct kvm_clock_data clk;
	memset(&clk, 0, sizeof(clk));
	GET(vm->vm_fd, KVM_GET_CLOCK, &clk, "GET_CLOCK");
	snap_prop(b, "clock", &clk, sizeof(clk));
	return snap_node_end(b) < 0 ? say(err, errlen, "state file: building node vm failed") : 0;
}

/* Every MSR KVM lists that this vCPU reads and accepts back unchanged. */
static int msr_snapshot(struct vcpu *c, struct kvm_msr_entry **out, unsigned *nout)
{
	struct kvm_msr_list probe = { .nmsrs = 0 };
	ioctl(c->vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe);
	unsigned n = probe.nmsrs > MAX_MSRS ? MAX_MSRS : probe.nmsrs;
	struct kvm_msr_list *list = calloc(1, sizeof(*list) + n * sizeof(uint32_t));
	struct kvm_msr_entry *ents = calloc(n ? n : 1, sizeof(*ents));
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} one;
	unsigned k = 0;
	if (!list || !ents)
		goto fail;
	list->nmsrs = n;
	if (ioctl(c->vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0)
		goto fail;
	for (unsigned i = 0; i < list->nmsrs && i < n; i++) {
		memset(&one, 0, sizeof(one));
		one.h.nmsrs = 1;
		one.e.index = list->indices[i];
		if (ioctl(c->fd, KVM_GET_MSRS, &one) != 1)
			continue;
		if (ioctl(c->fd, KVM_SET_MSRS, &one) != 1)
			continue;
		ents[k++] = one.e;
	}
	free(list);
	*out = ents;
	*nout = k;
	return 0;
fail:
	free(list);
	free(ents);
	return -1;
}

int x86_vcpu_save(struct vcpu *c, struct snap_builder *b, char *err, size_t errlen)
{
	char name[32];
	snprintf(name, sizeof(name), "cpu@%d", c->id);
	snap_node_begin(b, name);
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_mp_state mp;
	struct kvm_debugregs dr;
	GET(c->fd, KVM_GET_MP_STATE, &mp, "GET_MP_STATE");
	GET(c->fd, KVM_GET_REGS, &regs, "GET_REGS");
	GET(c->fd, KVM_GET_SREGS, &sregs, "GET_SREGS");
	size_t xs = xsave_size(c->vm);
	void *xsave = calloc(1, xs);
	if (!xsave)
		return say(err, errlen, "out of memory");
	if (ioctl(c->fd, xs > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, xsave) < 0) {
		free(xsave);
		return say(err, errlen, "KVM: ioctl (GET_XSAVE) failed: %s", strerror(errno));
	}
	snap_prop(b, "xsave", xsave, xs);
	free(xsave);
	/* No XSAVE on the host CPU: KVM has no XCRs to give (nor to take back). */
	memset(&xcrs, 0, sizeof(xcrs));
	if (has_xcrs(c->vm))
		GET(c->fd, KVM_GET_XCRS, &xcrs, "GET_XCRS");
	GET(c->fd, KVM_GET_LAPIC, &lapic, "GET_LAPIC");
	GET(c->fd, KVM_GET_VCPU_EVENTS, &ev, "GET_VCPU_EVENTS");
	GET(c->fd, KVM_GET_DEBUGREGS, &dr, "GET_DEBUGREGS");
	struct kvm_msr_entry *msrs;
	unsigned nmsrs;
	if (msr_snapshot(c, &msrs, &nmsrs) < 0)
		return say(err, errlen, "KVM: reading the MSR list failed");
	snap_prop(b, "mp-state", &mp, sizeof(mp));
	snap_prop(b, "regs", &regs, sizeof(regs));
	snap_prop(b, "sregs", &sregs, sizeof(sregs));
	snap_prop(b, "xcrs", &xcrs, sizeof(xcrs));
	snap_prop(b, "lapic", &lapic, sizeof(lapic));
	snap_prop(b, "vcpu-events", &ev, sizeof(ev));
	snap_prop(b, "debugregs", &dr, sizeof(dr));
	snap_prop(b, "msrs", msrs, nmsrs * sizeof(*msrs));
	/* The guest has probed CPUID already: a restore must show it the same. */
	snap_prop(b, "cpuid", c->cpuid->entries, c->cpuid->nent * sizeof(c->cpuid->entries[0]));
	free(msrs);
	return snap_node_end(b) < 0 ? say(err, errlen, "state file: building node %s failed", name)
				    : 0;
}

#define TAKE(var, node, prop)                                                       \
	const void *var##_p = snap_prop_get(s, node, prop, sizeof(var), err, errlen); \
	if (!var##_p)                                                               \
		return -1;                                                          \
	memcpy(&var, var##_p, sizeof(var))

int x86_vm_restore(struct vm *vm, const struct snap *s, char *err, size_t errlen)
{
	static const char *names[] = { "pic-master", "pic-slave", "ioapic" };
	for (int chip = 0; chip < 3; chip++) {
		struct kvm_irqchip ic;
		TAKE(ic, "/vm", names[chip]);
		if (ic.chip_id != (uint32_t)chip)
			return say(err, errlen, "state file: /vm/%s has chip id %u", names[chip],
				   ic.chip_id);
		GET(vm->vm_fd, KVM_SET_IRQCHIP, &ic, "SET_IRQCHIP");
	}
	struct kvm_pit_state2 pit;
	TAKE(pit, "/vm", "pit");
	GET(vm->vm_fd, KVM_SET_PIT2, &pit, "SET_PIT2");
	struct kvm_clock_data clk;
	TAKE(clk, "/vm", "clock");
	struct kvm_clock_data set = { .clock = clk.clock };
	GET(vm->vm_fd, KVM_SET_CLOCK, &set, "SET_CLOCK");
	return 0;
}

int x86_vcpu_restore(struct vcpu *c, const struct snap *s, char *err, size_t errlen)
{
	char node[32];
	snprintf(node, sizeof(node), "/cpu@%d", c->id);
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_mp_state mp;
	struct kvm_debugregs dr;
	TAKE(mp, node, "mp-state");
	TAKE(regs, node, "regs");
	TAKE(sregs, node, "sregs");
	TAKE(xcrs, node, "xcrs");
	TAKE(lapic, node, "lapic");
	TAKE(ev, node, "vcpu-events");
	TAKE(dr, node, "debugregs");
	if (xcrs.nr_xcrs > KVM_MAX_XCRS)
		return say(err, errlen, "state file: %s/xcrs count %u out of range", node, xcrs.nr_xcrs);
	size_t xs = xsave_size(c->vm);
	const void *xsave = snap_prop_get(s, node, "xsave", xs, err, errlen);
	if (!xsave)
		return -1;
	size_t mlen;
	const void *m = snap_prop_get_var(s, node, "msrs", MAX_MSRS * sizeof(struct kvm_msr_entry),
					  &mlen, err, errlen);
	if (!m)
		return -1;
	if (mlen % sizeof(struct kvm_msr_entry))
		return say(err, errlen, "state file: %s/msrs is not a whole number of entries", node);

	size_t clen;
	const void *cp = snap_prop_get_var(s, node, "cpuid", 256 * sizeof(struct kvm_cpuid_entry2),
					   &clen, err, errlen);
	if (!cp)
		return -1;
	if (clen == 0 || clen % sizeof(struct kvm_cpuid_entry2))
		return say(err, errlen, "state file: %s/cpuid is not a whole number of entries", node);
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + clen);
	if (!cpuid)
		return say(err, errlen, "out of memory");
	cpuid->nent = (uint32_t)(clen / sizeof(struct kvm_cpuid_entry2));
	memcpy(cpuid->entries, cp, clen);
	/*
	 * vm_create_vcpus() already gave this vCPU the CPUID this host computes;
	 * when the snapshot's is the same (a snapshot taken on this host), setting
	 * it again changes nothing and costs ~150 us per vCPU.
	 */
	bool same = c->cpuid && c->cpuid->nent == cpuid->nent &&
		    !memcmp(c->cpuid->entries, cpuid->entries, clen);
	int cr = same ? 0 : ioctl(c->fd, KVM_SET_CPUID2, cpuid);
	free(cpuid);
	if (cr < 0)
		return say(err, errlen, "KVM: ioctl (SET_CPUID2) refused the snapshot's CPUID: %s",
			   strerror(errno));

	GET(c->fd, KVM_SET_MP_STATE, &mp, "SET_MP_STATE");
	GET(c->fd, KVM_SET_REGS, &regs, "SET_REGS");
	GET(c->fd, KVM_SET_SREGS, &sregs, "SET_SREGS");
	void *xcopy = malloc(xs);
	if (!xcopy)
		return say(err, errlen, "out of memory");
	memcpy(xcopy, xsave, xs);
	int r = ioctl(c->fd, KVM_SET_XSAVE, xcopy);
	free(xcopy);
	if (r < 0)
		return say(err, errlen, "KVM: ioctl (SET_XSAVE) failed: %s", strerror(errno));
	if (xcrs.nr_xcrs > 0) {
		if (!has_xcrs(c->vm))
			return say(err, errlen,
				   "this host's KVM has no XCRs (KVM_CAP_XCRS: the CPU lacks XSAVE), "
				   "but the snapshot holds %u: restore it on a host whose CPU has XSAVE",
				   xcrs.nr_xcrs);
		GET(c->fd, KVM_SET_XCRS, &xcrs, "SET_XCRS");
	}
	GET(c->fd, KVM_SET_DEBUGREGS, &dr, "SET_DEBUGREGS");
	GET(c->fd, KVM_SET_LAPIC, &lapic, "SET_LAPIC");
	size_t n = mlen / sizeof(struct kvm_msr_entry);
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + mlen);
	if (!msrs)
		return say(err, errlen, "out of memory");
	msrs->nmsrs = (uint32_t)n;
	memcpy(msrs->entries, m, mlen);
	r = ioctl(c->fd, KVM_SET_MSRS, msrs);
	uint32_t bad = (r >= 0 && (size_t)r < n) ? msrs->entries[r].index : 0;
	free(msrs);
	if (r < 0 || (size_t)r != n)
		return say(err, errlen, "KVM: ioctl (SET_MSRS) restored %d of %zu MSRs (0x%x refused)",
			   r, n, bad);
	GET(c->fd, KVM_SET_VCPU_EVENTS, &ev, "SET_VCPU_EVENTS");
	return 0;
}

void x86_kvmclock_ctrl(struct vm *vm)
{
	/* EINVAL just means the guest never enabled kvmclock. */
	for (unsigned i = 0; i < vm->nvcpus; i++)
		ioctl(vm->vcpu[i].fd, KVM_KVMCLOCK_CTRL, 0);
}
