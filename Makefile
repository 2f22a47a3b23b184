# utgolf: make | make test | make test-asan | make run | make bench | make deps | make stats | make clean
CC      ?= cc
CXX     ?= c++
# -ffp-contract=fast: ISO C mode (-std=c99) otherwise forbids fusing a*b+c into one FMA
OPT     ?= -O3 -march=native -ffp-contract=fast
WARN    := -Wall -Wextra -Wpointer-arith -Werror
# the artifact's brotli binding (UTG_USE_BROTLI; Debian's libbrotli-dev); the header itself needs nothing
CFLAGS  += -std=c99 $(OPT) $(WARN) -fopenmp -DUTG_USE_BROTLI
LDLIBS  += -lbrotlienc -lbrotlidec -lm
BUILD   ?= build
PYTHON  ?= /usr/bin/python3

HDR     := utgolf.h
TESTS   := $(BUILD)/test_ops $(BUILD)/test_ops_portable $(BUILD)/test_model $(BUILD)/test_io \
           $(BUILD)/test_optim $(BUILD)/test_tokenizer $(BUILD)/test_loader $(BUILD)/test_plan $(BUILD)/test_quant $(BUILD)/test_artifact $(BUILD)/test_features \
           $(BUILD)/test_artifact_mut $(BUILD)/test_plan_random $(BUILD)/fuzz_replay $(BUILD)/test_fenced \
           $(BUILD)/test_storage
TOOLS   := $(BUILD)/utg-grad $(BUILD)/utg-shards $(BUILD)/mk_artifact $(BUILD)/utg-inspect $(BUILD)/libiofault.so
PROGS   := $(TESTS) $(TOOLS) $(BUILD)/minimal $(BUILD)/train $(BUILD)/bench_step \
           $(BUILD)/bench_depth
# the CUDA emulator's suite (tests/cuda/): built only where the CUDA headers are installed
CUDA_HOME ?= /usr/local/cuda
CUDA_EMU  := $(if $(wildcard $(CUDA_HOME)/include/cuda_runtime.h),$(BUILD)/test_cuda_emu)
PROGS   += $(CUDA_EMU)
# the default run (make run): its knobs live in one file
RUN_CONFIG ?= data/austen/run.env
RUN_OUT    ?= runs/default

.PHONY: all test test-asan compile-check run bench deps clean stats
all: $(PROGS)

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/test_%: tests/test_%.c $(HDR) tests/test.h tests/gradcheck.h tests/mdl.h tests/pbw.h tests/spm_expect.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/test_fenced: tests/fenced_backend.h # built by the rule above, with the wrapper it includes
# the same op tests on the plain-C paths (no GCC vector extensions)
$(BUILD)/test_ops_portable: tests/test_ops.c $(HDR) tests/test.h tests/gradcheck.h tests/mdl.h | $(BUILD)
	$(CC) $(CFLAGS) -DUTG_NO_VECTOR_EXT -o $@ $< $(LDLIBS)
# a .cu file compiled as C++ against the emulator; no $(OPT): ASan would need fiber annotations
$(BUILD)/test_cuda_emu: tests/cuda/test_emu.cu tests/cuda/emu.h tests/cuda/compat.h tests/test.h | $(BUILD)
	$(CXX) -std=c++17 -O2 -fopenmp $(WARN) -x c++ -I$(CUDA_HOME)/include -include tests/cuda/compat.h -o $@ $<
$(BUILD)/utg-grad: tools/utg-grad.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/utg-shards: tools/utg-shards.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/utg-inspect: tools/utg-inspect.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/mk_artifact: tests/mk_artifact.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)
# the fault-injection shim of tests/test_faults.sh (LD_PRELOAD; no sanitizers: it is loaded first)
$(BUILD)/libiofault.so: tests/iofault.c | $(BUILD)
	$(CC) -std=c99 -shared -fPIC -O1 $(WARN) -o $@ $< -ldl
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
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer" test

# libFuzzer (clang, ASan + UBSan), not part of make test: one target per reader of outside bytes,
# tests/fuzz_<target>.c, run one after another for FUZZ_SECONDS each (FUZZ_TARGETS picks some):
#   artifact     utg_artifact_parse (whole files, or payloads that the target wraps in a fresh envelope)
#   spm          utg_tokenizer_load_spm, then the byte tables and bpb
#   safetensors  utg_model_load_safetensors into a tiny model, save and load again, one forward
#   shard        utg_shard_parse, every token, utg_shard_write again
#   checkpoint   utg_checkpoint_load into three tiny training setups (whole files, or bodies that the
#                target gives a size and CRC), save and load again, one forward, one batch
#   config       utg_config_parse_text, resolve, validate, and the utg_config_format round trip
# Every failed call must leave a message and every success its invariants (an abort otherwise).
# Corpora in $(FUZZ_CORPUS)/<target>: the seeds (valid files: fuzz_replay --seeds writes them with the
# library's writers; artifact: mk_artifact in several configs, plus the stored files' payloads, and
# test_artifact_mut's seeds; config: also recipes/*.env and data/austen/run.env), tests/corpus/<target>,
# and what the fuzzer adds. Crashes land in $(BUILD)/fuzz-crashes/<target>/; a crash in one target
# does not stop the others, and make fuzz fails at the end naming them. An input that runs 30 s is a
# crash too (-timeout=30).
# tests/corpus/<target> is the regression corpus: fuzz_replay (in make test) feeds it to the same
# targets built with $(CC) and CFLAGS.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 600
FUZZ_FLAGS   ?=
FUZZ_CORPUS  ?= $(BUILD)/fuzz-corpus
FUZZ_TARGETS ?= artifact spm safetensors shard checkpoint config
FUZZ_ALL     := artifact spm safetensors shard checkpoint config
FUZZ_SEEDS   := "MODEL_DIM=16 NUM_HEADS=2 NUM_KV_HEADS=1 VOCAB_SIZE=16 NUM_LAYERS=1 QUANT_PASSTHROUGH_NUMEL=64" \
                "MODEL_DIM=32 VOCAB_SIZE=32 QUANT_PASSTHROUGH_NUMEL=256 MATRIX_BITS=6" \
                "MODEL_DIM=32 VOCAB_SIZE=32 QUANT_PASSTHROUGH_NUMEL=256 TIE_EMBEDDINGS=0 MATRIX_BITS=4 EMBED_BITS=5" \
                "MODEL_DIM=32 VOCAB_SIZE=32 QUANT_PASSTHROUGH_NUMEL=256 NUM_LOOPS=1 LOOP_START=0 LOOP_END=1" \
                "NUM_LAYERS=2"
.PHONY: fuzz
$(BUILD)/fuzz_%: tests/fuzz_%.c tests/fuzz.h tests/pbw.h tests/spm_expect.h $(HDR) | $(BUILD)
	@which $(FUZZ_CC) >/dev/null || { echo "make fuzz needs clang with libFuzzer (Debian: clang)"; exit 1; }
	$(FUZZ_CC) -std=c99 -g -O1 $(WARN) -DUTG_USE_BROTLI -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    -fno-omit-frame-pointer -o $@ $< -lbrotlienc -lbrotlidec -lm
# the replay: every target compiled with UTG_STATIC (a private copy of the library each) and its entry
# point renamed utg_fuzz_<target>
$(BUILD)/fuzz-replay/%.o: tests/fuzz_%.c tests/fuzz.h tests/pbw.h tests/spm_expect.h $(HDR)
	@mkdir -p $(BUILD)/fuzz-replay
	$(CC) $(CFLAGS) -DUTG_STATIC -DUTG_FUZZ_REPLAY -DLLVMFuzzerTestOneInput=utg_fuzz_$* -c -o $@ $<
$(BUILD)/fuzz_replay: tests/fuzz_replay.c $(FUZZ_ALL:%=$(BUILD)/fuzz-replay/%.o) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
fuzz: $(FUZZ_TARGETS:%=$(BUILD)/fuzz_%) $(BUILD)/fuzz_replay \
      $(if $(filter artifact,$(FUZZ_TARGETS)),$(BUILD)/mk_artifact $(BUILD)/test_artifact_mut)
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_CORPUS)/$$t $(BUILD)/fuzz-crashes/$$t; \
	    if [ -d tests/corpus/$$t ]; then cp tests/corpus/$$t/* $(FUZZ_CORPUS)/$$t/; fi; \
	    if [ $$t = artifact ]; then \
	        ./$(BUILD)/test_artifact_mut --seeds $(FUZZ_CORPUS)/artifact; \
	        i=0; for cfg in $(FUZZ_SEEDS); do i=$$((i + 1)); \
	            ./$(BUILD)/mk_artifact $(FUZZ_CORPUS)/artifact/mk$$i-stored.utga COMPRESSOR=stored $$cfg; \
	            ./$(BUILD)/mk_artifact $(FUZZ_CORPUS)/artifact/mk$$i-brotli.utga COMPRESSOR=brotli $$cfg; \
	            tail -c +21 $(FUZZ_CORPUS)/artifact/mk$$i-stored.utga > $(FUZZ_CORPUS)/artifact/mk$$i.payload; done; \
	    else \
	        ./$(BUILD)/fuzz_replay --seeds $(FUZZ_CORPUS) $$t; \
	    fi; \
	    if [ $$t = config ]; then cp recipes/*.env data/austen/run.env $(FUZZ_CORPUS)/config/; fi; \
	done
	@failed=; for t in $(FUZZ_TARGETS); do \
	    echo "== fuzz_$$t for $(FUZZ_SECONDS) s, corpus $(FUZZ_CORPUS)/$$t"; \
	    ./$(BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=30 -print_final_stats=1 \
	        -artifact_prefix=$(BUILD)/fuzz-crashes/$$t/ $(FUZZ_FLAGS) $(FUZZ_CORPUS)/$$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "make fuzz: crashes in$$failed (inputs in $(BUILD)/fuzz-crashes/)"; exit 1; fi

# Train the default model on the embedded Austen corpus (about 5 minutes on 2 cores), then print
# val_loss, val_bpb, tokens/s and wall time. Everything lands in $(RUN_OUT)/.
run: $(BUILD)/train
	./$(BUILD)/train --config $(RUN_CONFIG) --out $(RUN_OUT) --force $(ARGS)

# utgolf's speed as ratios against peers measured in the same run (OpenBLAS, PyTorch; bench/run.sh
# installs them when missing). BENCH_ARGS: --quick, --no-install, --skip-torch, --skip-depth.
bench: $(BUILD)/bench_step $(BUILD)/bench_depth $(BUILD)/bench_matmul $(BUILD)/bench_train
	BUILD=$(BUILD) PYTHON=$(PYTHON) sh bench/run.sh $(BENCH_ARGS)
$(BUILD)/bench_matmul: bench/bench_matmul.c bench/peak.h $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS) -ldl
$(BUILD)/bench_train: bench/bench_train.c bench/peak.h $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# What the build and every test suite need, from apt (run as root or through sudo): gcc, make,
# libbrotli-dev, and PyTorch and SentencePiece for the parity suites that make test otherwise skips.
# The package list is in .ci/deps, which .ci/run also runs.
deps:
	sh .ci/deps

# comment share, function lengths and long lines of the C files, held to the codebase's targets
stats:
	$(PYTHON) tools/codestats.py --check

clean:
	rm -rf build build-asan
