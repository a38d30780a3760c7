#include "guest.h"

#define COM1 0x3f8

/*
 * String instructions: under KVM's emulator every instruction is expensive,
 * and one "rep movsb" costs far less than a byte loop.
 */
void *memcpy(void *d, const void *s, size_t n)
{
	void *ret = d;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	return ret;
}

void *memset(void *d, int c, size_t n)
{
	void *ret = d;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return ret;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

void putc_uart(char c)
{
	outb(COM1, (uint8_t)c);
}

void putn_uart(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		putc_uart(s[i]);
}

void puts_uart(const char *s)
{
	while (*s)
		putc_uart(*s++);
}

void put_hex(uint64_t v)
{
	char b[19];
	int i = 18;
	b[i] = 0;
	do {
		b[--i] = "0123456789abcdef"[v & 0xf];
		v >>= 4;
	} while (v);
	b[--i] = 'x';
	b[--i] = '0';
	puts_uart(b + i);
}

void put_dec(uint64_t v)
{
	char b[21];
	int i = 20;
	b[i] = 0;
	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts_uart(b + i);
}

void guest_reset(void)
{
	outb(0x64, 0xfe);
	for (;;)
		__asm__ volatile("hlt");
}

const char *bp_cmdline(const uint8_t *bp)
{
	uint32_t p;
	memcpy(&p, bp + 0x228, 4);
	return (const char *)(uintptr_t)p;
}

const char *cmdline_get(const char *c, const char *key, size_t *len)
{
	size_t kl = strlen(key);
	const char *p = c;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *w = p;
		while (*p && *p != ' ')
			p++;
		if ((size_t)(p - w) > kl && memcmp(w, key, kl) == 0 && w[kl] == '=') {
			*len = (size_t)(p - w) - kl - 1;
			return w + kl + 1;
		}
	}
	return 0;
}

uint64_t parse_u64(const char *s, size_t len)
{
	uint64_t v = 0;
	size_t i = 0;
	if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		for (i = 2; i < len; i++) {
			char c = s[i];
			int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
				: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
			if (d < 0)
				break;
			v = v * 16 + (uint64_t)d;
		}
		return v;
	}
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	return v;
}
