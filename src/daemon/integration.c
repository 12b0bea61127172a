/* The integration services' names and a VM's integration settings in its
 * configuration (agent.h): apart from agent.c so that the configuration's
 * parser (and its fuzz target) does not pull in the agent's channel. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon/agent.h"

static const char *const service_names[AGENT_SVC_COUNT] = {
	"shutdown", "heartbeat", "timesync", "kvp", "copy", "backup",
};

const char *agent_service_name(enum agent_service s)
{
	return s < AGENT_SVC_COUNT ? service_names[s] : "?";
}

json_t *agent_integration_json(uint32_t mask)
{
	json_t *j = json_object();

	for (unsigned i = 0; i < AGENT_SVC_COUNT; i++)
		json_object_set_new(j, service_names[i], json_boolean(mask & (1u << i)));
	return j;
}

int agent_integration_parse(json_t *v, uint32_t *mask, char *err, size_t errlen)
{
	uint32_t m = *mask;
	const char *key;
	json_t *b;

	if (!json_is_object(v)) {
		snprintf(err, errlen, "field 'integration' must be an object of booleans "
			 "(shutdown, heartbeat, timesync, kvp, copy, backup)");
		return -EINVAL;
	}
	json_object_foreach(v, key, b) {
		unsigned i;

		for (i = 0; i < AGENT_SVC_COUNT && strcmp(key, service_names[i]); i++)
			;
		if (i == AGENT_SVC_COUNT) {
			snprintf(err, errlen, "integration: unknown service '%s' (known: shutdown, "
				 "heartbeat, timesync, kvp, copy, backup)", key);
			return -EINVAL;
		}
		if (!json_is_boolean(b)) {
			snprintf(err, errlen, "integration: '%s' must be true or false", key);
			return -EINVAL;
		}
		m = json_is_true(b) ? m | (1u << i) : m & ~(1u << i);
	}
	*mask = m;
	return 0;
}

