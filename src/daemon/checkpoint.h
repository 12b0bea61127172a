/* Checkpoints, in Hyper-V's terms (HYPERV.md §G): a point-in-time copy of
 * a VM made of its disks (the running disk becomes a read-only parent and
 * the VM goes on in a new differencing child, `<disk>_<GUID>.avhdx`, or
 * .avhd for VHD), a copy of its configuration, and for a standard
 * checkpoint its saved state (memory and devices).
 *
 *   <vm>/Snapshots/checkpoints.json   the tree, the "now" position and the
 *                                     VM's checkpoint settings
 *   <folder>/<id>/config.json         the configuration when it was taken
 *   <folder>/<id>/state.bin, memory-* a standard checkpoint's saved state
 *
 * <folder> is the VM's checkpoint folder setting (default <vm>/Snapshots).
 * Every change of the tree is one atomic replace of checkpoints.json,
 * made before the VM's configuration follows it; create, apply and remove
 * run as jobs (job.h) whose recover finishes or rolls back what a crash
 * of cloisond left. */
#ifndef CLOISON_DAEMON_CHECKPOINT_H
#define CLOISON_DAEMON_CHECKPOINT_H

#include <jansson.h>

#include "daemon/daemon.h"
#include "daemon/job.h"

/* Plans a job on vm from an API body and returns its args (new ref) for
 * job_start, or NULL with err filled and *code the -errno. The plan names
 * every file the job will make, so a recovery knows what to remove. */
json_t *checkpoint_plan_create(struct vm *vm, json_t *body, int *code, char *err, size_t errlen);
/* The spare children a live merge of vm's disks would make (one per disk,
 * null for a read-only or raw one): in a remove plan as "spares"; a plan
 * made before a temporary checkpoint keeps them for its removal. */
json_t *checkpoint_spares(struct vm *vm);
json_t *checkpoint_plan_apply(struct vm *vm, const char *cp, int *code, char *err, size_t errlen);
json_t *checkpoint_plan_remove(struct vm *vm, const char *cp, bool subtree, int *code, char *err,
			       size_t errlen);

/* What the jobs run, for a job of another kind (an export of a running VM
 * takes a temporary checkpoint): create gives the job's result in *result
 * (new ref); remove fills note. job may be NULL for remove (no progress,
 * no cancel). 0 or -errno with err. */
int checkpoint_create_now(struct job *job, struct vm *vm, json_t *plan, json_t **result,
			  char *err, size_t errlen);
int checkpoint_remove_now(struct job *job, struct vm *vm, json_t *plan, char *note, size_t len,
			  char *err, size_t errlen);
/* At a start after a kill -9 of cloisond during a job that took a
 * temporary checkpoint with plan (record: that job's, for the VM): the
 * half-made checkpoint is rolled back, a made one removed unless the VM
 * runs (then note says how). note says what was done. */
void checkpoint_recover_temporary(struct daemon *d, json_t *record, json_t *plan, char *note,
				  size_t len);
/* Checkpoint id of vm as in the tree (new ref), or NULL with err. */
json_t *checkpoint_get(struct vm *vm, const char *id, char *err, size_t errlen);

/* GET /v1/vms/{vm}/checkpoints: {"settings":..., "current": id|null,
 * "checkpoints": [...]} (new ref), or NULL with err. */
json_t *checkpoint_list(struct vm *vm, char *err, size_t errlen);
/* Renames checkpoint cp (name or id) of vm. 0 or -errno with err. */
int checkpoint_rename(struct vm *vm, const char *cp, const char *name, char *err, size_t errlen);
/* Applies {"checkpoint_type": ..., "folder": ...} to vm's settings. 0 or
 * -errno with err. */
int checkpoint_settings(struct vm *vm, json_t *body, char *err, size_t errlen);

extern const struct job_kind job_kind_checkpoint_create;
extern const struct job_kind job_kind_checkpoint_apply;
extern const struct job_kind job_kind_checkpoint_remove;

#endif
