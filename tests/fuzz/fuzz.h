/*
 * fuzz.h - the libFuzzer entry points every fuzz_<name>.c defines, and that
 * replay.c calls when the target is built without libFuzzer.
 */
#ifndef HEARTH_TESTS_FUZZ_H
#define HEARTH_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
