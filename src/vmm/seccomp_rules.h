/* The worker's allow-lists as libseccomp rules: used at build time only,
 * by seccomp_gen.c, which compiles each to BPF (seccomp.h has the lists'
 * runtime side). */
#ifndef CLOISON_VMM_SECCOMP_RULES_H
#define CLOISON_VMM_SECCOMP_RULES_H

#include <seccomp.h>
#include <stdbool.h>

#include "vmm/seccomp.h"

/* Builds the filter of a thread kind (base: the union every thread gets
 * first) into a libseccomp context. state_writes: the jail has a
 * --jail-dir, and the event loop may create, rename and remove files
 * there. 0 or a negative errno from libseccomp. */
int seccomp_rules_build(bool base, enum seccomp_thread_kind kind, bool state_writes,
			scmp_filter_ctx *out);

#endif
