/* The cache file of KVM's supported CPUID (src/vmm/cpuid_cache.c): the
 * codec on a made-up table (round trip, every truncation, every flipped
 * byte, another key), then with the real /dev/kvm: the first call writes
 * the file, the second reads KVM's very answer from it, and a damaged or
 * foreign file is replaced by KVM's answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/cpuid.h"

static int kvm_fd = -1;

static struct kvm_cpuid2 *made_up(unsigned n)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

	c->nent = n;
	for (unsigned i = 0; i < n; i++)
		c->entries[i] = (struct kvm_cpuid_entry2){ .function = i, .eax = 0x1000 + i,
							   .ebx = i * 7, .edx = ~i };
	return c;
}

static const struct cpuid_cache_key key = { 1, 2, 3, 4, 5, 0 };

static void test_codec(void **state)
{
	struct kvm_cpuid2 *c = made_up(9), *back = NULL;
	size_t len = cpuid_cache_size(c->nent);
	uint8_t *buf = malloc(len);
	struct cpuid_cache_key other = key;

	(void)state;
	cpuid_cache_encode(&key, c, buf);
	assert_int_equal(cpuid_cache_decode(buf, len, &key, &back), 0);
	assert_int_equal(back->nent, 9);
	assert_memory_equal(back->entries, c->entries, 9 * sizeof(c->entries[0]));
	free(back);
	other.ino++;
	assert_int_equal(cpuid_cache_decode(buf, len, &other, &back), -ESTALE);
	for (size_t n = 0; n < len; n++)
		assert_int_equal(cpuid_cache_decode(buf, n, &key, &back), -EINVAL);
	assert_int_equal(cpuid_cache_decode(buf, len + 1, &key, &back), -EINVAL);
	for (size_t i = 0; i < len; i++) {
		int ret;

		buf[i] ^= 0x20;
		ret = cpuid_cache_decode(buf, len, &key, &back);
		/* a flip in the key is caught by the CRC first */
		assert_int_equal(ret, -EINVAL);
		buf[i] ^= 0x20;
	}
	free(buf);
	free(c);
}

/* nent past CPUID_MAX_ENTRIES is refused before anything is allocated */
static void test_too_many_entries(void **state)
{
	struct kvm_cpuid2 *c = made_up(CPUID_MAX_ENTRIES + 1), *back = NULL;
	size_t len = cpuid_cache_size(c->nent);
	uint8_t *buf = malloc(len);

	(void)state;
	cpuid_cache_encode(&key, c, buf);
	assert_int_equal(cpuid_cache_decode(buf, len, &key, &back), -EINVAL);
	free(buf);
	free(c);
}

static void same_table(const struct kvm_cpuid2 *a, const struct kvm_cpuid2 *b)
{
	assert_int_equal(a->nent, b->nent);
	assert_memory_equal(a->entries, b->entries, a->nent * sizeof(a->entries[0]));
}

static void test_with_kvm(void **state)
{
	char dir[] = "/tmp/test_cpuid_cache.XXXXXX", path[64], cmd[96];
	struct kvm_cpuid2 *kvm = NULL, *first = NULL, *second = NULL, *third = NULL;
	struct cpuid_cache_key k;
	struct stat st;
	uint8_t junk[64];
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/cpuid.cache", dir);
	assert_int_equal(cpuid_get_supported(kvm_fd, &kvm), 0);

	/* no file: KVM's answer, and the file now holds it */
	assert_int_equal(cpuid_get_supported_cached(kvm_fd, path, &first), 0);
	same_table(kvm, first);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((size_t)st.st_size, cpuid_cache_size(kvm->nent));
	/* from the file */
	assert_int_equal(cpuid_get_supported_cached(kvm_fd, path, &second), 0);
	same_table(kvm, second);
	free(first);
	free(second);

	/* garbage: KVM's answer, and the file is good again */
	memset(junk, 0x5a, sizeof(junk));
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	assert_int_equal(cpuid_get_supported_cached(kvm_fd, path, &third), 0);
	same_table(kvm, third);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((size_t)st.st_size, cpuid_cache_size(kvm->nent));
	free(third);

	/* a file made for another /dev/kvm: a made-up table that must not
	 * come back */
	assert_int_equal(cpuid_cache_key(kvm_fd, &k), 0);
	k.ctime_nsec ^= 1;
	{
		struct kvm_cpuid2 *fake = made_up(3);
		size_t len = cpuid_cache_size(3);
		uint8_t *buf = malloc(len);

		cpuid_cache_encode(&k, fake, buf);
		fd = open(path, O_WRONLY | O_TRUNC);
		assert_int_equal(write(fd, buf, len), (ssize_t)len);
		close(fd);
		assert_int_equal(cpuid_get_supported_cached(kvm_fd, path, &third), 0);
		same_table(kvm, third);
		free(third);
		free(buf);
		free(fake);
	}
	/* a path that cannot be written: KVM's answer all the same */
	assert_int_equal(cpuid_get_supported_cached(kvm_fd, "/proc/no/such/cache", &third), 0);
	same_table(kvm, third);
	free(third);
	free(kvm);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(test_codec),
		cmocka_unit_test(test_too_many_entries),
	};
	const struct CMUnitTest with_kvm[] = {
		cmocka_unit_test(test_with_kvm),
	};
	int ret = cmocka_run_group_tests(pure, NULL, NULL);

	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0) {
		/* the facility itself is missing: say so and skip that part */
		printf("SKIP: /dev/kvm: %s\n", strerror(errno));
		return ret ? ret : 77;
	}
	return ret | cmocka_run_group_tests(with_kvm, NULL, NULL);
}
