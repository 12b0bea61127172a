/* Where COM1 goes (--serial): stdio, file:PATH, unix:PATH, pty, none. The
 * back end receives the UART's output on vCPU threads and feeds host input
 * to the UART from the event loop. */
#ifndef CLOISON_VMM_CHARDEV_H
#define CLOISON_VMM_CHARDEV_H

#include <stddef.h>

struct vm;
struct chardev;

/* Checks a --serial value without opening anything: 0 or -EINVAL with err
 * saying what is expected. */
int chardev_spec_check(const char *spec, char *err, size_t errlen);

/* Opens the back end named by spec and connects it to the VM's COM1.
 * 0 or -errno with err naming the path and cause. */
int chardev_create(const char *spec, struct vm *vm, struct chardev **out, char *err,
		   size_t errlen);
/* Stops input, restores the terminal, closes everything. NULL is fine. */
void chardev_destroy(struct chardev *cd);

#endif
