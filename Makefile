# utgolf: make | make test | make test-asan | make run | make bench | make clean
CC      ?= cc
CXX     ?= c++
# -ffp-contract=fast: ISO C mode (-std=c99) otherwise forbids fusing a*b+c into one FMA
OPT     ?= -O3 -march=native -ffp-contract=fast
WARN    := -Wall -Wextra -Werror
# the artifact's brotli binding (UTG_USE_BROTLI; Debian's libbrotli-dev); the header itself needs nothing
CFLAGS  += -std=c99 $(OPT) $(WARN) -fopenmp -DUTG_USE_BROTLI
LDLIBS  += -lbrotlienc -lbrotlidec -lm
BUILD   ?= build
PYTHON  ?= /usr/bin/python3

HDR     := utgolf.h
TESTS   := $(BUILD)/test_ops $(BUILD)/test_ops_portable $(BUILD)/test_model $(BUILD)/test_io \
           $(BUILD)/test_optim $(BUILD)/test_tokenizer $(BUILD)/test_loader $(BUILD)/test_plan $(BUILD)/test_quant $(BUILD)/test_artifact
TOOLS   := $(BUILD)/utg-grad $(BUILD)/utg-shards $(BUILD)/mk_artifact
PROGS   := $(TESTS) $(TOOLS) $(BUILD)/minimal $(BUILD)/train $(BUILD)/bench_step \
           $(BUILD)/bench_depth
# the default run (make run): its knobs live in one file
RUN_CONFIG ?= data/austen/run.env
RUN_OUT    ?= runs/default

.PHONY: all test test-asan compile-check run bench clean
all: $(PROGS)

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/test_%: tests/test_%.c $(HDR) tests/test.h tests/gradcheck.h tests/mdl.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
# the same op tests on the plain-C paths (no GCC vector extensions)
$(BUILD)/test_ops_portable: tests/test_ops.c $(HDR) tests/test.h tests/gradcheck.h tests/mdl.h | $(BUILD)
	$(CC) $(CFLAGS) -DUTG_NO_VECTOR_EXT -o $@ $< $(LDLIBS)
$(BUILD)/utg-grad: tools/utg-grad.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/utg-shards: tools/utg-shards.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/mk_artifact: tests/mk_artifact.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/train: examples/train.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/minimal: examples/minimal.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/bench_step: bench/bench_step.c bench/bench.h $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/bench_depth: bench/bench_depth.c bench/bench.h $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# The header alone, warning-free: C99 and C++17, pedantic, with and without OpenMP, static, no stdio.
compile-check: | $(BUILD)
	$(CC) -std=c99 -pedantic $(WARN) -fopenmp -c tests/compile_only.c -o $(BUILD)/cc_c99.o
	$(CC) -std=c99 -pedantic $(WARN) -DUTG_STATIC -DUTG_NO_STDIO -c tests/compile_only.c -o $(BUILD)/cc_c99s.o
	$(CXX) -std=c++17 -pedantic $(WARN) -fopenmp -x c++ -c tests/compile_only.c -o $(BUILD)/cc_cxx17.o
	$(CXX) -std=c++17 -pedantic $(WARN) -DUTG_STATIC -x c++ -c tests/compile_only.c -o $(BUILD)/cc_cxx17s.o
	$(CC) -std=c99 -pedantic $(WARN) -DUTG_USE_BROTLI -c tests/compile_only.c -o $(BUILD)/cc_c99b.o
	$(CXX) -std=c++17 -pedantic $(WARN) -DUTG_USE_BROTLI -x c++ -c tests/compile_only.c -o $(BUILD)/cc_cxx17b.o
	@echo "compile-check: C99 and C++17 clean"

test: all
	BUILD=$(BUILD) PYTHON=$(PYTHON) CC="$(CC)" CXX="$(CXX)" sh tests/run.sh

test-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test

# Train the default model on the embedded Austen corpus (about 5 minutes on 2 cores), then print
# val_loss, val_bpb, tokens/s and wall time. Everything lands in $(RUN_OUT)/.
run: $(BUILD)/train
	./$(BUILD)/train --config $(RUN_CONFIG) --out $(RUN_OUT) $(ARGS)

bench: $(BUILD)/bench_step $(BUILD)/bench_depth
	./$(BUILD)/bench_step
	./$(BUILD)/bench_depth

clean:
	rm -rf build build-asan
