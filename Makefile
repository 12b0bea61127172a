# The two commands (README): `make run` and `make check`. meson + ninja do
# the real work; this file only wraps them.
.PHONY: all run check clean fuzz

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

clean:
	rm -rf build build-asan build-fuzz
