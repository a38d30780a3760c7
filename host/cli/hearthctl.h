/*
 * hearthctl.h - the subcommand table of hearthctl.
 *
 * To add a subcommand: write `int cmd_<name>(int argc, char **argv)` in its
 * own cmd_<name>.c (argv[0] is the subcommand name; return the process exit
 * status: 0 ok, 1 failure, 2 usage error), declare it here, and add one line
 * to the table in hearthctl.c.
 */
#ifndef HEARTH_HEARTHCTL_H
#define HEARTH_HEARTHCTL_H

int cmd_build(int argc, char **argv);

#endif
