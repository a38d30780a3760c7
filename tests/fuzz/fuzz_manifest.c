/*
 * fuzz_manifest - manifest.json parsing (host/image/manifest.c) on arbitrary
 * bytes. What a parsed manifest promises (image.h) is checked: guest paths
 * absolute and free of "..", env entries KEY=VALUE sorted by key, numbers in
 * their documented ranges.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "image.h"

static void check_path(const char *p)
{
	assert(p && p[0] == '/');
	for (const char *s = p; *s;) {
		size_t n = strcspn(s, "/");

		assert(!(n == 2 && s[0] == '.' && s[1] == '.'));
		s += n;
		while (*s == '/')
			s++;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hearth_manifest m;
	char err[512];

	err[0] = 0;
	if (hearth_manifest_parse((const char *)data, size, &m, err, sizeof(err)) < 0) {
		assert(err[0]);
		return 0;
	}
	check_path(m.handler);
	if (m.init)
		check_path(m.init);
	assert(m.memory_mb >= 32 && m.memory_mb <= 65536);
	assert(m.timeout_ms >= 1 && m.timeout_ms <= 900000);
	for (size_t i = 0; i < m.nargs; i++)
		assert(m.args[i]);
	for (size_t i = 0; i < m.nenv; i++) {
		assert(m.env[i] && strchr(m.env[i], '=') && m.env[i][0] != '=');
		if (i)
			assert(strcmp(m.env[i - 1], m.env[i]) < 0);
	}
	hearth_manifest_free(&m);
	return 0;
}
