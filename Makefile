# The two commands (README): `make run` and `make check`. meson + ninja do
# the real work; this file only wraps them.
.PHONY: all run check clean

all:
	@./scripts/deps.sh
	@[ -f build/build.ninja ] || meson setup build
	@ninja -C build

run: all
	@./scripts/run-demo.sh

check:
	@./scripts/check.sh

clean:
	rm -rf build build-asan build-fuzz
