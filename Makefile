# The two commands (README): `make run` and `make check`. meson + ninja do
# the real work; this file only wraps them.
.PHONY: all run check clean fuzz trials

all:
	@./scripts/deps.sh
	@[ -f build/build.ninja ] || meson setup build
	@ninja -C build

run: all
	@./scripts/run-demo.sh

check:
	@./scripts/check.sh

# Every libFuzzer target for FUZZ_SECONDS each (default 300; make check
# runs them for 20 or 10 s): tests/fuzz/run.sh, docs/fuzzing.md.
fuzz:
	@./tests/fuzz/run.sh

# The long crash trials (docs/disk.md): 30 SIGKILLs per format of a worker
# whose guest writes records (tests/system/test_disk_crash_guest.py; make
# check runs 5) and 30 of the library's own writer (test_disk_crash.py);
# 30 kills of cloisond per checkpoint operation (test_checkpoint_crash.py;
# make check runs 4; docs/state.md).
trials:
	@ninja -C build
	@CLOISON_BUILD="$(CURDIR)/build" CLOISON_CRASH_GUEST_TRIALS=30 CLOISON_CRASH_TRIALS=30 \
		CLOISON_CHECKPOINT_TRIALS=30 /usr/bin/python3 -m pytest -p no:cacheprovider -q -s \
		tests/system/test_disk_crash_guest.py tests/system/test_disk_crash.py \
		tests/system/test_checkpoint_crash.py

clean:
	rm -rf build build-asan build-fuzz
