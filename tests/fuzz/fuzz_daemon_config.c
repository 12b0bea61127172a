/* cloisond's request and configuration parser (src/daemon/config.c):
 * arbitrary bytes as a create body, a set body applied to a valid config,
 * and a stored `<GUID>.json`; whatever is accepted must serialize and parse
 * back to the same JSON. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(struct vm_config *c)
{
	struct vm_config back;
	char err[512];

	guid_generate(&c->id);
	json_t *j = vm_config_to_json(c);
	if (!j)
		abort();
	if (vm_config_from_json(j, &back, err, sizeof(err)))
		abort(); /* what we accept, we must be able to read back */
	json_t *j2 = vm_config_to_json(&back);
	if (!json_equal(j, j2))
		abort();
	json_decref(j);
	json_decref(j2);
	vm_config_clear(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_config c;
	char err[512];
	bool hw;
	json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);

	if (!j)
		return 0;
	memset(&c, 0, sizeof(c));
	if (vm_config_apply_json(&c, j, true, &hw, err, sizeof(err)) == 0)
		roundtrip(&c);
	vm_config_clear(&c);

	memset(&c, 0, sizeof(c));
	json_t *base = json_pack("{s:s, s:s}", "name", "f", "kernel", "/k");
	if (vm_config_apply_json(&c, base, true, &hw, err, sizeof(err)))
		abort();
	json_decref(base);
	if (vm_config_apply_json(&c, j, false, &hw, err, sizeof(err)) == 0)
		roundtrip(&c);
	vm_config_clear(&c);

	if (vm_config_from_json(j, &c, err, sizeof(err)) == 0)
		roundtrip(&c);
	vm_config_clear(&c);
	json_decref(j);
	return 0;
}
