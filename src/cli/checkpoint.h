/* cloison checkpoint: a VM's checkpoints through cloisond (Hyper-V's
 * Checkpoint-VM, Get-VMSnapshot, Restore-VMSnapshot, Rename-VMSnapshot,
 * Remove-VMSnapshot). */
#ifndef CLOISON_CLI_CHECKPOINT_H
#define CLOISON_CLI_CHECKPOINT_H

#include <stdbool.h>

/* The noun's entry point (main.c's table); `cloison vm checkpoint NAME`
 * calls it as `checkpoint create NAME`. */
int cli_checkpoint(int argc, char **argv);
/* Whether word is one of its verbs (`vm checkpoint VERB NAME ...`). */
bool cli_checkpoint_is_verb(const char *word);

#endif
