/* Export and import of a VM (Hyper-V's Export-VM and Import-VM), as jobs.
 *
 * An export writes DIR/NAME/ in Hyper-V's layout:
 *   Virtual Machines/<GUID>.json   the configuration (disk paths point here)
 *   Virtual Machines/<GUID>/       the saved state of a saved VM
 *   Virtual Hard Disks/            every disk with its whole differencing
 *                                  chain, holes kept, parents re-pointed
 *   Snapshots/                     checkpoints.json (the tree) and each
 *                                  checkpoint's folder, paths re-pointed
 * It is written as DIR/.NAME.export-<id> and renamed at the end: a crash
 * leaves no half export (the job's recover removes the temporary folder).
 * A running VM is exported from a temporary checkpoint (checkpoint.h),
 * taken and removed by the job.
 *
 * An import reads such a folder (or any folder with that layout) in one of
 * Hyper-V's three ways: register (files stay, same id), restore (files
 * copied, same id) or copy (files copied, new id and MAC addresses). The
 * VM's folder is made as <state>/.NAME.import-<id> and renamed into place,
 * then added to the inventory: a crash leaves nothing half imported. */
#ifndef CLOISON_DAEMON_EXPORT_H
#define CLOISON_DAEMON_EXPORT_H

#include <jansson.h>
#include <stdbool.h>

#include "daemon/daemon.h"
#include "daemon/job.h"

/* Checks an export of vm from an API body {"dir", "wait"} and returns the
 * job's args (new ref), or NULL with *code (-errno) and err filled; *wait
 * gets the body's "wait" (default true). Nothing is written. */
json_t *export_plan(struct vm *vm, json_t *body, bool *wait, int *code, char *err,
		    size_t errlen);

/* Checks an import from an API body {"path", "mode", "name", "vhd_dir",
 * "wait"}: the configuration is parsed with the daemon's own parser, the
 * id and name must be free, every disk and parent must be there. Returns
 * the job's args (new ref) and in *vm an unlisted VM (one reference) the
 * job runs on, or NULL with *code and err filled. Nothing is written. */
json_t *import_plan(struct daemon *d, json_t *body, bool *wait, struct vm **vm, int *code,
		    char *err, size_t errlen);

extern const struct job_kind job_kind_export;
extern const struct job_kind job_kind_import;

#endif
