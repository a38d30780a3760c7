/*
 * config.h - hearthd's configuration file (default /etc/hearth/hearthd.conf).
 *
 * Every command-line flag has a key: its long name without "--". One
 * "key = value" per line; '#' starts a comment line; blank lines are skipped;
 * values run to the end of the line (trailing blanks dropped, optional double
 * quotes removed). Flags without an argument take true/false (yes/no, on/off,
 * 1/0): true gives the flag, false leaves it out. Values are checked here,
 * by the key's kind (whole number in range, engine name, HOST:PORT, path):
 * an unknown key, a key given twice, a line without '=' or a bad value is an
 * error that names the file and the line, and hearthd does not start.
 *
 * The file's options are placed before the command line's, so a flag given
 * on the command line overrides the file's value.
 */
#ifndef HEARTH_DAEMON_CONFIG_H
#define HEARTH_DAEMON_CONFIG_H

#include <getopt.h>
#include <stddef.h>

#define HEARTHD_DEFAULT_CONFIG "/etc/hearth/hearthd.conf"

/*
 * Finds the file to read: --config PATH / --config=PATH on the command line
 * (NULL for "none"), else HEARTHD_DEFAULT_CONFIG when it exists, else NULL.
 * *explicit_out tells whether it was named (a named file must exist).
 */
const char *config_path(int argc, char **argv, int *explicit_out);

/*
 * Reads path and returns a new argv: argv[0], the file's options, then
 * argv[1..] (the strings of the file are malloc'ed and live until exit).
 * opts is hearthd's getopt table (which keys exist and which take a value).
 * Returns 0, or -1 with a message naming path:line in err.
 */
int config_load(const char *path, const struct option *opts, int argc, char **argv,
		int *argc_out, char ***argv_out, char *err, size_t errlen);

#endif
