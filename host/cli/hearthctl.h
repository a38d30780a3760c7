/*
 * hearthctl.h - the subcommand table of hearthctl.
 *
 * To add a subcommand: write `int cmd_<name>(int argc, char **argv)` in its
 * own cmd_<name>.c (argv[0] is the subcommand name; return the process exit
 * status: 0 ok, 1 failure, 2 usage error, and for commands that talk to
 * hearthd also 3 and 4, see client.h), declare it here, and add one line to
 * the table in hearthctl.c. Commands that talk to hearthd parse their options
 * with hctl_getopt() (client.h) so that the global options work everywhere.
 */
#ifndef HEARTH_HEARTHCTL_H
#define HEARTH_HEARTHCTL_H

int cmd_build(int argc, char **argv);        /* cmd_build.c */
int cmd_tenant(int argc, char **argv);       /* cmd_tenant.c: tenant create|list|delete|set|limits */
int cmd_key(int argc, char **argv);          /* cmd_tenant.c: key create|list|delete */
int cmd_deploy(int argc, char **argv);       /* cmd_deploy.c */
int cmd_function(int argc, char **argv);     /* cmd_function.c: list, get, delete, config, prewarm */
int cmd_invoke(int argc, char **argv);       /* cmd_invoke.c */
int cmd_event(int argc, char **argv);        /* cmd_invoke.c */
int cmd_logs(int argc, char **argv);         /* cmd_invoke.c */
int cmd_dead_letters(int argc, char **argv); /* cmd_invoke.c */
int cmd_status(int argc, char **argv);       /* cmd_status.c */
int cmd_usage(int argc, char **argv);        /* cmd_usage.c */

#endif
