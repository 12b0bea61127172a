/* KVM's supported CPUID through a cache file (--cpuid-cache, cpuid.h).
 *
 * KVM_GET_SUPPORTED_CPUID runs the host's CPUID instruction for every
 * leaf, and on a nested host each one is an exit to the outer hypervisor:
 * 0.7-1.0 ms here, a third of a lazy restore. The answer depends on the
 * CPU, the kernel and the KVM module's parameters, so the file is keyed
 * by the /dev/kvm node (device, inode and change time: a reload of the
 * module makes a new node, a reboot a new time) and by uname's release
 * and version. Anything else in the file (a short read, a bad CRC, too
 * many entries, another key) is a miss: KVM answers, and the file is
 * replaced. The file is the host's (root writes it), but it is read like
 * anything else from disk: checked before it is used. */
#include "vmm/cpuid.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/fileutil.h"
#include "common/log.h"

#define CACHE_MAGIC "CLCPUID1"

struct cache_head {
	char magic[8];
	struct cpuid_cache_key key;
	uint32_t nent;
	uint32_t crc; /* CRC-32C of the head (this field 0) and the entries */
};

static uint32_t cache_crc(const struct cache_head *h, const struct kvm_cpuid_entry2 *e)
{
	struct cache_head z = *h;

	z.crc = 0;
	return crc32c(crc32c(0, &z, sizeof(z)), e, h->nent * sizeof(*e));
}

size_t cpuid_cache_size(unsigned nent)
{
	return sizeof(struct cache_head) + nent * sizeof(struct kvm_cpuid_entry2);
}

void cpuid_cache_encode(const struct cpuid_cache_key *key, const struct kvm_cpuid2 *c, void *buf)
{
	struct cache_head h = { .key = *key, .nent = c->nent };

	memcpy(h.magic, CACHE_MAGIC, sizeof(h.magic));
	h.crc = cache_crc(&h, c->entries);
	memcpy(buf, &h, sizeof(h));
	memcpy((char *)buf + sizeof(h), c->entries, c->nent * sizeof(c->entries[0]));
}

int cpuid_cache_decode(const void *buf, size_t len, const struct cpuid_cache_key *key,
		       struct kvm_cpuid2 **out)
{
	struct cache_head h;
	struct kvm_cpuid2 *c;

	if (len < sizeof(h))
		return -EINVAL;
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, CACHE_MAGIC, sizeof(h.magic)) || !h.nent ||
	    h.nent > CPUID_MAX_ENTRIES || len != cpuid_cache_size(h.nent))
		return -EINVAL;
	c = calloc(1, sizeof(*c) + h.nent * sizeof(c->entries[0]));
	if (!c)
		return -ENOMEM;
	memcpy(c->entries, (const char *)buf + sizeof(h), h.nent * sizeof(c->entries[0]));
	if (cache_crc(&h, c->entries) != h.crc) {
		free(c);
		return -EINVAL;
	}
	if (memcmp(&h.key, key, sizeof(*key))) {
		free(c);
		return -ESTALE;
	}
	c->nent = h.nent;
	*out = c;
	return 0;
}

int cpuid_cache_key(int kvm_fd, struct cpuid_cache_key *key)
{
	struct utsname u;
	struct stat st;

	memset(key, 0, sizeof(*key));
	if (fstat(kvm_fd, &st) < 0 || uname(&u) < 0)
		return -errno;
	key->dev = st.st_rdev;
	key->ino = st.st_ino;
	key->ctime_sec = (uint64_t)st.st_ctim.tv_sec;
	key->ctime_nsec = (uint64_t)st.st_ctim.tv_nsec;
	key->kernel = crc32c(crc32c(0, u.release, strlen(u.release)), u.version, strlen(u.version));
	return 0;
}

int cpuid_get_supported_cached(int kvm_fd, const char *path, struct kvm_cpuid2 **out)
{
	struct cpuid_cache_key key;
	char *data = NULL;
	size_t len = 0;
	void *buf;
	int ret;

	if (!path || cpuid_cache_key(kvm_fd, &key))
		return cpuid_get_supported(kvm_fd, out);
	ret = read_file(path, cpuid_cache_size(CPUID_MAX_ENTRIES), &data, &len);
	if (!ret) {
		ret = cpuid_cache_decode(data, len, &key, out);
		free(data);
		if (!ret)
			return 0;
		log_debug("--cpuid-cache %s: %s; asking KVM", path,
			  ret == -ESTALE ? "made for another KVM or kernel" : "not a cache file");
	} else if (ret != -ENOENT) {
		log_debug("--cpuid-cache %s: %s; asking KVM", path, strerror(-ret));
	}
	ret = cpuid_get_supported(kvm_fd, out);
	if (ret || (*out)->nent > CPUID_MAX_ENTRIES)
		return ret;
	len = cpuid_cache_size((*out)->nent);
	buf = malloc(len);
	if (!buf)
		return 0;
	cpuid_cache_encode(&key, *out, buf);
	/* a cache: no fsync, and a failure to write it costs only time */
	ret = atomic_replace_file(path, buf, len, 0644, false);
	if (ret)
		log_debug("--cpuid-cache %s: cannot write it: %s", path, strerror(-ret));
	free(buf);
	return 0;
}
