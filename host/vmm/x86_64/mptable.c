/* mptable.c - the MP 1.4 table. Layout and contract: mptable.h. */
#include "mptable.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Entry layouts from the MP specification 1.4, chapter 4 (Linux: asm/mpspec_def.h). */
struct mpf_intel {
	char signature[4]; /* "_MP_" */
	uint32_t physptr;  /* the configuration table */
	uint8_t length;    /* in 16-byte units */
	uint8_t specification;
	uint8_t checksum;
	uint8_t feature1;  /* 0: a configuration table follows, no default configuration */
	uint8_t feature2;  /* bit 7 clear: virtual wire mode, no IMCR to program */
	uint8_t feature3, feature4, feature5;
} __attribute__((packed));

struct mpc_table {
	char signature[4]; /* "PCMP" */
	uint16_t length;
	uint8_t spec;
	uint8_t checksum;
	char oem[8];
	char productid[12];
	uint32_t oemptr;
	uint16_t oemsize;
	uint16_t oemcount; /* number of entries */
	uint32_t lapic;
	uint32_t reserved;
} __attribute__((packed));

struct mpc_cpu {
	uint8_t type, apicid, apicver, cpuflag;
	uint32_t cpufeature, featureflag;
	uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus {
	uint8_t type, busid;
	char bustype[6];
} __attribute__((packed));

struct mpc_ioapic {
	uint8_t type, apicid, apicver, flags;
	uint32_t apicaddr;
} __attribute__((packed));

struct mpc_intsrc { /* also the local interrupt entry: same shape */
	uint8_t type, irqtype;
	uint16_t irqflag;
	uint8_t srcbus, srcbusirq, dstapic, dstirq;
} __attribute__((packed));

_Static_assert(sizeof(struct mpf_intel) == 16, "MP floating pointer is 16 bytes");
_Static_assert(sizeof(struct mpc_table) == 44, "MP configuration table header is 44 bytes");
_Static_assert(sizeof(struct mpc_cpu) == 20, "processor entry is 20 bytes");
_Static_assert(sizeof(struct mpc_bus) == 8 && sizeof(struct mpc_ioapic) == 8 &&
		       sizeof(struct mpc_intsrc) == 8,
	       "bus, IOAPIC and interrupt entries are 8 bytes");

enum { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_INTSRC = 3, MP_LINTSRC = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

#define MP_SPEC_1_4 4
#define CPU_ENABLED 0x1
#define CPU_BSP 0x2
#define IOAPIC_USABLE 0x1
#define MP_IRQ_CONFORMS 0x0 /* polarity and trigger as the bus defines them: ISA is edge, high */
#define MP_ALL_LAPICS 0xff
/* KVM's LAPIC and IOAPIC report these versions in their version registers. */
#define LAPIC_VERSION 0x14
#define IOAPIC_VERSION 0x11
/* Only informative for Linux (it reads CPUID itself); a family 6 CPU with FPU and APIC. */
#define CPU_SIGNATURE 0x600
#define CPU_FEATURES ((1u << 0) | (1u << 9))

static uint8_t checksum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s += p[i];
	return (uint8_t)-s;
}

int x86_mptable_write(const struct guest_mem *m, unsigned nvcpus, char *eb, size_t el)
{
	/* APIC ids are 8 bits and 0xff means "all"; the IOAPIC takes id nvcpus. */
	if (nvcpus < 1 || nvcpus > 254) {
		snprintf(eb, el, "MP table: %u vCPUs is out of range", nvcpus);
		return -1;
	}
	size_t need = sizeof(struct mpf_intel) + sizeof(struct mpc_table) +
		      nvcpus * sizeof(struct mpc_cpu) + sizeof(struct mpc_bus) +
		      sizeof(struct mpc_ioapic) + (MPTABLE_IOAPIC_PINS + 2) * sizeof(struct mpc_intsrc);
	if (need > MPTABLE_MAX_SIZE) {
		snprintf(eb, el, "MP table for %u vCPUs needs %zu bytes, more than the %lu reserved",
			 nvcpus, need, MPTABLE_MAX_SIZE);
		return -1;
	}
	uint8_t buf[MPTABLE_MAX_SIZE];
	memset(buf, 0, sizeof(buf));
	struct mpf_intel *mpf = (struct mpf_intel *)buf;
	struct mpc_table *mpc = (struct mpc_table *)(buf + sizeof(*mpf));
	size_t off = sizeof(*mpf) + sizeof(*mpc);
	uint16_t entries = 0;
	const uint8_t ioapic_id = (uint8_t)nvcpus;

	for (unsigned i = 0; i < nvcpus; i++, entries++, off += sizeof(struct mpc_cpu)) {
		struct mpc_cpu c = {
			.type = MP_PROCESSOR,
			.apicid = (uint8_t)i,
			.apicver = LAPIC_VERSION,
			.cpuflag = CPU_ENABLED | (i == 0 ? CPU_BSP : 0),
			.cpufeature = CPU_SIGNATURE,
			.featureflag = CPU_FEATURES,
		};
		memcpy(buf + off, &c, sizeof(c));
	}
	struct mpc_bus bus = { .type = MP_BUS, .busid = 0 };
	memcpy(bus.bustype, "ISA   ", sizeof(bus.bustype));
	memcpy(buf + off, &bus, sizeof(bus));
	off += sizeof(bus);
	entries++;
	struct mpc_ioapic io = {
		.type = MP_IOAPIC,
		.apicid = ioapic_id,
		.apicver = IOAPIC_VERSION,
		.flags = IOAPIC_USABLE,
		.apicaddr = MPTABLE_IOAPIC_ADDR,
	};
	memcpy(buf + off, &io, sizeof(io));
	off += sizeof(io);
	entries++;
	for (unsigned pin = 0; pin < MPTABLE_IOAPIC_PINS; pin++, entries++) {
		struct mpc_intsrc s = {
			.type = MP_INTSRC,
			.irqtype = MP_INT,
			.irqflag = MP_IRQ_CONFORMS,
			.srcbus = 0,
			.srcbusirq = (uint8_t)pin,
			.dstapic = ioapic_id,
			.dstirq = (uint8_t)pin,
		};
		memcpy(buf + off, &s, sizeof(s));
		off += sizeof(s);
	}
	/* As firmware leaves them, and as x86_vcpu_boot_regs() programs the LAPICs. */
	struct mpc_intsrc lint[2] = {
		{ .type = MP_LINTSRC, .irqtype = MP_EXTINT, .irqflag = MP_IRQ_CONFORMS,
		  .dstapic = MP_ALL_LAPICS, .dstirq = 0 },
		{ .type = MP_LINTSRC, .irqtype = MP_NMI, .irqflag = MP_IRQ_CONFORMS,
		  .dstapic = MP_ALL_LAPICS, .dstirq = 1 },
	};
	memcpy(buf + off, lint, sizeof(lint));
	off += sizeof(lint);
	entries += 2;

	memcpy(mpc->signature, "PCMP", 4);
	mpc->length = (uint16_t)(off - sizeof(*mpf));
	mpc->spec = MP_SPEC_1_4;
	memcpy(mpc->oem, "HEARTH  ", 8);
	memcpy(mpc->productid, "hearth-vmm  ", 12);
	mpc->oemcount = entries;
	mpc->lapic = MPTABLE_LAPIC_ADDR;
	mpc->checksum = checksum((const uint8_t *)mpc, mpc->length);

	memcpy(mpf->signature, "_MP_", 4);
	mpf->physptr = (uint32_t)(MPTABLE_ADDR + sizeof(*mpf));
	mpf->length = 1;
	mpf->specification = MP_SPEC_1_4;
	mpf->checksum = checksum(buf, sizeof(*mpf));

	if (gm_write(m, MPTABLE_ADDR, buf, off) < 0) {
		snprintf(eb, el, "MP table: guest RAM does not cover 0x%lx+0x%zx", MPTABLE_ADDR, off);
		return -1;
	}
	return (int)off;
}
