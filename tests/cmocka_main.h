/*
 * cmocka_main.h - shared main() logic for hearth's cmocka test binaries.
 *
 * ctest runs each case as `<binary> <case>` (see hearth_cmocka_tests in
 * tests/CMakeLists.txt). A case name that matches nothing is an error, not a
 * silent pass, so a renamed test cannot vanish from CI unnoticed.
 */
#ifndef HEARTH_TESTS_CMOCKA_MAIN_H
#define HEARTH_TESTS_CMOCKA_MAIN_H

#include <stdio.h>
#include <string.h>

static inline int hearth_run_tests(const char *group, const struct CMUnitTest *tests, size_t n,
				   int argc, char **argv)
{
	if (argc > 1) {
		size_t i;

		for (i = 0; i < n; i++)
			if (strcmp(tests[i].name, argv[1]) == 0)
				break;
		if (i == n) {
			fprintf(stderr, "%s: no test named %s\n", group, argv[1]);
			return 1;
		}
		cmocka_set_test_filter(argv[1]);
	}
	return _cmocka_run_group_tests(group, tests, n, NULL, NULL);
}

#define HEARTH_RUN_TESTS(group, tests, argc, argv) \
	hearth_run_tests(group, tests, sizeof(tests) / sizeof(tests[0]), argc, argv)

#endif
