/* Device workloads: the command-line words that drive virtio devices. */
#include "user.h"

bool workloads_is_option(const char *w, size_t wlen)
{
	return word_is(w, wlen, "acpi=ignore");
}

void workloads_option(struct guest *g, const char *w, size_t wlen)
{
	(void)g;
	(void)w;
	(void)wlen;
}

int workloads_run(struct guest *g, const char *w, size_t wlen, bool *keep_running)
{
	(void)g;
	(void)w;
	(void)wlen;
	(void)keep_running;
	return -2;
}

void workloads_serve(struct guest *g) { (void)g; }
bool workloads_busy(struct guest *g) { (void)g; return false; }
bool workloads_active(struct guest *g) { (void)g; return false; }
