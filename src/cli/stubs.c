/* Placeholders while a noun's file is missing from the build (see
 * meson.build); each says plainly that the noun is not available. */
#include "cli/cli.h"

#define STUB(fn, noun)                                                               \
	int fn(int argc, char **argv)                                                \
	{                                                                            \
		(void)argc;                                                          \
		(void)argv;                                                          \
		return cli_error(CLI_EXIT_ERROR, "'cloison " noun "' is not built"); \
	}

#ifdef CLI_STUB_DISK
STUB(cli_disk, "disk")
#endif
#ifdef CLI_STUB_VM
STUB(cli_vm, "vm")
#endif
#ifdef CLI_STUB_HOST
STUB(cli_host, "host")
#endif

/* ISO C forbids an empty translation unit. */
typedef int cli_stubs_nonempty;
