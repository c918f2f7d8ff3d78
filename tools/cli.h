/* cli.h — the subcommands of the dicomfs program (one file each, or a few per file).
 * Each returns the process exit status: 0 success, 1 the operation found problems,
 * 2 usage error or the archive could not be opened. */
#ifndef DICOMFS_CLI_H
#define DICOMFS_CLI_H

#include <signal.h>
#include <stdbool.h>

#include "store.h"

int cmd_ingest(int argc, char **argv);
int cmd_find(int argc, char **argv);
int cmd_metadata(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_changes(int argc, char **argv);
int cmd_fsck(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_tags(int argc, char **argv);
int cmd_operations(int argc, char **argv);
int cmd_token(int argc, char **argv);  /* cmd_token.c */
int cmd_keygen(int argc, char **argv); /* cmd_token.c */

/* Opens ARCHIVE or prints why not (prefixed with the command's name). */
store_t *cli_open(const char *cmd, const char *archive, bool create);
bool cli_wants_help(int argc, char **argv);
/* DICOMFS_STRICT set (and not "0"): answer as the reference service does (serve, find). */
bool cli_strict_env(void);
/* Waits until one of STOP's signals (blocked in every thread) arrives and returns it;
 * meanwhile gives malloc's free memory back to the kernel now and then (idle.c). */
int cli_idle_until_signal(const sigset_t *stop);

#endif
