/* virtio-console with one port; host side on a unix socket or a file. */
#ifndef CLOISON_VMM_VIRTIO_CONSOLE_H
#define CLOISON_VMM_VIRTIO_CONSOLE_H

#include <stddef.h>

struct vm;
struct virtio_dev;

enum console_kind { CONSOLE_UNIX, CONSOLE_FILE };

struct console_spec {
	enum console_kind kind;
	char path[108];
};

/* Parses "unix:PATH" or "file:PATH". 0 or -EINVAL with err. */
int console_spec_parse(const char *spec, struct console_spec *out, char *err, size_t errlen);

/* Opens the host side and attaches a virtio-console function. 0 or
 * -errno with err. */
int virtio_console_create(struct vm *vm, const struct console_spec *spec, unsigned index,
			  struct virtio_dev **out, char *err, size_t errlen);

#endif
