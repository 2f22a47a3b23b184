/* utgolf.h v0.1.0 - train, compress and evaluate tiny depth-recurrent language models.
   Single-header C99 library (stb style). No warranty; licence at the end of the file.

   QUICK START
       #define UTGOLF_IMPLEMENTATION      // in exactly one C or C++ file
       #include "utgolf.h"
       utg_model *m; utg_model_desc d = {0}; utg_model_create(&d, &m);   // baseline GPT, CPU

   WHAT IT IS
       Everything a trainer needs for Parameter Golf's tiny depth-recurrent language models, in one
       file: the knob table (train_gpt.py's environment names), the model with its depth plan (every
       recurrence form of the records), the backend table with its CPU reference implementation,
       Muon and Adam(W) with their schedules, EMA and SWA, token shards and loaders, resumable
       checkpoints, the SentencePiece reader and the exact bits-per-byte, quantizers with GPTQ, and
       the compressed UTGA artifact. A zeroed utg_config is the `train_gpt.py` baseline (9 blocks,
       512 wide, 8/4 heads, vocab 1024). docs/DESIGN.md explains the architecture and how to change
       it; docs/FORMAT.md specifies the artifact and its loader checklist.

   THREAT MODEL
       Bytes from outside (artifacts, checkpoints, safetensors files, token shards, SentencePiece
       models, config text) are hostile: every parser works on memory through a bounds-checked
       cursor, checks every size computation for overflow, allocates nothing from metadata before
       checking it against sizes the file bounds, and answers bad input with a utg_result and a
       message; it never aborts or reads out of bounds (the fuzz targets in tests/ hold it to that).
       Configuration values are validated before a model is built. The backend ops trust their
       arguments (they are called by the model, not by users).

   CONFIG MACROS (define before including, in the file that defines UTGOLF_IMPLEMENTATION unless
   noted)
       UTG_STATIC              every public function static (define wherever the header is included)
       UTG_MALLOC(sz, user)    default allocator; define UTG_MALLOC and UTG_FREE together
       UTG_FREE(p, user)
       UTG_ASSERT(x)           programmer-error checks (default: assert)
       UTG_NO_STDIO            drop the file helpers (utg_read_file, *_file functions, env parsing)
       UTG_USER_CONFIG         a header included first, for all of the above

   TABLE OF CONTENTS (grep for the markers; the file reads top-down: API, model, training, formats,
   then the CPU backend behind the backend table)
       // >>types          results, logging, allocator, message buffer
       // >>config         the knob table: every knob, its Parameter Golf name, default and doc
       // >>backend_api    utg_backend: the op-level function table a CPU or CUDA backend fills
       // >>model          parameters (arena + tensor table), depth plan, forward and backward
       // >>optim          Muon, Adam(W), clipping, LR and momentum schedules, EMA and SWA
       // >>safetensors    import / export of the parameter arena and gradients
       // >>data           Parameter Golf token shards
       // >>loader         datasets (shard globs), the sequential and shuffled training loaders
       // >>checkpoint     the whole training state in one file, resumable bit for bit
       // >>tokenizer      SentencePiece .model reader, byte260, the byte tables and fp64 bpb
       // >>quant          per-row intN quantizers: max, percentile, SDClip, GPTQ-lite search; fp16
       // >>artifact       UTGA v1: codecs, writer, parser; Hessians, the quantization plan, export, QAT
       // >>public         misc public helpers
       // >>impl_util      (implementation) allocation, messages, RNG, half floats
       // >>impl_config
       // >>impl_model
       // >>impl_optim
       // >>impl_safetensors
       // >>impl_data
       // >>impl_loader
       // >>impl_checkpoint
       // >>impl_tokenizer
       // >>impl_quant
       // >>impl_artifact
       // >>impl_public
       // >>backend_cpu    the CPU reference backend: packed gemm, blocked attention, OpenMP
           // >>cpu_memory       state, aligned buffers, scratch, fill, copy, one-process collectives
           // >>cpu_gemm         fp32 microkernels (portable, AVX-512, AVX2), transposing packers
           // >>cpu_bf16         bf16 rounding, bf16-pair packing, the avx512_bf16 microkernel
           // >>cpu_gemm_driver  panel packing, slivers, symmetric products, k split, the driver
           // >>cpu_rows         embedding, libm-free e^x, fixed-order row max, sum and dot
           // >>cpu_norm_rope    RMSNorm, fused q/k norm + RoPE + q_gain
           // >>cpu_attention    causal GQA attention, flash style, forward and backward
           // >>cpu_elementwise  relu^2, XSA, gated skip, output gate, SmearGate, channel mix
           // >>cpu_xent         libm-free tanh, softcapped cross-entropy and its gradient
           // >>cpu_optim        axpby, Muon momentum, reductions, row normalize, Adam(W), fake quant
           // >>cpu_storage      bf16 activations: operands staged around the fp32 kernels
           // >>cpu_create       synchronize, destroy, the op table

   BUILD
       C:     cc -std=c99 -O3 -march=native -ffp-contract=fast -fopenmp my.c -lm
              (-ffp-contract=fast lets ISO C mode fuse multiply-adds; UTG_NO_VECTOR_EXT selects the
              plain-C kernels instead of GCC/Clang vector extensions; UTG_USE_BROTLI with
              -lbrotlienc -lbrotlidec adds the brotli codec of the artifact)
       GPU:   the backend table (>>backend_api) is where a CUDA backend plugs in; this version
              ships the CPU backend only.

   ERRORS AND THREADS
       Fallible calls return utg_result (0 = UTG_OK, negative = error); utg_result_string() names
       the code and utg_model_message() holds the details of the last failure of that model. Calls
       on one model are not thread-safe; distinct models are independent. The CPU backend uses
       OpenMP inside each op. Same seed and same thread count give the same bits; the CPU ops are
       written so that results do not depend on the thread count at all.

   NUMERICS
       Master weights, optimizer state and every sum are fp32. Activations and their gradients are
       stored in ACTIVATION_DTYPE (auto: bf16 on a GPU, fp32 on the CPU backend), with fp32
       arithmetic either way. MATMUL_BF16=1 rounds the model's matmul inputs to bf16
       (train_gpt.py's autocast) and MUON_NS_BF16 (on by default) does the same in Newton-Schulz,
       as train_gpt.py does; both sum in fp32. With both off and fp32 activations the losses match
       PyTorch run in fp32 (tests/test_torch_parity.py checks this).

   CHANGES
       CHANGELOG.md lists what each version adds, by capability.
*/
#ifndef UTGOLF_H
#define UTGOLF_H

#ifdef UTG_USER_CONFIG
#include UTG_USER_CONFIG
#endif

#include <stddef.h>
#include <stdint.h>

#define UTG_VERSION_MAJOR 0
#define UTG_VERSION_MINOR 1
#define UTG_VERSION_PATCH 0
#define UTG_VERSION_STRING "0.1.0"

#ifndef UTGDEF
#ifdef UTG_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define UTGDEF static __attribute__((unused)) /* a program uses only part of the API */
#else
#define UTGDEF static
#endif
#else
#define UTGDEF extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------
// >>types
   ------------------------------------------------------------------------------------------------ */

/* Result codes: one X-macro list keeps the enum and the strings together. UTG_OK is 0 and every
   error is negative, so `r != UTG_OK` (or `r < 0`) tests for failure. The code says what kind of
   failure; the details (which file, tensor, knob or byte) go to a message: the model's
   (utg_model_message) for calls that take a model, optimizer, QAT or Hessian object, the writer's
   for the artifact writer, and the caller's utg_msg for the rest. */
#define UTG_RESULTS(X)                                                   \
    X(UTG_OK, 0, "ok")                                                   \
    X(UTG_ERR_INVALID, -1, "invalid argument")                           \
    X(UTG_ERR_CONFIG, -2, "invalid configuration")                       \
    X(UTG_ERR_NOMEM, -3, "out of memory")                                \
    X(UTG_ERR_IO, -4, "i/o error")                                       \
    X(UTG_ERR_FORMAT, -5, "malformed input")                             \
    X(UTG_ERR_UNSUPPORTED, -6, "unsupported")                            \
    X(UTG_ERR_MISMATCH, -7, "input does not match the model")            \
    X(UTG_ERR_BACKEND, -8, "backend error")

typedef enum utg_result {
#define UTG__RESULT_ENUM(name, value, text) name = value,
    UTG_RESULTS(UTG__RESULT_ENUM)
#undef UTG__RESULT_ENUM
    UTG_RESULT_FORCE_INT = 0x7fffffff
} utg_result;

/* Logging is a callback; the library prints nothing by itself. Only a model logs (its creation, the
   plans it built); the callback runs on the calling thread. `message` is at most 511 bytes, with no
   trailing newline, and lives only for the call; `file` and `line` point into utgolf.h. */
typedef enum utg_log_level { UTG_LOG_ERROR = 0, UTG_LOG_WARN, UTG_LOG_INFO, UTG_LOG_DEBUG } utg_log_level;
typedef void (*utg_log_fn)(utg_log_level level, const char *message, const char *file, int line,
                           void *user);
typedef struct utg_logger {
    utg_log_fn fn; /* NULL: silent */
    void *user;
} utg_logger;

/* Allocation is the caller's call: NULL functions fall back to UTG_MALLOC / UTG_FREE. alloc_fn must
   return memory aligned as malloc's is (the CPU backend aligns its 64-byte buffers itself on top)
   or NULL; every block goes back through free_fn of the same allocator. A struct passed by pointer
   is copied, so it need not outlive the call; `user` must outlive every object that holds the
   copy. */
typedef struct utg_allocator {
    void *(*alloc_fn)(size_t size_bytes, void *user);
    void (*free_fn)(void *ptr, void *user);
    void *user;
} utg_allocator;

/* A message buffer for calls that have no model to hold their error details. The text is always
   NUL-terminated and safe to print (control bytes from files are written as \xNN); a call that
   fails writes it, a call that succeeds may leave it as it was. Every `utg_msg *` argument may be
   NULL: the details are then dropped. */
typedef struct utg_msg {
    char text[256];
} utg_msg;

/* Element types, for backend buffers and artifact tensors alike. The artifact stores F32, F16,
   BF16 and Q; the backend's collectives reduce F32 and F64. Values are fixed (the artifact's
   TENS entries store them). */
typedef enum utg_dtype {
    UTG_DT_F32 = 0, UTG_DT_F16 = 1, UTG_DT_BF16 = 2, UTG_DT_Q = 3, UTG_DT_F64 = 4
} utg_dtype;

/* ------------------------------------------------------------------------------------------------
// >>config
   The one list of knobs. Each entry: kind, field, Parameter Golf environment name, default, min,
   max, flags, doc line. The struct, the string parser, the single-knob checks of the validator,
   --help, the logged resolved config and the artifact metadata are all generated from this list;
   later features add rows here only.

   A field left 0 (or NULL) takes the default. Knobs whose default is non-zero but for which 0 is a
   meaningful value (flag OFF) take UTG_OFF (-1) to mean "0 / disabled"; the resolved config keeps
   -1 so that resolving is idempotent, and the library reads such knobs as "> 0 means on". The text
   parser does this mapping itself: TIE_EMBEDDINGS=0 stores UTG_OFF.
   ------------------------------------------------------------------------------------------------ */

#define UTG_OFF (-1)
/* The value of a knob whose 0 may be stored as UTG_OFF, read back as the number it means. */
#define UTG_OFF0(x) ((x) < 0 ? 0 : (x))

/* kinds: INT (int), BOOL (int: 1 on, UTG_OFF off), REAL (double), STR (const char *), ENUM (int: the
   index of a word in the row's choices). An ENUM row's default column holds its choices, "a|b|c"; the
   first word is the default (index 0, so a zeroed field is the default). Its constants
   (UTG_<ENV_NAME>_<WORD>) are listed below the table, in the order of the words.
   min, max: the range of an INT, BOOL or REAL knob, bounds included unless a flag says otherwise;
   UTG_INF is "no upper bound". A knob stored as UTG_OFF is checked as 0. STR and ENUM rows write 0, 0.
   flags, or-ed:
     UTG_KF_OFF    0 is a meaningful value distinct from the default
     UTG_KF_ARENA  shapes the parameter arena: a checkpoint resumes and an artifact loads only
                   into a model with the same value; an artifact's META carries it
     UTG_KF_EVAL   changes what the model computes but not its arena: carried in META
     UTG_KF_STATE  shapes the optimizer state or the data order: must match on resume */
#define UTG_KF_OFF 1
#define UTG_KF_ARENA 2
#define UTG_KF_EVAL 4
#define UTG_KF_STATE 8
/*   UTG_KF_GT     the value must be greater than min (min excluded)
     UTG_KF_LT     the value must be less than max (max excluded)
     UTG_KF_OR0    0 (off, or "take another knob's value") is allowed besides min..max */
#define UTG_KF_GT 16
#define UTG_KF_LT 32
#define UTG_KF_OR0 64
#define UTG_INF HUGE_VAL /* max of a knob without an upper bound (math.h) */

#define UTG_CONFIG_KNOBS(X) \
    /* model shape */ \
    X(INT, num_layers, "NUM_LAYERS", 9, 1, 1024, UTG_KF_ARENA, "physical transformer blocks") \
    X(INT, model_dim, "MODEL_DIM", 512, 2, 65536, UTG_KF_ARENA, "model width d") \
    X(INT, num_heads, "NUM_HEADS", 8, 1, UTG_INF, UTG_KF_ARENA, "query heads (head dim = MODEL_DIM / NUM_HEADS)") \
    X(INT, num_kv_heads, "NUM_KV_HEADS", 4, 1, UTG_INF, UTG_KF_ARENA, "key/value heads (GQA); must divide NUM_HEADS") \
    X(INT, mlp_mult, "MLP_MULT", 2, 1, 64, UTG_KF_ARENA, "MLP hidden width = MLP_MULT * MODEL_DIM") \
    X(INT, vocab_size, "VOCAB_SIZE", 1024, 2, 65536, UTG_KF_ARENA, "vocabulary size; must equal the tokenizer's") \
    X(BOOL, tie_embeddings, "TIE_EMBEDDINGS", 1, 0, 1, UTG_KF_OFF | UTG_KF_ARENA, "share tok_emb with the output head") \
    X(REAL, rope_base, "ROPE_BASE", 10000.0, 1, UTG_INF, UTG_KF_EVAL | UTG_KF_GT, "RoPE frequency base") \
    X(REAL, logit_softcap, "LOGIT_SOFTCAP", 30.0, 0, UTG_INF, UTG_KF_OFF | UTG_KF_EVAL, "c in c*tanh(z/c) on the logits; 0 = none") \
    X(REAL, qk_gain_init, "QK_GAIN_INIT", 1.5, 0, UTG_INF, UTG_KF_GT, "initial per-head query gain q_gain") \
    X(REAL, tied_embed_init_std, "TIED_EMBED_INIT_STD", 0.005, 0, UTG_INF, UTG_KF_GT, "std of the tied embedding init") \
    X(REAL, rms_norm_eps, "RMS_NORM_EPS", 1.1920928955078125e-07, 0, 1, UTG_KF_EVAL | UTG_KF_GT | UTG_KF_LT, \
      "RMSNorm eps (PyTorch's default: fp32 machine epsilon)") \
    X(INT, train_seq_len, "TRAIN_SEQ_LEN", 1024, 1, 1048576, UTG_KF_ARENA, "tokens per training sequence") \
    X(INT, seed, "SEED", 1337, 0, UTG_INF, UTG_KF_OFF | UTG_KF_STATE, "seed of the init RNG and the data order") \
    /* depth recurrence and parallel residuals; see >>model for the plan */ \
    X(STR, recur_layers, "RECUR_LAYERS", "", 0, 0, UTG_KF_ARENA, \
      "cut-and-repeat (PR #1204): physical layers run again after the cut, e.g. 4,5") \
    X(INT, recur_start_step, "RECUR_START_STEP", 0, 0, UTG_INF, UTG_KF_ARENA, \
      "step at which the recurrent plan switches on; 0 = from the start") \
    X(ENUM, repeat_untie_mlp, "REPEAT_UNTIE_MLP", "none|full|down", 0, 0, UTG_KF_ARENA, \
      "none | full | down: repeated visits get their own MLP (or down projection), copied from the shared one when recurrence switches on") \
    X(STR, repeat_untie_mlp_layers, "REPEAT_UNTIE_MLP_LAYERS", "", 0, 0, UTG_KF_ARENA, \
      "physical layers whose repeats REPEAT_UNTIE_MLP unties; empty = every repeated layer") \
    X(INT, num_loops, "NUM_LOOPS", 0, 0, 64, UTG_KF_ARENA, "extra passes over layers LOOP_START..LOOP_END (PR #1394)") \
    X(INT, loop_start, "LOOP_START", 4, 0, UTG_INF, UTG_KF_OFF | UTG_KF_ARENA, "first physical layer of the looped segment") \
    X(INT, loop_end, "LOOP_END", 5, 0, UTG_INF, UTG_KF_OFF | UTG_KF_ARENA, "last physical layer of the looped segment") \
    X(REAL, enable_looping_at, "ENABLE_LOOPING_AT", 0.0, 0, 1, UTG_KF_ARENA | UTG_KF_LT, \
      "fraction of training at which recurrence switches on; 0 = from the start") \
    X(REAL, loop_phase2_at, "LOOP_PHASE2_AT", 0.0, 0, 1, UTG_KF_ARENA | UTG_KF_LT, \
      "progressive recurrence (PR #1412): one extra pass from ENABLE_LOOPING_AT, all NUM_LOOPS from this fraction") \
    X(STR, encoder_layers, "ENCODER_LAYERS", "", 0, 0, UTG_KF_ARENA, "explicit encoder list of physical layers, e.g. 0,1,2,3,4,5,3,4") \
    X(STR, decoder_layers, "DECODER_LAYERS", "", 0, 0, UTG_KF_ARENA, "explicit decoder list of physical layers, e.g. 5,3,4,5,6,7,8,9,10") \
    X(INT, universal_unique_blocks, "UNIVERSAL_UNIQUE_BLOCKS", 0, 0, 1024, UTG_KF_ARENA, \
      "Universal Transformer (PR #1110): n physical blocks, virtual layer e runs block e mod n (replaces NUM_LAYERS)") \
    X(INT, universal_iterations, "UNIVERSAL_ITERATIONS", 1, 1, 256, UTG_KF_ARENA, "Universal Transformer: passes over the unique blocks") \
    X(STR, num_layer_schedule, "NUM_LAYER_SCHEDULE", "", 0, 0, UTG_KF_ARENA, \
      "depth curriculum step:depth,... (PR #1088): run the first `depth` virtual layers from `step` on") \
    X(ENUM, unet_skips, "UNET_SKIPS", "half|loop|none", 0, 0, UTG_KF_ARENA, \
      "half: the first half of the virtual layers push, the second half pops (train_gpt.py); loop: layers before the looped segment push, layers after it pop (stem/core/tail, PR #363); none") \
    X(ENUM, control_scope, "CONTROL_SCOPE", "physical|virtual", 0, 0, UTG_KF_ARENA, \
      "physical: control tensors per block, shared by every visit (PR #1394); virtual: one set per virtual layer (PR #1204, #1088)") \
    X(INT, block_attns, "BLOCK_ATTNS", 1, 1, 2, UTG_KF_ARENA, "attention sublayers per block (2: PR #1088's double attention)") \
    X(INT, mlp_layers, "MLP_LAYERS", 2, 2, 3, UTG_KF_ARENA, "MLP matrices: 2 (fc, proj) or 3 (fc, mid, proj; PR #1088)") \
    X(BOOL, norm_bias, "NORM_BIAS", 0, 0, 1, UTG_KF_ARENA, "learned bias after each block pre-norm (PR #1088's depth embedding with CONTROL_SCOPE=virtual)") \
    X(BOOL, iter_embed, "ITER_EMBED", 0, 0, 1, UTG_KF_ARENA, "per-virtual-layer embedding added to the block input (PR #1110)") \
    X(BOOL, iter_scale, "ITER_SCALE", 0, 0, 1, UTG_KF_ARENA, "per-virtual-layer scale of the block's residual delta (PR #1110)") \
    X(BOOL, film, "FILM", 0, 0, 1, UTG_KF_ARENA, "per-virtual-layer FiLM (gamma, beta) on the block input (PR #1640)") \
    X(ENUM, parallel_residual, "PARALLEL_RESIDUAL", "none|gptj|two_lane|parallel", 0, 0, UTG_KF_ARENA, \
      "none | gptj | two_lane (PR #1204) | parallel (PR #1530): from decoder layers at PARALLEL_START_LAYER on") \
    X(INT, parallel_start_layer, "PARALLEL_START_LAYER", 8, 0, UTG_INF, UTG_KF_OFF | UTG_KF_ARENA, \
      "first physical layer (of the decoder) with parallel residuals") \
    X(ENUM, parallel_final_lane, "PARALLEL_FINAL_LANE", "mean|attn|mlp", 0, 0, UTG_KF_ARENA, "two lanes: mean | attn | mlp lane feeds the final norm") \
    /* architecture features of the records */ \
    X(INT, rope_dims, "ROPE_DIMS", 0, 0, UTG_INF, UTG_KF_ARENA, "rotary dims per head (partial RoPE, PR #315: 16 of 64); 0 = the whole head") \
    X(BOOL, rope_ntk, "ROPE_NTK", 0, 0, 1, UTG_KF_EVAL, "NTK-aware RoPE base rescaling past ROPE_TRAIN_SEQ_LEN") \
    X(INT, rope_train_seq_len, "ROPE_TRAIN_SEQ_LEN", 0, 0, 16777216, UTG_KF_EVAL, \
      "length ROPE_NTK scales from; 0 = TRAIN_SEQ_LEN (PR #1204 and #1110 build RoPE for 1024 and train at 2048)") \
    X(BOOL, ln_scale, "LN_SCALE", 0, 0, 1, UTG_KF_ARENA, \
      "scale each block's pre-norm outputs by 1/sqrt(i+1), i = the block (the virtual layer with CONTROL_SCOPE=virtual; PR #315)") \
    X(ENUM, mlp_activation, "MLP_ACTIVATION", "relu2|leaky_relu2", 0, 0, UTG_KF_ARENA, "relu2 (train_gpt.py) | leaky_relu2 (leaky_relu(x, LEAKY_RELU_SLOPE)^2, PR #493)") \
    X(REAL, leaky_relu_slope, "LEAKY_RELU_SLOPE", 0.5, 0, 1, UTG_KF_ARENA | UTG_KF_GT | UTG_KF_LT, "negative slope of MLP_ACTIVATION=leaky_relu2") \
    X(INT, mlp_hidden, "MLP_HIDDEN", 0, 0, 1048576, UTG_KF_ARENA, "MLP hidden width; 0 = MLP_MULT * MODEL_DIM") \
    X(BOOL, skip_gates_enabled, "SKIP_GATES_ENABLED", 0, 0, 1, UTG_KF_ARENA, \
      "U-Net skip gates (PR #1089): a decoder input becomes lerp(skip_weights*skip, h, sigmoid(skip_gates)), gates start at 0") \
    X(BOOL, sparse_attn_gate_enabled, "SPARSE_ATTN_GATE_ENABLED", 0, 0, 1, UTG_KF_ARENA, \
      "sparse attention output gate (PR #1787): head h scaled by sigmoid(SPARSE_ATTN_GATE_SCALE * W_h . x[:GATE_WINDOW]), W zero-init") \
    X(REAL, sparse_attn_gate_scale, "SPARSE_ATTN_GATE_SCALE", 1.0, 0, UTG_INF, UTG_KF_ARENA | UTG_KF_GT, "logit scale of the sparse attention gate (0.5 in PR #1855)") \
    X(BOOL, attn_out_gate_enabled, "ATTN_OUT_GATE_ENABLED", 0, 0, 1, UTG_KF_ARENA, \
      "AttnOutGate (PR #1667): head h scaled by 2 * sigmoid(W_h . x[:GATE_WINDOW]), W zero-init (1 at init)") \
    X(BOOL, gated_attn_enabled, "GATED_ATTN_ENABLED", 0, 0, 1, UTG_KF_ARENA, \
      "dense gated attention (Qwen G1, PR #1736): head h scaled by sigmoid(W_h . x), W [H, d] ~ N(0, 0.005^2)") \
    X(INT, gate_window, "GATE_WINDOW", 12, 1, UTG_INF, UTG_KF_ARENA, "input channels the sparse gates read (attention gates and SmearGate)") \
    X(BOOL, smear_gate_enabled, "SMEAR_GATE_ENABLED", 0, 0, 1, UTG_KF_ARENA, \
      "input-dependent SmearGate on the raw embedding (PR #1667, BOS-masked as PR #1855): x_t += lambda * sigmoid(w . x_t[:GATE_WINDOW]) * x_{t-1}") \
    X(INT, bigram_vocab_size, "BIGRAM_VOCAB_SIZE", 0, 2, 16777216, UTG_KF_ARENA | UTG_KF_OR0, \
      "BigramHash embedding (PR #162): buckets K of x += scale * proj(B[h(prev, cur)]); 0 = off") \
    X(INT, bigram_dim, "BIGRAM_DIM", 128, 1, 65536, UTG_KF_ARENA, "width of the BigramHash table") \
    X(BOOL, smear_enabled, "SMEAR_ENABLED", 0, 0, 1, UTG_KF_ARENA, \
      "static SmearGate after the embedding norm (PR #162, #1204, #1110): x_t = (1 - sigmoid(g)) x_t + sigmoid(g) x_{t-1}, g [d] zero-init") \
    X(BOOL, ve_enabled, "VE_ENABLED", 0, 0, 1, UTG_KF_ARENA, \
      "value embedding (PR #1204, #1110): v += ve_layer_scales[k] * scale * proj(E_ve[token]) in the VE_LAYERS") \
    X(INT, ve_dim, "VE_DIM", 128, 1, 65536, UTG_KF_ARENA, "width of the value-embedding table") \
    X(STR, ve_layers, "VE_LAYERS", "9,10", 0, 0, UTG_KF_ARENA, "virtual layers whose attention values get the value embedding") \
    X(BOOL, value_residual, "VALUE_RESIDUAL", 0, 0, 1, UTG_KF_ARENA, \
      "value residual (ResFormer; PR #1110): every later layer adds sigmoid(vrl_alphas[e-1]) * v0, v0 = layer 0's values; alphas zero-init") \
    X(BOOL, shc_enabled, "SHC_ENABLED", 0, 0, 1, UTG_KF_ARENA, \
      "PR #1110's scalar hyper-connections (its SHC_N=0): block input alpha_e * h (+ iter_embed), stream update h + beta_e * (delta)") \
    X(BOOL, disable_layer0_attn, "DISABLE_LAYER0_ATTN", 0, 0, 1, UTG_KF_ARENA, \
      "block 0 runs no attention (PR #1204); its attention matrices are not allocated") \
    X(ENUM, q_gain_scope, "Q_GAIN_SCOPE", "block|control", 0, 0, UTG_KF_ARENA, \
      "block: q_gain goes with the attention matrices (PR #1088, #1394); control: with the control tensors, so per virtual layer under CONTROL_SCOPE=virtual (PR #1204)") \
    X(BOOL, ortho_init, "ORTHO_INIT", 0, 0, 1, 0, \
      "orthogonal init (gain 1) of the block matrices with both dims >= 64, output projections staying zero (PR #162)") \
    X(INT, xsa_last_n, "XSA_LAST_N", 0, 0, UTG_INF, UTG_KF_ARENA, \
      "exclusive self attention (PR #265) in the last N blocks (virtual layers with CONTROL_SCOPE=virtual, as PR #1204)") \
    /* training loop (used by the trainer) */ \
    X(INT, iterations, "ITERATIONS", 20000, 1, UTG_INF, 0, "optimizer step cap") \
    X(INT, warmdown_iters, "WARMDOWN_ITERS", 1200, 0, UTG_INF, UTG_KF_OFF, "length of the linear LR decay in steps") \
    X(INT, warmup_steps, "WARMUP_STEPS", 20, 0, UTG_INF, UTG_KF_OFF, "priming steps run then undone (not an LR warmup)") \
    X(INT, train_batch_tokens, "TRAIN_BATCH_TOKENS", 524288, 1, UTG_INF, 0, "global tokens per optimizer step") \
    X(INT, grad_accum_steps, "GRAD_ACCUM_STEPS", 8, 1, 65536, 0, \
      "micro-batches per step (train_gpt.py: 8 / WORLD_SIZE); the loss is scaled by 1/steps") \
    X(REAL, max_wallclock_seconds, "MAX_WALLCLOCK_SECONDS", 600.0, 0, UTG_INF, UTG_KF_OFF, \
      "training time cap in seconds; 0 = none") \
    X(INT, val_batch_size, "VAL_BATCH_SIZE", 524288, 1, UTG_INF, 0, "tokens per validation batch") \
    X(INT, val_loss_every, "VAL_LOSS_EVERY", 1000, 0, UTG_INF, UTG_KF_OFF, "validate every N steps; 0 = only at the end") \
    X(INT, train_log_every, "TRAIN_LOG_EVERY", 200, 0, UTG_INF, UTG_KF_OFF, "log the train loss every N steps") \
    X(ENUM, on_nonfinite, "ON_NONFINITE", "stop|rollback", 0, 0, 0, \
      "a non-finite loss or gradient norm: stop, or rollback (reload the last good checkpoint, halve the LRs)") \
    X(INT, on_nonfinite_max_rollbacks, "ON_NONFINITE_MAX_ROLLBACKS", 3, 1, UTG_INF, 0, \
      "ON_NONFINITE=rollback: rollbacks allowed in one run before it stops") \
    X(REAL, warmdown_frac, "WARMDOWN_FRAC", 0.0, 0, 1, 0, \
      "warmdown as a fraction of training (time with a cap, else steps); 0 = WARMDOWN_ITERS") \
    X(REAL, min_lr, "MIN_LR", 0.0, 0, 1, 0, "floor of the LR scale in a WARMDOWN_FRAC warmdown") \
    X(REAL, gptq_reserve_seconds, "GPTQ_RESERVE_SECONDS", 0.0, 0, UTG_INF, 0, \
      "seconds of the cap kept for post-training; the WARMDOWN_FRAC schedule ends this early") \
    X(INT, eval_seq_len, "EVAL_SEQ_LEN", 0, 0, 1048576, 0, "evaluation window length; 0 = TRAIN_SEQ_LEN") \
    X(INT, eval_stride, "EVAL_STRIDE", 0, 0, UTG_INF, 0, \
      "sliding-window eval: score the last EVAL_STRIDE tokens of each window; 0 = disjoint windows") \
    /* optimizers */ \
    X(REAL, embed_lr, "EMBED_LR", 0.6, 0, UTG_INF, UTG_KF_GT, "Adam LR of the untied token embedding") \
    X(REAL, head_lr, "HEAD_LR", 0.008, 0, UTG_INF, UTG_KF_GT, "Adam LR of the untied lm_head") \
    X(REAL, tied_embed_lr, "TIED_EMBED_LR", 0.05, 0, UTG_INF, UTG_KF_GT, "Adam LR of the tied embedding") \
    X(REAL, matrix_lr, "MATRIX_LR", 0.04, 0, UTG_INF, UTG_KF_GT, "Muon LR of the block matrices") \
    X(REAL, scalar_lr, "SCALAR_LR", 0.04, 0, UTG_INF, UTG_KF_GT, "Adam LR of vectors, scalars and control tensors") \
    X(REAL, muon_momentum, "MUON_MOMENTUM", 0.95, 0, UTG_INF, UTG_KF_GT, "Muon momentum after warmup") \
    X(INT, muon_backend_steps, "MUON_BACKEND_STEPS", 5, 1, 100, 0, "Newton-Schulz iterations") \
    X(REAL, muon_momentum_warmup_start, "MUON_MOMENTUM_WARMUP_START", 0.85, 0, UTG_INF, UTG_KF_OFF, \
      "Muon momentum at step 0") \
    X(INT, muon_momentum_warmup_steps, "MUON_MOMENTUM_WARMUP_STEPS", 500, 0, UTG_INF, UTG_KF_OFF, \
      "steps of the Muon momentum warmup") \
    X(REAL, beta1, "BETA1", 0.9, 0, 1, UTG_KF_OFF | UTG_KF_LT, "Adam beta1") \
    X(REAL, beta2, "BETA2", 0.95, 0, 1, UTG_KF_OFF | UTG_KF_LT, "Adam beta2") \
    X(REAL, adam_eps, "ADAM_EPS", 1e-8, 0, UTG_INF, UTG_KF_GT, "Adam epsilon") \
    X(REAL, grad_clip_norm, "GRAD_CLIP_NORM", 0.0, 0, UTG_INF, 0, "global gradient-norm clip; 0 = off") \
    X(BOOL, muon_nesterov, "MUON_NESTEROV", 1, 0, 1, UTG_KF_OFF, "Nesterov momentum in Muon") \
    X(BOOL, muon_eq_r, "MUON_EQ_R", 0, 0, 1, 0, "MuonEq-R: normalise each update row before Newton-Schulz") \
    X(BOOL, matmul_bf16, "MATMUL_BF16", 0, 0, 1, 0, \
      "the model's matmuls with bf16 inputs and fp32 sums (avx512_bf16 where the CPU has it), fp32 master weights: autocast's bf16") \
    X(ENUM, activation_dtype, "ACTIVATION_DTYPE", "auto|fp32|bf16", 0, 0, 0, \
      "how activations and their gradients are stored: auto = the backend's choice (bf16 on a GPU, fp32 on a CPU)") \
    X(BOOL, muon_ns_bf16, "MUON_NS_BF16", 1, 0, 1, UTG_KF_OFF, \
      "Newton-Schulz matmuls with bf16 inputs and fp32 sums (train_gpt.py runs them in bf16); 0 = fp32") \
    X(BOOL, muon_polar_express, "MUON_POLAR_EXPRESS", 0, 0, 1, 0, \
      "Newton-Schulz with the Polar Express per-step coefficients") \
    X(REAL, muon_wd, "MUON_WD", 0.0, 0, UTG_INF, 0, "decoupled weight decay of the Muon matrices") \
    X(REAL, adam_wd, "ADAM_WD", 0.0, 0, UTG_INF, 0, "decoupled weight decay of scalars and the untied head (AdamW)") \
    X(REAL, embed_wd, "EMBED_WD", 0.0, 0, UTG_INF, 0, "decoupled weight decay of the token embedding (AdamW)") \
    X(BOOL, ema_enabled, "EMA_ENABLED", 0, 0, 1, UTG_KF_STATE, "keep an EMA of the weights and use it at the end") \
    X(REAL, ema_decay, "EMA_DECAY", 0.997, 0, 1, UTG_KF_GT | UTG_KF_LT, "EMA decay per optimizer step") \
    X(BOOL, swa_enabled, "SWA_ENABLED", 0, 0, 1, UTG_KF_STATE, "average weights every SWA_EVERY steps late in training") \
    X(INT, swa_every, "SWA_EVERY", 50, 1, UTG_INF, 0, "SWA sampling interval in steps") \
    X(REAL, swa_start_lr_frac, "SWA_START_LR_FRAC", 0.5, 0, 1, UTG_KF_GT, "SWA samples once the LR scale is below this") \
    X(STR, control_tensor_name_patterns, "CONTROL_TENSOR_NAME_PATTERNS", \
      "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,skip_weights", \
      0, 0, 0, "name substrings that mark scalar/control tensors (Adam, kept in fp32)") \
    /* quantization, the artifact and the byte budget */ \
    X(ENUM, quant_clip, "QUANT_CLIP", "percentile|max|sdclip|search", 0, 0, 0, \
      "row clip of the quantizer: percentile (train_gpt.py) | max | sdclip (k*std, PR #1394) | search (GPTQ-lite, PR #414)") \
    X(REAL, quant_clip_percentile, "QUANT_CLIP_PERCENTILE", 0.9999984, 0.5, 1, UTG_KF_GT, "quantile of |w| per row with QUANT_CLIP=percentile") \
    X(INT, matrix_bits, "MATRIX_BITS", 8, 2, 8, 0, "bits of the block matrices (2..8)") \
    X(INT, attn_bits, "ATTN_BITS", 0, 2, 8, UTG_KF_OR0, "bits of the attention matrices; 0 = MATRIX_BITS") \
    X(INT, mlp_bits, "MLP_BITS", 0, 2, 8, UTG_KF_OR0, "bits of the MLP matrices; 0 = MATRIX_BITS") \
    X(INT, embed_bits, "EMBED_BITS", 8, 2, 8, 0, "bits of the token embedding and an untied head") \
    X(STR, quant_layer_bits, "QUANT_LAYER_BITS", "", 0, 0, 0, "bits of the matrices of some physical blocks, e.g. 3:5,4:5") \
    X(REAL, matrix_clip_sigmas, "MATRIX_CLIP_SIGMAS", 12.85, 0, UTG_INF, UTG_KF_GT, "SDClip k of the block matrices") \
    X(REAL, attn_clip_sigmas, "ATTN_CLIP_SIGMAS", 0.0, 0, UTG_INF, 0, "SDClip k of the attention matrices; 0 = MATRIX_CLIP_SIGMAS") \
    X(REAL, mlp_clip_sigmas, "MLP_CLIP_SIGMAS", 0.0, 0, UTG_INF, 0, "SDClip k of the MLP matrices; 0 = MATRIX_CLIP_SIGMAS") \
    X(REAL, embed_clip_sigmas, "EMBED_CLIP_SIGMAS", 20.0, 0, UTG_INF, UTG_KF_GT, "SDClip k of the embedding and an untied head") \
    X(INT, quant_passthrough_numel, "QUANT_PASSTHROUGH_NUMEL", 65536, 1, UTG_INF, 0, \
      "float tensors of at most this many elements stay float (fp16, or fp32 for control patterns)") \
    X(BOOL, gptq_enabled, "GPTQ_ENABLED", 0, 0, 1, 0, "full-Hessian GPTQ for every matrix with calibration data") \
    X(INT, gptq_calibration_batches, "GPTQ_CALIBRATION_BATCHES", 64, 1, 1000000, 0, "calibration sequences for the Hessians") \
    X(ENUM, gptq_calibration, "GPTQ_CALIBRATION", "train|self|random", 0, 0, 0, \
      "calibration text: train (training batches) | self (sampled from the model, PR #1019) | random (uniform tokens)") \
    X(REAL, gptq_selfgen_temperature, "GPTQ_SELFGEN_TEMPERATURE", 0.8, 0, 100, UTG_KF_GT, "sampling temperature of GPTQ_CALIBRATION=self") \
    X(REAL, gptq_damp, "GPTQ_DAMP", 0.01, 0, 10, UTG_KF_GT | UTG_KF_LT, "GPTQ damping: this fraction of the mean Hessian diagonal") \
    X(ENUM, qat, "QAT", "none|ste|noisy", 0, 0, 0, "quantization-aware training: none | ste (fake-quant, straight-through) | noisy (uniform noise of one step, PR #363)") \
    X(INT, qat_start_step, "QAT_START_STEP", 0, 0, UTG_INF, 0, "first step with QAT (LATE_QAT_THRESHOLD = 0)") \
    X(REAL, late_qat_threshold, "LATE_QAT_THRESHOLD", 0.0, 0, 1, 0, "QAT switches on once the LR scale falls below this; 0 = by QAT_START_STEP") \
    X(INT, qat_bits, "QAT_BITS", 0, 2, 8, UTG_KF_OR0, "bits QAT simulates; 0 = each tensor's export bits") \
    X(ENUM, compressor, "COMPRESSOR", "brotli|stored", 0, 0, 0, "artifact codec: brotli (quality 11, window 24) | stored") \
    X(INT, artifact_budget_bytes, "ARTIFACT_BUDGET_BYTES", 16000000, 1, UTG_INF, 0, "byte budget of artifact + code") \
    X(BOOL, budget_mode, "BUDGET_MODE", 0, 0, 1, 0, "choose per-tensor bit widths to fit ARTIFACT_BUDGET_BYTES (minimum error)") \
    X(INT, budget_min_bits, "BUDGET_MIN_BITS", 4, 2, 8, 0, "lowest bit width BUDGET_MODE may choose") \
    /* data */ \
    X(STR, data_path, "DATA_PATH", "./data/datasets/fineweb10B_sp1024", 0, 0, 0, \
      "directory of fineweb_train_*.bin and fineweb_val_*.bin") \
    X(STR, tokenizer_path, "TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model", 0, 0, 0, \
      "SentencePiece .model file") \
    X(STR, train_files, "TRAIN_FILES", "", 0, 0, 0, "train shard glob; default DATA_PATH/fineweb_train_*.bin") \
    X(STR, val_files, "VAL_FILES", "", 0, 0, 0, "validation shard glob; default DATA_PATH/fineweb_val_*.bin") \
    X(ENUM, train_loader, "TRAIN_LOADER", "sequential|shuffled", 0, 0, UTG_KF_STATE, \
      "sequential (train_gpt.py's stream) or shuffled (random windows, PR #1394)") \
    X(STR, run_id, "RUN_ID", "", 0, 0, 0, "run name for logs (default: generated)")

/* The values of the ENUM knobs, in the order of the words of their rows. */
enum { UTG_UNET_SKIPS_HALF, UTG_UNET_SKIPS_LOOP, UTG_UNET_SKIPS_NONE };
enum { UTG_CONTROL_SCOPE_PHYSICAL, UTG_CONTROL_SCOPE_VIRTUAL };
enum { UTG_REPEAT_UNTIE_MLP_NONE, UTG_REPEAT_UNTIE_MLP_FULL, UTG_REPEAT_UNTIE_MLP_DOWN };
enum { UTG_PARALLEL_RESIDUAL_NONE, UTG_PARALLEL_RESIDUAL_GPTJ, UTG_PARALLEL_RESIDUAL_TWO_LANE,
       UTG_PARALLEL_RESIDUAL_PARALLEL };
enum { UTG_PARALLEL_FINAL_LANE_MEAN, UTG_PARALLEL_FINAL_LANE_ATTN, UTG_PARALLEL_FINAL_LANE_MLP };
enum { UTG_MLP_ACTIVATION_RELU2, UTG_MLP_ACTIVATION_LEAKY_RELU2 };
enum { UTG_Q_GAIN_SCOPE_BLOCK, UTG_Q_GAIN_SCOPE_CONTROL };
enum { UTG_ON_NONFINITE_STOP, UTG_ON_NONFINITE_ROLLBACK };
enum { UTG_QUANT_CLIP_PERCENTILE, UTG_QUANT_CLIP_MAX, UTG_QUANT_CLIP_SDCLIP, UTG_QUANT_CLIP_SEARCH };
enum { UTG_GPTQ_CALIBRATION_TRAIN, UTG_GPTQ_CALIBRATION_SELF, UTG_GPTQ_CALIBRATION_RANDOM };
enum { UTG_QAT_NONE, UTG_QAT_STE, UTG_QAT_NOISY };
enum { UTG_ACTIVATION_DTYPE_AUTO, UTG_ACTIVATION_DTYPE_FP32, UTG_ACTIVATION_DTYPE_BF16 };
enum { UTG_COMPRESSOR_BROTLI, UTG_COMPRESSOR_STORED };
enum { UTG_TRAIN_LOADER_SEQUENTIAL, UTG_TRAIN_LOADER_SHUFFLED };

typedef enum utg_knob_kind {
    UTG_KNOB_INT, UTG_KNOB_BOOL, UTG_KNOB_REAL, UTG_KNOB_STR, UTG_KNOB_ENUM
} utg_knob_kind;

#define UTG__CTYPE_INT int
#define UTG__CTYPE_BOOL int
#define UTG__CTYPE_REAL double
#define UTG__CTYPE_STR const char *
#define UTG__CTYPE_ENUM int
#define UTG__KNOB_FIELD(kind, field, env, def, lo, hi, flags, doc) UTG__CTYPE_##kind field;

typedef struct utg_config {
    UTG_CONFIG_KNOBS(UTG__KNOB_FIELD)
} utg_config;

typedef struct utg_knob_info {
    const char *env_name;   /* Parameter Golf environment name, e.g. "NUM_LAYERS" */
    const char *field_name; /* utg_config field, e.g. "num_layers" */
    utg_knob_kind kind;
    int flags;                  /* UTG_KF_*: UTG_KF_GT, UTG_KF_LT and UTG_KF_OR0 qualify min and max */
    double default_number;      /* INT, BOOL, REAL; ENUM: 0, the first choice */
    const char *default_string; /* STR */
    const char *doc;
    double min, max;            /* INT, BOOL, REAL: the range (max UTG_INF: none) */
    const char *choices;        /* ENUM: the words, "a|b|c", in the order of their indices */
} utg_knob_info;

/* The knob table at run time, for tools that list, print or parse knobs generically: index runs over
   0 .. utg_config_knob_count() - 1 in table order. The returned info is static (never freed). A
   typical setup: start from a zeroed utg_config, apply text (utg_config_parse_text) and the
   environment (utg_config_apply_env), put the result in utg_model_desc.config; utg_model_create
   resolves and validates it. */
UTGDEF int utg_config_knob_count(void);
UTGDEF const utg_knob_info *utg_config_knob(int index);             /* NULL when out of range */
UTGDEF int utg_config_find_knob(const char *env_or_field_name);      /* -1 when unknown */
/* Fill every zero field with its default (idempotent): a BOOL or OFF knob set to UTG_OFF keeps -1.
   Pure: desc (NULL: all defaults) is not changed, and the result borrows its string pointers. */
UTGDEF utg_config utg_config_resolve(const utg_config *desc);
/* Check a resolved config: every knob in its range or choices (from the table), then the rules that
   join several knobs (divisibility, layer indices). */
UTGDEF utg_result utg_config_validate(const utg_config *cfg, utg_msg *msg);
/* Set one knob from text, by env name (NUM_LAYERS) or field name (num_layers). A value outside the
   knob's range, or not one of an ENUM knob's words, is refused. String values are not copied: the
   caller keeps them alive as long as the config. */
UTGDEF utg_result utg_config_set(utg_config *cfg, const char *name, const char *value, utg_msg *msg);
/* Parse "KEY=VALUE" lines (# comments, blank lines, optional "export "). The text is modified in
   place (string values point into it), so keep it alive with the config. */
UTGDEF utg_result utg_config_parse_text(utg_config *cfg, char *text, utg_msg *msg);
/* Format one knob's value of cfg into buf (an ENUM knob as its word); returns buf. */
UTGDEF const char *utg_config_format(const utg_config *cfg, int index, char *buf, size_t buf_size);
/* One --help line for a knob: "  ENV_NAME  default  range-or-choices  doc" (the default as the
   resolver fills it). */
UTGDEF const char *utg_config_help_line(int index, char *buf, size_t buf_size);
#ifndef UTG_NO_STDIO
/* Apply every knob found in the process environment. String values point into the environment
   (getenv), so they stay valid while the environment is not changed. Stops at the first bad value
   with utg_config_set's result and message; the knobs set before it stay set. */
UTGDEF utg_result utg_config_apply_env(utg_config *cfg, utg_msg *msg);
#endif

/* ------------------------------------------------------------------------------------------------
// >>backend_api
   The op-level table the model calls: a backend is a utg_backend filled with function pointers.
   To add one (CUDA, say), fill every op with the semantics written above it, set abi_version and
   struct_size from this header, and pass it in utg_model_desc.backend: utg_model_create refuses a
   table whose version or size differs.

   Rules that hold for every op:
   - Memory. Every pointer is backend memory ("device" memory) from buf_alloc, row-major, with the
     element types below (float32 by default; int32 token ids, fp64 reduction results, 8-byte
     aligned). The library never reads or writes backend memory from the host except through
     upload and download.
   - Host waits. download and synchronize are the only calls that wait for the device. A backend
     that queues its ops asynchronously finishes the queued work in those two; every other op,
     reductions included, leaves its result in backend memory. A training step (zero_grads,
     forwards, backwards, QAT, optim step, averaging) makes exactly one download: the step's
     loss sum and gradient sum of squares, read together by utg_optim_step.
   - Writing and adding. Weight gradients (dW, dg, dlam, ...) are always ADDED to, so that a weight
     shared by several virtual layers sums the gradients of its visits. Each backward op says
     whether it WRITES or ADDS its input gradients (dx, dz, ...); writing saves the zero fill a
     first contribution would otherwise need.
   - Aliasing. Outputs do not overlap inputs unless the op says they may (mix_fwd's and
     mix_rmsnorm_fwd's out may be x; lerp_bwd's dx may be dout); operands that may be NULL say so.
   - Storage types. An op that touches activations takes `at`, the element type its activation
     operands are stored in: UTG_DT_F32, or UTG_DT_BF16 where the backend lists it in
     storage_dtypes. Activation operands are the tensors shaped by the batch, typed `void *` in
     the signatures (x, y, dx, dy, q, k, v, logits, ...); weights, weight gradients, per-row
     statistics (rstd, lse, gate values), row losses and optimizer state are always F32 (`float *`).
     matmul takes one type per operand, packed by UTG_MM_TYPES(c, a, b). Byte ranges follow the
     types: n elements of a BF16 operand are 2n bytes.
   - Precision. Arithmetic is fp32: a BF16 operand is read as the float it holds, and an output is
     rounded to bf16 (nearest even) once, when it is stored; an output the op ADDS into is read,
     added to in fp32 and rounded once. Exceptions: matmul_bf16 (bf16 products), the fp64 sums of
     reduce_f64 and of the per-row statistics (where the op says so), and fake_quant_rows (fp16
     row scales, as the artifact stores them).
   - Determinism. The same inputs and the same thread count give the same bits. reduce_f64 and
     the weight-gradient sums over rows give the same bits for any thread count (fixed-size chunks
     summed in a fixed order); a port keeps that property for them, and uses no float atomics.

   The ops, by group (W: writes, A: adds into; the full contract is the comment above each field):
     memory       buf_alloc, buf_free, upload, download (waits), fill, copy; storage_dtypes
     collectives  rank, world, all_reduce (sum in place, F32/F64), broadcast, all_gather
     core         matmul; embed_fwd (W) / embed_bwd (A); rmsnorm_fwd (W) / rmsnorm_bwd (W dx);
                  qk_norm_rope_fwd / _bwd (W dx, A dgain); attn_fwd / attn_bwd (W dq dk dv);
                  relu2_fwd / _bwd (W); mix_fwd / mix_bwd (A, or W with UTG_MIX_D*_SET);
                  mix_rmsnorm_fwd; xent_fwd (overwrites the logits)
     features     matmul_bf16 (MATMUL_BF16, MUON_NS_BF16); xsa_fwd / _bwd (A) (XSA_LAST_N);
                  lerp_fwd / _bwd (gated U-Net skips, static SmearGate); gate_fwd / _bwd
                  (attention output gates); smear_fwd / _bwd (input-dependent SmearGate);
                  fake_quant_rows (QAT)
     optimizer    reduce_f64 (sums and sums of squares into fp64), normalize_frob, axpby,
                  muon_momentum, row_normalize, adam_step
     life         synchronize (waits), destroy
   A port needs the memory, collectives, core, optimizer and life groups for the baseline model
   (train_gpt.py's); the feature ops only for the records' features that use them.
   ------------------------------------------------------------------------------------------------ */
#define UTG_BACKEND_ABI_VERSION 1u

#define UTG_MIX_WX_SCALAR 1 /* mix_fwd/mix_bwd flags */
#define UTG_MIX_WZ_SCALAR 2
#define UTG_MIX_WZ_SIGMOID 4 /* with UTG_MIX_WZ_SCALAR: z's weight is sigmoid(wz[0]) */
#define UTG_MIX_DX_SET 8      /* mix_bwd: dx is overwritten rather than added to */
#define UTG_MIX_DZ_SET 16     /* mix_bwd: dz is overwritten rather than added to */

/* matmul's operand types: C's, A's and B's utg_dtype in one int */
#define UTG_MM_TYPES(c, a, b) ((int)(c) | (int)(a) << 4 | (int)(b) << 8)
#define UTG_MM_F32 UTG_MM_TYPES(UTG_DT_F32, UTG_DT_F32, UTG_DT_F32)
#define UTG_MM_TYPE_C(types) ((utg_dtype)((types)&15))
#define UTG_MM_TYPE_A(types) ((utg_dtype)((types) >> 4 & 15))
#define UTG_MM_TYPE_B(types) ((utg_dtype)((types) >> 8 & 15))

#define UTG_REDUCE_SQUARES 1 /* reduce_f64 flags: sum x^2 rather than x */
#define UTG_REDUCE_ADD 2     /* reduce_f64: add the result to out[0] rather than overwrite it */

/* ta of matmul may also say "C is symmetric" (bit 2): M == N, beta 0, and op(A) op(B) is known
   to be symmetric (X X^T, X^T X, or A A with A symmetric). A backend may then compute the upper
   triangle and mirror it (the CPU backend does: its upper triangle has the full product's bits). */
typedef enum utg_trans { UTG_NO_TRANS = 0, UTG_TRANS = 1, UTG_NO_TRANS_SYM = 2, UTG_TRANS_SYM = 3 } utg_trans;

/* The backend's ops may be called at once by the threads of one OpenMP parallel team, each on its own
   operands (the optimizer then runs whole Muon tensors on different threads). Other kinds of
   concurrent callers (plain threads, nested teams) are not covered. */
#define UTG_BACKEND_CONCURRENT 1u
/* at most this many concurrent callers */
#define UTG_BACKEND_MAX_CALLERS 64

typedef struct utg_backend utg_backend;
struct utg_backend {
    uint32_t abi_version; /* UTG_BACKEND_ABI_VERSION */
    uint32_t struct_size; /* sizeof(utg_backend) as the backend was compiled */
    const char *name;
    void *impl;     /* backend-private state */
    uint32_t flags; /* UTG_BACKEND_CONCURRENT */

    /* ---- memory ---- */
    /* The activation storage types the backend implements (bits 1u << UTG_DT_F32 | ...; F32 is
       required), and the one ACTIVATION_DTYPE=auto picks: the fastest of them on this device. */
    uint32_t storage_dtypes;
    utg_dtype auto_activation_dtype;
    void *(*buf_alloc)(utg_backend *be, size_t size_bytes); /* zero-filled, 64-byte aligned */
    void (*buf_free)(utg_backend *be, void *buf);
    void (*upload)(utg_backend *be, void *dst, const void *host_src, size_t size_bytes);
    /* waits for the queued work, then copies: the one way results reach the host */
    void (*download)(utg_backend *be, void *host_dst, const void *src, size_t size_bytes);
    /* n elements of type dtype (F32 or a storage type) set to value (rounded to bf16 for BF16) */
    void (*fill)(utg_backend *be, void *dst, utg_dtype dtype, float value, size_t n);
    void (*copy)(utg_backend *be, void *dst, const void *src, size_t size_bytes); /* no overlap */

    /* ---- collectives ----
       This process is rank `rank` of `world` processes that run the same ops on their own data
       (data parallelism); a single-process backend has rank 0 of 1 and its collectives change
       nothing. Each is called by every rank in the same order with the same sizes. */
    int rank, world;
    /* buf[0 .. n) = the sum over ranks of each rank's buf, in place; dtype UTG_DT_F32 or
       UTG_DT_F64. The same bits on every rank. */
    void (*all_reduce)(utg_backend *be, void *buf, utg_dtype dtype, size_t n);
    /* every rank's buf[0 .. size_bytes) becomes root's (root in [0, world)) */
    void (*broadcast)(utg_backend *be, void *buf, size_t size_bytes, int root);
    /* dst[r * size_bytes ..] = rank r's src, for every r (dst holds world * size_bytes; src does
       not overlap dst) */
    void (*all_gather)(utg_backend *be, void *dst, const void *src, size_t size_bytes);

    /* ---- core ops: every model uses them ---- */

    /* C[M,N] = alpha * op(A) op(B) + beta*C, op(A) is [M,K] (A stored [K,M] when ta), op(B) is
       [K,N] (B stored [N,K] when tb). beta is 0 (C is not read) or 1. ta may be UTG_*_SYM (see
       utg_trans). C must not overlap A or B. */
    void (*matmul)(utg_backend *be, int types, void *C, const void *A, const void *B, int M, int N, int K,
                   utg_trans ta, utg_trans tb, float alpha, float beta);

    /* out[i,:] = table[ids[i],:] (W);  dtable[ids[i],:] += dout[i,:] (A; rows summed in i order);
       every id is a row of the table */
    void (*embed_fwd)(utg_backend *be, utg_dtype at, void *out, const float *table, const int32_t *ids, int n,
                      int d);
    void (*embed_bwd)(utg_backend *be, utg_dtype at, float *dtable, const void *dout, const int32_t *ids,
                      int n, int d);

    /* y = x / sqrt(mean(x^2) + eps) per row of [rows, cols]; rstd[row] (W) saved for backward.
       The backward WRITES dx from dy, the output y and rstd. */
    void (*rmsnorm_fwd)(utg_backend *be, utg_dtype at, void *y, float *rstd, const void *x, int rows,
                        int cols, float eps);
    void (*rmsnorm_bwd)(utg_backend *be, utg_dtype at, void *dx, const void *dy, const void *y,
                        const float *rstd, int rows, int cols);

    /* q and k after their projection, in one pass: over
       x[n_tok, n_heads*head_dim], each head's vector is RMS-normalized (xn, and rstd[t*n_heads+h]
       saved for the backward), rotated by RoPE on its first rot_dims dims (split-half pairs
       (i, i+rot_dims/2), rot_dims even and at most head_dim; the other dims pass through; token row
       r sits at position r % seq_len;
       cos_sin holds [seq_len, rot_dims/2] cosines then as many sines), then scaled by gain[h]
       (q_gain; NULL: 1):  y = gain * rope(xn).  The backward recomputes rope(xn) from xn; it WRITES
       dL/dx into dx and, with a gain, ADDS dL/dgain into dgain. No output
       may alias an input (y, xn and x; dx and dy). */
    void (*qk_norm_rope_fwd)(utg_backend *be, utg_dtype at, void *y, void *xn, float *rstd, const void *x,
                             const float *cos_sin, const float *gain, int n_tok, int seq_len, int n_heads,
                             int head_dim, int rot_dims, float eps);
    void (*qk_norm_rope_bwd)(utg_backend *be, utg_dtype at, void *dx, float *dgain, const void *dy,
                             const void *xn, const float *rstd, const float *cos_sin, const float *gain,
                             int n_tok, int seq_len, int n_heads, int head_dim, int rot_dims);

    /* Causal attention with GQA: q[B*T, H*hd], k/v[B*T, Hkv*hd], query head h reads kv head
       h / (H/Hkv). y[B*T, H*hd] (W); lse[B*T*H] (W) = log-sum-exp of the scaled logits of each
       query. No T x T buffer is needed. The backward WRITES dq, dk and dv. */
    void (*attn_fwd)(utg_backend *be, utg_dtype at, void *y, float *lse, const void *q, const void *k,
                     const void *v, int B, int T, int H, int Hkv, int hd, float scale);
    void (*attn_bwd)(utg_backend *be, utg_dtype at, void *dq, void *dk, void *dv, const void *dy,
                     const void *q, const void *k, const void *v, const void *y, const float *lse, int B,
                     int T, int H, int Hkv, int hd, float scale);

    /* y = leaky_relu(x, slope)^2 (slope 0: relu(x)^2); the backward WRITES
       dx = dy * 2*x * (x > 0 ? 1 : slope^2) */
    void (*relu2_fwd)(utg_backend *be, utg_dtype at, void *y, const void *x, size_t n, float slope);
    void (*relu2_bwd)(utg_backend *be, utg_dtype at, void *dx, const void *dy, const void *x, size_t n,
                      float slope);

    /* Channel mix: out[r,c] = WX*x[r,c] + WZ*z[r,c]. A weight is a per-channel vector (wx[c]) or,
       with UTG_MIX_WX_SCALAR / UTG_MIX_WZ_SCALAR in flags, one scalar (wx[0]); a NULL weight means
       1. z NULL means a row of ones (out = WX*x + wz, a bias; both z and wz NULL: out = WX*x). out
       may alias x. Backward adds into any non-NULL dx, dz, dwx, dwz (dw summed over rows, and over
       channels for a scalar; deterministic); UTG_MIX_DX_SET / UTG_MIX_DZ_SET make it overwrite dx / dz
       instead. This one op is resid_mix, the scaled residual adds, the U-Net skip adds, norm biases,
       FiLM and the parallel-residual lane updates (the model names its common forms: utg__add,
       utg__add_scaled, utg__sub, utg__mean, ...). UTG_MIX_WZ_SIGMOID (with UTG_MIX_WZ_SCALAR)
       weights z by sigmoid(wz[0]) and its backward adds sigmoid'(wz[0]) * sum(dout z) into dwz
       (the value residual's gates). */
    void (*mix_fwd)(utg_backend *be, utg_dtype at, void *out, const void *x, const float *wx, const void *z,
                    const float *wz, int rows, int cols, int flags);
    void (*mix_bwd)(utg_backend *be, utg_dtype at, void *dx, void *dz, float *dwx, float *dwz,
                    const void *dout, const void *x, const float *wx, const void *z, const float *wz,
                    int rows, int cols, int flags);
    /* mix_fwd and then rmsnorm_fwd of its output in one pass (a residual add and the next
       block's norm): out as mix_fwd (may alias x), y and rstd as rmsnorm_fwd(out); the same bits as
       the two ops. */
    void (*mix_rmsnorm_fwd)(utg_backend *be, utg_dtype at, void *out, void *y, float *rstd, const void *x,
                            const float *wx, const void *z, const float *wz, int rows, int cols, int flags,
                            float eps);

    /* Softcapped cross-entropy over rows of raw logits z[rows, V]: z' = c*tanh(z/c) (no cap when
       c <= 0: z' = z), targets in [0, V), row_loss[r] (W) = logsumexp(z'_r) - z'_r[target_r],
       summed in fp32 after subtracting the row max. The logits buffer is overwritten, and after the
       call holds:
       - dscale == 0: z' itself (the softcapped logits the loss was computed from; a sampler or an
         evaluation-time feature reads its distribution from them: softmax(z'_r));
       - dscale != 0: the gradient d(dscale * row_loss[r]) / dz = dscale * (softmax(z'_r) -
         onehot(target_r)) * (1 - (z'/c)^2), the softcap's derivative included (no cap: without
         the last factor). */
    void (*xent_fwd)(utg_backend *be, utg_dtype at, void *logits, float *row_loss, const int32_t *targets,
                     int rows, int V, float softcap, float dscale);

    /* ---- feature ops: the records' features ---- */

    /* matmul with alpha * op(A) and op(B) rounded to bf16 (nearest even) and the products summed
       in fp32: Newton-Schulz in bf16 as train_gpt.py runs it (MUON_NS_BF16), and MATMUL_BF16. The
       CPU backend's AVX-512 path reads denormal inputs as zero where it converts with
       vcvtne2ps2bf16 (a transposed pack). */
    void (*matmul_bf16)(utg_backend *be, int types, void *C, const void *A, const void *B, int M, int N,
                        int K, utg_trans ta, utg_trans tb, float alpha, float beta);

    /* XSA (exclusive self attention): y[t,h,:] = x[t,h,:] - (x.u) u with u = v[t,j,:] / |v[t,j,:]| of
       the token's own value, j = h / (H/Hkv). Backward ADDS into dx and dv. */
    void (*xsa_fwd)(utg_backend *be, utg_dtype at, void *y, const void *x, const void *v, int n_tok, int H,
                    int Hkv, int hd);
    void (*xsa_bwd)(utg_backend *be, utg_dtype at, void *dx, void *dv, const void *dy, const void *x,
                    const void *v, int n_tok, int H, int Hkv, int hd);

    /* Gated skip (PR #1089): out[r,c] = a_c x[r,c] + (1 - a_c) s_c z[r,c] with a = sigmoid(g[c]); s NULL
       means 1 (then ds is NULL too: the static SmearGate). The backward reads the output y
       instead of x (x - s z = (y - s z) / a), ADDS into dz, dg, ds, and OVERWRITES dx = a dout (dx
       may alias dout). */
    void (*lerp_fwd)(utg_backend *be, utg_dtype at, void *out, const void *x, const void *z, const float *g,
                     const float *s, int rows, int cols);
    void (*lerp_bwd)(utg_backend *be, utg_dtype at, void *dx, void *dz, float *dg, float *ds,
                     const void *dout, const void *y, const void *z, const float *g, const float *s, int rows,
                     int cols);

    /* Attention output gate: z[t,h] = scale * sum_{i<win} W[h,i] x[t,i] (x rows hold x_cols floats),
       g = mult * sigmoid(z) (saved), y[t,h,:] = g[t,h] yin[t,h,:]. Backward ADDS dyin = g dy and, with
       dz = (dy . yin) g (1 - g / mult), dW[h,i] += scale sum_t dz x[t,i], dx[t,i] += scale sum_h dz W[h,i].
       win = x_cols is the dense gate. */
    void (*gate_fwd)(utg_backend *be, utg_dtype at, void *y, float *g, const void *yin, const void *x,
                     const float *W, int n_tok, int H, int hd, int x_cols, int win, float scale, float mult);
    void (*gate_bwd)(utg_backend *be, utg_dtype at, void *dyin, void *dx, float *dW, const void *dy,
                     const void *yin, const void *x, const float *W, const float *g, int n_tok, int H, int hd,
                     int x_cols, int win, float scale, float mult);

    /* Input-dependent SmearGate (PR #1667, BOS-masked as PR #1855): for a token at position p >= 1 of
       its sequence (p = row % seq_len) whose id is not bos, y_t = x_t + lam * sigmoid(w . x_t[0:win])
       x_{t-1}; otherwise y_t = x_t. Backward ADDS into dx (not aliasing dy), dw and dlam. */
    void (*smear_fwd)(utg_backend *be, utg_dtype at, void *y, const void *x, const float *w, const float *lam,
                      const int32_t *ids, int n_tok, int seq_len, int d, int win, int bos);
    void (*smear_bwd)(utg_backend *be, utg_dtype at, void *dx, float *dw, float *dlam, const void *dy,
                      const void *x, const float *w, const float *lam, const int32_t *ids, int n_tok,
                      int seq_len, int d, int win, int bos);

    /* QAT's fake quantisation of w[rows, cols] into out (W; out does not overlap w), per row:
       - noise_key == 0 (QAT=ste): the row quantized to bits-bit symbols in [-r, r], r =
         2^(bits-1) - 1, exactly as utg_quantize_rows does with the utg_clip_mode `clip`
         (UTG_CLIP_MAX, or UTG_CLIP_SDCLIP with k = clip_param) and its fp16 row scale, then
         dequantized (symbol * scale). A row with a non-finite value is copied unchanged.
       - noise_key != 0 (QAT=noisy, PR #363): out = fmaf(u_i - 0.5f, rowmax / r, w_i) with rowmax
         the row's max |w| in fp32 and u_i = (splitmix64(noise_key + (i + 1) * 0x9E3779B97F4A7C15)
         >> 40) * 2^-24, i the element's index in w: a counter-based draw, so every backend draws
         the same noise (utg_qat_noise_key makes the key from seed, step and tensor). */
    void (*fake_quant_rows)(utg_backend *be, float *out, const float *w, int rows, int cols, int bits,
                            int clip, double clip_param, uint64_t noise_key);

    /* ---- optimizer and reductions ---- */

    /* out[0] (one double in backend memory) = sum of x[0 .. n) in fp64, or of x^2 with
       UTG_REDUCE_SQUARES, times scale; UTG_REDUCE_ADD adds it to out[0] instead. Deterministic
       for any thread count (see the rules above): the gradient norm, the step's loss sum. */
    void (*reduce_f64)(utg_backend *be, double *out, const float *x, size_t n, double scale, int flags);
    /* x[0 .. n) *= (float)(1 / (sqrt(sum x^2) + eps)), the sum as reduce_f64's: Newton-Schulz's
       input normalisation, on the device. */
    void (*normalize_frob)(utg_backend *be, float *x, size_t n, double eps);
    /* y = alpha*x + beta*y over n floats; x may be NULL when alpha == 0 (y alone is scaled; with
       beta 0 too, y is not read). */
    void (*axpby)(utg_backend *be, float *y, float alpha, const float *x, float beta, size_t n);
    /* Muon's momentum in one pass: m = mu*m + g, then u = g + mu*m (nesterov) or u = m. */
    void (*muon_momentum)(utg_backend *be, float *u, float *m, const float *g, float mu, int nesterov,
                          size_t n);
    /* each row of x[rows, cols] divided by max(||row||_2, eps), the norm summed in fp64 (MuonEq-R) */
    void (*row_normalize)(utg_backend *be, float *x, int rows, int cols, float eps);
    /* One Adam(W) step, torch.optim.Adam's formula: p *= 1 - lr*wd (decoupled; wd = 0 is plain
       Adam); m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
       p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps), with bc = 1 - beta^t. */
    void (*adam_step)(utg_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
                      float beta1, float beta2, float eps, float wd, float bc1, float bc2);

    /* ---- life ---- */
    void (*synchronize)(utg_backend *be); /* waits until every queued op is done */
    void (*destroy)(utg_backend *be);     /* frees the table itself too */
};

/* The CPU reference backend (OpenMP inside each op when compiled with -fopenmp). Its "backend
   memory" is host memory from `alloc` (NULL: the default), 64-byte aligned. *out is NULL on
   failure (UTG_ERR_NOMEM). The caller owns the backend: it must outlive every model, optimizer and
   Hessian set that uses it, and goes back with utg_backend_destroy. A model created with a NULL
   backend makes and destroys its own. */
UTGDEF utg_result utg_backend_cpu_create(const utg_allocator *alloc, utg_backend **out);
/* The matmul microkernel a CPU backend picked: "avx512", "avx2" or "portable" (from the CPU's
   features at create; UTG_CPU_KERNEL in the environment asks for another one the CPU has). */
UTGDEF const char *utg_backend_cpu_kernel(const utg_backend *be); /* NULL for another backend */
/* Calls be->destroy, which frees the table itself; NULL does nothing. Buffers allocated from the
   backend must be freed first (the CPU backend does not track them). */
UTGDEF void utg_backend_destroy(utg_backend *be);

/* ------------------------------------------------------------------------------------------------
// >>model
   A model owns its resolved config, its depth plans, the parameter and gradient arenas (one
   backend buffer each, laid out by the tensor table) and the activations of the last forward.
   Typical use:
       utg_model_desc d = {0};  d.config = cfg;          (zeroed config: the train_gpt.py baseline)
       utg_model_create(&d, &m);                        (on failure: read utg_model_message(m),
                                                         then utg_model_destroy(m))
       utg_model_reserve(m, micro_seqs);                (optional: all activation memory up front)
       loop: utg_model_zero_grads(m); forward + backward per micro-batch; an optimizer step
       utg_model_eval(...) for validation; utg_model_destroy(m).
   Parameters are initialised at create from SEED, so a new model is ready to train. Every call
   that moves data between host and model names the host side explicitly (host_src, host_dst);
   utg_model_params / utg_model_grads return backend pointers for backend ops only.
   ------------------------------------------------------------------------------------------------ */

typedef enum utg_role {
    UTG_ROLE_MATRIX = 0, /* 2-D block weights: Muon */
    UTG_ROLE_EMBED,      /* token embedding: Adam (tied or untied LR) */
    UTG_ROLE_HEAD,       /* untied lm_head: Adam */
    UTG_ROLE_CONTROL     /* vectors, scalars and control tensors: Adam (SCALAR_LR), kept fp32 */
} utg_role;

#define UTG_MAX_NAME 64
#define UTG_MAX_DIMS 4

typedef struct utg_tensor_info {
    char name[UTG_MAX_NAME]; /* Parameter Golf state-dict name, e.g. "blocks.3.attn.c_q.weight" */
    int ndim;
    int64_t shape[UTG_MAX_DIMS];
    size_t numel;
    size_t offset; /* in floats, from the start of the arena; 64-byte aligned */
    utg_role role;
    int block; /* owning physical block, -1 for model-level tensors */
} utg_tensor_info;

/* The depth plan. A model has one or more plans ("phases"); a schedule picks which one runs. Each
   plan is a list of virtual layers, and forward and backward are a plain loop over it: a virtual
   layer runs the heavy matrices of one physical block, the control tensors of one owner (the block,
   or the virtual layer itself with CONTROL_SCOPE=virtual), its own depth conditioning, and takes
   part in the U-Net skip stack. Every plan the schedule can reach is built at model creation. */
typedef enum utg_lane_mode {
    UTG_LANE_SINGLE = 0, /* h -> h + attn, then + mlp (train_gpt.py) */
    UTG_LANE_GPTJ,       /* attention and MLP both read the block input (GPT-J) */
    UTG_LANE_TWO,        /* two lanes, attention then MLP on the updated lane (PR #1204) */
    UTG_LANE_PARALLEL    /* two lanes, both sublayers from the pre-update lanes (PR #1530) */
} utg_lane_mode;

typedef struct utg_plan_layer {
    int block;      /* physical block whose matrices run */
    int ctrl;       /* owner of the control tensors (attn_scale, mlp_scale, resid_mix, norm bias):
                       the block, or the virtual layer index with CONTROL_SCOPE=virtual (q_gain
                       belongs to the attention module and goes with the block's matrices) */
    int visit;      /* 0 for the block's first visit in this plan, 1, 2, ... for its repeats */
    int mlp_set;    /* -1: the block's MLP; k: the untied repeat MLP repeat_mlp.k */
    int lane;       /* utg_lane_mode */
    int push_slot;  /* push this layer's output into skip slot, or -1 */
    int pop_slot;   /* before running: h += skip_weights[skip_index] * slot, or -1 */
    int skip_index; /* row of skip_weights used by the pop */
} utg_plan_layer;

typedef struct utg_plan {
    int n_layers;        /* virtual layers */
    int n_encoder;       /* virtual layers in the encoder half (the layers that push) */
    int n_slots;         /* skip slots in use */
    int lanes_from;      /* first two-lane virtual layer, or -1 */
    int start_step;      /* the schedule switches to this plan at this step (-1: not by step) */
    double start_frac;   /* ... or at this fraction of training (-1: not by fraction) */
    int n_init_sets;     /* untied MLP sets first used by this plan: copied from the shared MLP */
    int *init_sets;      /* when the schedule switches to it */
    utg_plan_layer *layers;
} utg_plan;

/* What utg_model_create needs; the model copies all of it (config strings included), so desc may
   go away after the call. The backend, when given, stays the caller's. */
typedef struct utg_model_desc {
    utg_config config;      /* zeroed = train_gpt.py baseline */
    utg_backend *backend;   /* NULL: a CPU backend owned by the model */
    utg_allocator allocator;
    utg_logger logger;
} utg_model_desc;

typedef struct utg_model utg_model;

/* Resolve and validate desc->config (NULL desc: the baseline), build the tensor table and every
   depth plan, allocate both arenas on the backend and initialise the parameters from SEED. Errors:
   UTG_ERR_CONFIG for an invalid config, UTG_ERR_BACKEND for a backend table from another ABI or
   without the matmul the config needs, UTG_ERR_NOMEM. Once the model struct itself exists, *out
   holds it even on failure, so that its message can be read: destroy it in every case where *out
   is not NULL. */
UTGDEF utg_result utg_model_create(const utg_model_desc *desc, utg_model **out);
/* The tensor count and parameter count (sum of numel) of the model `cfg` describes, without building
   it: only the depth plans and the tensor table are made, so this is cheap for any valid config. */
UTGDEF utg_result utg_config_model_size(const utg_config *cfg, size_t *n_params, int *n_tensors,
                                        utg_msg *msg);
/* Frees everything the model allocated, and its backend when it made its own; NULL does nothing.
   Optimizers, Hessian sets and QAT states of the model must be destroyed first. */
UTGDEF void utg_model_destroy(utg_model *m);
/* Details of the last failure of any call on the model (or on its optimizer, Hessians, QAT state,
   checkpoints); valid until the next call. "no model" for NULL. */
UTGDEF const char *utg_model_message(const utg_model *m);
UTGDEF const utg_config *utg_model_config(const utg_model *m); /* the resolved config */
UTGDEF const utg_plan *utg_model_plan(const utg_model *m); /* the plan that runs now */
UTGDEF int utg_model_plan_count(const utg_model *m);        /* plans the schedule can reach */
UTGDEF const utg_plan *utg_model_plan_at(const utg_model *m, int index); /* NULL if out of range */
UTGDEF int utg_model_phase(const utg_model *m);             /* index of the plan that runs now */
UTGDEF int utg_model_physical_blocks(const utg_model *m); /* blocks with their own matrices */
/* The phase the schedule asks for at `step` with `train_frac` of training done (see
   utg_train_frac); phases only move forward. */
UTGDEF int utg_model_schedule_phase(const utg_model *m, int step, double train_frac);
/* Switch to a phase. activate = 1 is the schedule's switch during training: the untied repeat MLPs
   that the phases from the current one up to `phase` start using are first copied from their
   shared MLPs (PR #1204). activate = 0 only selects the plan (evaluation, resuming). Allocates
   nothing: every plan's activations were reserved together. */
UTGDEF utg_result utg_model_set_phase(utg_model *m, int phase, int activate);
/* One line describing a plan, e.g. "13 virtual layers: 0 1 2 3 4 5 | 4 5 6 7 8 9 10" (the
   physical block of each virtual layer, with `|` before the first decoder layer, `=` before the
   first two-lane layer and `'` after a layer with an untied repeat MLP); truncated to buf_size.
   Returns buf. */
UTGDEF const char *utg_plan_describe(const utg_plan *p, char *buf, size_t buf_size);
UTGDEF utg_backend *utg_model_backend(utg_model *m); /* the backend every op of the model runs on */

/* The tensor table, in state_dict order (train_gpt.py's GPT, then the recurrence features' own
   tensors). The infos live as long as the model. */
UTGDEF int utg_model_tensor_count(const utg_model *m);
UTGDEF const utg_tensor_info *utg_model_tensor(const utg_model *m, int index); /* NULL if out of range */
UTGDEF int utg_model_find_tensor(const utg_model *m, const char *name); /* -1 if none */
UTGDEF size_t utg_model_param_count(const utg_model *m); /* sum of numel, no padding */
UTGDEF size_t utg_model_arena_floats(const utg_model *m);   /* arena length with padding */
/* Backend pointers to the parameter and gradient arenas (same layout). */
UTGDEF float *utg_model_params(utg_model *m);
UTGDEF float *utg_model_grads(utg_model *m);

/* Re-initialise every parameter as train_gpt.py does, from `seed` (deterministic, and the same on
   every platform: the RNG is the library's own). utg_model_create has already done this with
   SEED; the optimizer state is not touched (see utg_optim_reset). */
UTGDEF utg_result utg_model_init_params(utg_model *m, uint64_t seed);
/* The model's two arenas, laid out alike: the parameters and their gradients. */
typedef enum utg_arena { UTG_ARENA_PARAMS = 0, UTG_ARENA_GRADS = 1 } utg_arena;
/* Copy one tensor (or the whole arena when index < 0) between host memory and the model. n_floats
   must equal the tensor's numel (utg_model_arena_floats() for the whole arena, padding included),
   else UTG_ERR_INVALID with a message and nothing copied. */
UTGDEF utg_result utg_model_get(utg_model *m, utg_arena which, int index, float *host_dst, size_t n_floats);
UTGDEF utg_result utg_model_set(utg_model *m, utg_arena which, int index, const float *host_src,
                                size_t n_floats);

/* The storage type of the model's activations (ACTIVATION_DTYPE resolved on its backend), and the
   bytes per token its activation arena takes, as it is (dtype = that type) or would be with the
   other type (UTG_DT_F32 or UTG_DT_BF16): after utg_model_reserve or the first forward, 0 before. */
UTGDEF utg_dtype utg_model_activation_dtype(const utg_model *m);
UTGDEF double utg_model_activation_bytes_per_token(const utg_model *m, utg_dtype dtype);
/* Allocate activations for batches of up to n_seqs sequences of TRAIN_SEQ_LEN. The first forward
   call does this when needed; calling it up front keeps all allocation out of the step loop.
   Capacity only grows; a larger batch later reallocates (and drops the saved activations).
   UTG_ERR_INVALID for n_seqs <= 0 or a batch over INT32_MAX tokens, UTG_ERR_NOMEM. */
UTGDEF utg_result utg_model_reserve(utg_model *m, int n_seqs);
/* Forward over n_seqs rows of inputs/targets (host arrays, n_seqs*TRAIN_SEQ_LEN ids each).
   Activations are kept for utg_model_backward, and the mean cross-entropy (nats) is added to the
   step's loss sum on the backend (utg_optim_step reads it: utg_optim_last_loss). loss NULL: the
   call does not wait for the backend (a training step's forwards). Otherwise the mean is also
   downloaded to *loss (one wait), and a non-finite loss is still written there and returned as
   UTG_ERR_BACKEND. Any id outside [0, VOCAB_SIZE) is refused before anything runs
   (UTG_ERR_MISMATCH). */
UTGDEF utg_result utg_model_forward(utg_model *m, const int32_t *inputs, const int32_t *targets,
                                    int n_seqs, double *loss);
/* Forward without gradients, for evaluation: n_seqs rows of seq_len tokens (any length; RoPE
   tables for a length other than TRAIN_SEQ_LEN are built on first use). token_losses (host, may be
   NULL) receives the n_seqs*seq_len per-position losses in nats; *loss (may be NULL) gets their
   mean, summed on the backend. */
UTGDEF utg_result utg_model_eval(utg_model *m, const int32_t *inputs, const int32_t *targets, int n_seqs,
                                 int seq_len, float *token_losses, double *loss);
/* Backward of loss_scale * (mean loss of the last forward): ADDS into the gradient arena, so that
   micro-batches accumulate (loss_scale = 1 / GRAD_ACCUM_STEPS gives train_gpt.py's mean). Needs a
   successful utg_model_forward (not utg_model_eval, and no phase switch since); one backward per
   forward, since the backward reuses the logits buffer. UTG_ERR_INVALID otherwise. */
UTGDEF utg_result utg_model_backward(utg_model *m, float loss_scale);
/* Zero the gradient arena: once per optimizer step, before its first backward. */
UTGDEF void utg_model_zero_grads(utg_model *m);

/* ------------------------------------------------------------------------------------------------
// >>optim
   Muon for the block matrices, Adam(W) for the rest, split as train_gpt.py splits them:
   MATRIX tensors (unless a CONTROL_TENSOR_NAME_PATTERNS substring matches the name) go to Muon;
   the embedding to Adam with TIED_EMBED_LR (EMBED_LR untied) and EMBED_WD; the untied head to
   Adam with HEAD_LR; every CONTROL tensor to Adam with SCALAR_LR. Both wd knobs are decoupled
   (W *= 1 - lr*wd before the update). Every array lives in backend memory and every update goes
   through the backend table; the state arenas share the parameter arena's layout.
   One training step, in train_gpt.py's order (examples/train.c runs exactly this):
       scale = utg_lr_scale(cfg, step, elapsed_ms);        (or utg_lr_scale_phase with a depth plan)
       phase switch if utg_model_schedule_phase asks for a later one (utg_model_set_phase(m, p, 1));
       utg_qat_begin (when QAT is on); utg_model_zero_grads;
       GRAD_ACCUM_STEPS x { utg_loader_next; utg_model_forward; utg_model_backward(m, 1 / steps) };
       utg_qat_end; utg_optim_step(o, step, scale, &norm); utg_optim_average(o, step, scale);
   and after the last step utg_optim_apply_average before the final evaluation and export.
   ------------------------------------------------------------------------------------------------ */

typedef struct utg_optim utg_optim;

/* The optimizer reads its settings from the model's resolved config, assigns every tensor to its
   group once, and allocates its arenas on the model's backend (the EMA and SWA arenas only when
   those knobs are on). The model must outlive it. *out is NULL on failure (UTG_ERR_NOMEM). The
   moments start at zero and the EMA at the current parameters. */
UTGDEF utg_result utg_optim_create(utg_model *m, utg_optim **out);
UTGDEF void utg_optim_destroy(utg_optim *o); /* NULL does nothing */
/* One optimizer step from the model's gradient arena. `step` counts finished steps (0 for the
   first) and drives the Muon momentum warmup; lr_scale multiplies every group's base LR (see
   utg_lr_scale). With GRAD_CLIP_NORM > 0 the gradients are clipped as clip_grad_norm_ does. The
   global gradient norm before clipping goes to *grad_norm when it is not NULL. The step waits for
   the backend once, to read the norm and the loss sum of the step's forwards together. A
   non-finite norm or loss is refused before anything changes (UTG_ERR_BACKEND, with the norm
   still written and the message naming which), so the caller can roll back; step < 0 or
   lr_scale < 0 (or NaN) is UTG_ERR_INVALID. The gradients are left clipped, not zeroed. */
UTGDEF utg_result utg_optim_step(utg_optim *o, int step, double lr_scale, double *grad_norm);
/* The mean of the losses of the training forwards (utg_model_forward) since utg_model_zero_grads,
   as the last utg_optim_step read them together with the gradient norm: the step's train_loss
   without a wait of its own. NaN before the first step or when the step had no forward. */
UTGDEF double utg_optim_last_loss(const utg_optim *o);
/* After each step: update the EMA (EMA_ENABLED) and take an SWA sample (SWA_ENABLED, every
   SWA_EVERY steps once lr_scale < SWA_START_LR_FRAC). `step` counts finished steps. */
UTGDEF void utg_optim_average(utg_optim *o, int step, double lr_scale);
/* Load the average into the model's parameters: the EMA when enabled (it wins over SWA, as in the
   records), else the SWA mean when it has samples. Returns which average it loaded. */
typedef enum utg_average { UTG_AVERAGE_NONE = 0, UTG_AVERAGE_EMA = 1, UTG_AVERAGE_SWA = 2 } utg_average;
UTGDEF utg_average utg_optim_apply_average(utg_optim *o);
/* Back to the state of a fresh optimizer (zero moments, EMA = current parameters, no SWA): what
   train_gpt.py does after its warmup steps, together with restoring the initial parameters. */
UTGDEF void utg_optim_reset(utg_optim *o);

/* Optimizer state for checkpoints: four arenas, each utg_model_arena_floats() long, and the
   counters. */
typedef enum utg_optim_arena {
    UTG_OPTIM_MOMENTUM = 0,      /* Muon momentum, or Adam's first moment */
    UTG_OPTIM_SECOND_MOMENT = 1, /* Adam's second moment */
    UTG_OPTIM_EMA = 2,           /* the exponential moving average of the parameters */
    UTG_OPTIM_SWA = 3            /* the running sum of SWA samples */
} utg_optim_arena;
#define UTG_OPTIM_ARENAS 4
/* Copy a whole arena to or from host memory: n_floats must be utg_model_arena_floats()
   (UTG_ERR_MISMATCH otherwise); EMA and SWA exist only when enabled (UTG_ERR_INVALID otherwise). The
   counters are the Adam step count (its bias correction) and the number of SWA samples summed. */
UTGDEF utg_result utg_optim_get_arena(utg_optim *o, utg_optim_arena which, float *host_dst, size_t n_floats);
UTGDEF utg_result utg_optim_set_arena(utg_optim *o, utg_optim_arena which, const float *host_src,
                                      size_t n_floats);
UTGDEF void utg_optim_get_counters(const utg_optim *o, int64_t *adam_steps, int64_t *swa_count);
UTGDEF void utg_optim_set_counters(utg_optim *o, int64_t adam_steps, int64_t swa_count);

/* Schedules, exactly as train_gpt.py computes them.
   LR scale: with WARMDOWN_FRAC > 0, frac = elapsed / (cap - GPTQ_RESERVE_SECONDS) under a wallclock
   cap (step / ITERATIONS without one) and scale = max((1 - frac) / WARMDOWN_FRAC, MIN_LR) once
   frac >= 1 - WARMDOWN_FRAC. Otherwise WARMDOWN_ITERS: under a cap the warmdown is
   WARMDOWN_ITERS * (elapsed / step) ms long and the scale is remaining / warmdown_ms inside it;
   without a cap the scale falls linearly over the last WARMDOWN_ITERS iterations. */
UTGDEF double utg_lr_scale(const utg_config *cfg, int step, double elapsed_ms);
/* The same, with the step time of a WARMDOWN_ITERS wallclock warmdown measured since the depth plan
   last switched (at phase_step, phase_ms; PR #1088): a deeper plan has slower steps, and the
   warmdown must start early enough for them. phase_step 0 is utg_lr_scale. */
UTGDEF double utg_lr_scale_phase(const utg_config *cfg, int step, double elapsed_ms, int phase_step,
                                 double phase_ms);
/* Fraction of training done: elapsed / (cap - GPTQ_RESERVE_SECONDS) under a wallclock cap, else
   step / ITERATIONS (the frac of WARMDOWN_FRAC and of ENABLE_LOOPING_AT / LOOP_PHASE2_AT). */
UTGDEF double utg_train_frac(const utg_config *cfg, int step, double elapsed_ms);
/* Muon momentum at a step: linear from MUON_MOMENTUM_WARMUP_START to MUON_MOMENTUM. */
UTGDEF double utg_muon_momentum(const utg_config *cfg, int step);

/* Newton-Schulz orthogonalisation of X[rows, cols] in place (Frobenius-normalised first; a tall X is
   handled as its transpose). flags: UTG_NS_POLAR_EXPRESS selects the Polar Express per-step
   coefficients instead of (3.4445, -4.7750, 2.0315); UTG_NS_BF16 runs the matmuls with bf16 inputs
   and fp32 sums (train_gpt.py runs the iteration in bf16). scratch holds
   utg_newton_schulz_scratch(rows, cols) floats of backend memory. */
#define UTG_NS_POLAR_EXPRESS 1
#define UTG_NS_BF16 2
UTGDEF size_t utg_newton_schulz_scratch(int rows, int cols);
UTGDEF void utg_newton_schulz(utg_backend *be, float *X, int rows, int cols, int steps, int flags,
                              float *scratch);

/* ------------------------------------------------------------------------------------------------
// >>safetensors
   F32, F16 and BF16 on import; F32 on export. Import is strict: every model tensor must be present
   with its exact shape, and no other tensor may be (a "__metadata__" object is allowed).
   ------------------------------------------------------------------------------------------------ */

#define UTG_SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u)

/* Load the parameter arena from a safetensors file in memory. F16 and BF16 values are widened to
   fp32; a non-finite value is UTG_ERR_FORMAT, an unknown, missing or misshapen tensor
   UTG_ERR_MISMATCH, a malformed header UTG_ERR_FORMAT, each with the tensor's name in
   utg_model_message. Nothing changes unless every tensor checks. */
UTGDEF utg_result utg_model_load_safetensors(utg_model *m, const void *bytes, size_t size_bytes);
/* *out is allocated with the model's allocator; release it
   with utg_free(utg_model_allocator(m), p). Output is deterministic (tensor table order, fixed formatting).
 */
UTGDEF utg_result utg_model_save_safetensors(utg_model *m, utg_arena which, void **out, size_t *out_size);
UTGDEF const utg_allocator *utg_model_allocator(const utg_model *m); /* the allocator the model was given */

/* ------------------------------------------------------------------------------------------------
// >>data
   Parameter Golf token shards: 256 little-endian int32 header (magic 20240520, version 1,
   num_tokens, zeros), then num_tokens little-endian uint16 ids. The file size must match exactly.
   ------------------------------------------------------------------------------------------------ */

#define UTG_SHARD_MAGIC 20240520
#define UTG_SHARD_VERSION 1
#define UTG_SHARD_HEADER_BYTES 1024

/* Validate a shard in memory; *tokens points into `bytes` (little-endian uint16). */
UTGDEF utg_result utg_shard_parse(const void *bytes, size_t size_bytes, const uint8_t **tokens,
                                  size_t *n_tokens, utg_msg *msg);
/* Token `index` of a payload from utg_shard_parse (no bounds check: index < *n_tokens). */
UTGDEF uint16_t utg_shard_token(const uint8_t *tokens, size_t index);
/* Write a shard of n ids into out, which must be exactly UTG_SHARD_HEADER_BYTES + 2n bytes
   (UTG_ERR_INVALID otherwise, and for n > INT32_MAX). The bytes are what train_gpt.py's
   load_data_shard reads. */
UTGDEF utg_result utg_shard_write(const uint16_t *ids, size_t n, uint8_t *out, size_t out_size);

/* ------------------------------------------------------------------------------------------------
// >>loader
   Token datasets (globs of Parameter Golf shards) and the two training loaders: the sequential
   stream of train_gpt.py and the shuffled windows of the records (PR #1394). Everything here reads
   files, so it sits under #ifndef UTG_NO_STDIO.

   PORTABILITY
       Glob expansion uses POSIX glob() on Unix and macOS (<glob.h> is usable in strict -std=c99 on
       glibc). Elsewhere a pattern without wildcards is taken as one path and a pattern with `*`,
       `?` or `[` is refused with UTG_ERR_UNSUPPORTED.
       Offsets past 2 GiB: fseeko/ftello are used when the including file asked for POSIX
       (_POSIX_C_SOURCE >= 200112L or _XOPEN_SOURCE >= 500; define _FILE_OFFSET_BITS 64 too on
       32-bit systems), _fseeki64 on Windows, else fseek with a `long` offset, which covers every
       shard on LP64 systems and is refused with a clear message where `long` is too small.

   THREADS
       A dataset keeps one open FILE and a scratch buffer: calls on one dataset (and on the loaders
       that read it) must not run concurrently. Loaders are single-threaded and fully determined by
       (dataset, kind, seq_len, rank, world_size, seed), whatever the OpenMP thread count.
   ------------------------------------------------------------------------------------------------ */
typedef struct utg_dataset utg_dataset;
typedef struct utg_loader utg_loader;
#ifndef UTG_NO_STDIO

/* A dataset: the shard files a glob names, sorted bytewise (Python's sorted(glob.glob(...))), each
   header checked against its file size when opened. Token offsets below count in the concatenated
   stream of all shards, in that order. */

/* Expand `pattern` (e.g. "data/fineweb_train_*.bin"), sort, open every shard and validate its
   1024-byte header against the file size without reading payloads. No match -> UTG_ERR_IO naming
   the pattern; a bad header -> UTG_ERR_FORMAT naming the file. vocab_size > 0 makes every read check
   that ids are < vocab_size (0: no check). The dataset reads shards lazily, one open file at a time. */
UTGDEF utg_result utg_dataset_open(const char *pattern, int vocab_size,
                                   const utg_allocator *alloc, utg_dataset **out, utg_msg *msg);
UTGDEF void utg_dataset_close(utg_dataset *ds); /* closes its file; NULL does nothing */
UTGDEF int utg_dataset_shard_count(const utg_dataset *ds);
UTGDEF uint64_t utg_dataset_shard_tokens(const utg_dataset *ds, int shard); /* 0 if out of range */
UTGDEF uint64_t utg_dataset_tokens(const utg_dataset *ds);                  /* all shards */
UTGDEF const char *utg_dataset_shard_path(const utg_dataset *ds, int shard); /* NULL if out of range */
/* Read n ids from stream offset `offset` (crossing shard ends) into out. Past the end ->
   UTG_ERR_INVALID; an id >= vocab_size -> UTG_ERR_FORMAT naming the shard and the token; a short read
   (the file changed since it was opened) -> UTG_ERR_IO. */
UTGDEF utg_result utg_dataset_read(utg_dataset *ds, uint64_t offset, size_t n, int32_t *out, utg_msg *msg);
/* The validation stream as Parameter Golf scores it: all tokens truncated to
   ((N - 1) / seq_len) * seq_len + 1, so that (N' - 1) / seq_len sequences of inputs and shifted
   targets fit. Fewer than seq_len + 1 tokens -> UTG_ERR_INVALID. *out is allocated with `alloc`;
   release it with utg_free and the same allocator. */
UTGDEF utg_result utg_dataset_read_val(utg_dataset *ds, int seq_len, int32_t **out, size_t *n_out,
                                       const utg_allocator *alloc, utg_msg *msg);

/* Training loaders. Both fill inputs and targets [n_seqs * seq_len] for one rank, targets being the
   inputs shifted by one token.
   SEQUENTIAL is train_gpt.py's TokenStream + DistributedTokenLoader: the stream is every shard in
     order, wrapping to shard 0 after the last one, forever. Each call takes one contiguous chunk of
     (n_seqs * seq_len + 1) * world_size tokens; rank r keeps the r-th span of n_seqs * seq_len + 1
     tokens. Sequences cross document and shard boundaries, and a chunk may wrap.
   SHUFFLED is PR #1394's ShuffledSequenceLoader, made deterministic: rank r owns shards r,
     r + world_size, ...; in each epoch every owned shard gets a random phase and a random order of
     its windows; each sequence picks a shard with probability proportional to the windows it has
     left and takes its next window; when every owned shard is used up, a new epoch begins. It keeps
     4 bytes per window of the owned shards (one rank over 80 shards of 10^8 tokens at seq_len 2048:
     16 MB).
   The dataset must outlive the loader. */
typedef enum utg_loader_kind { UTG_LOADER_SEQUENTIAL = 0, UTG_LOADER_SHUFFLED = 1 } utg_loader_kind;

/* seed is used by SHUFFLED only. Fails with UTG_ERR_INVALID (and a message) when the rank owns no
   usable data: an empty dataset (SEQUENTIAL), or no owned shard of at least seq_len + 1 tokens. */
UTGDEF utg_result utg_loader_create(utg_dataset *ds, utg_loader_kind kind, int seq_len, int rank,
                                    int world_size, uint64_t seed, const utg_allocator *alloc,
                                    utg_loader **out, utg_msg *msg);
UTGDEF void utg_loader_destroy(utg_loader *ld); /* NULL does nothing; the dataset stays open */
/* Fill inputs and targets [n_seqs * seq_len] each (host arrays). On failure (a read error, an id
   past the dataset's vocab_size) the loader does not move and msg says why. */
UTGDEF utg_result utg_loader_next(utg_loader *ld, int32_t *inputs, int32_t *targets, int n_seqs,
                                  utg_msg *msg);
/* For logs. SHUFFLED: the current epoch (0 first). SEQUENTIAL: how many times the stream has
   wrapped from the last shard back to the first. */
UTGDEF uint64_t utg_loader_epoch(const utg_loader *ld);
/* Position as bytes, for checkpoints: a versioned little-endian record (layout in the
   implementation) that names the kind, seq_len, rank, world size, seed and every shard's token count,
   and ends with a checksum. restore refuses a corrupt record (UTG_ERR_FORMAT) or one from another
   setup (UTG_ERR_MISMATCH) with a message, and then leaves the loader as it was. */
UTGDEF size_t utg_loader_state_size(const utg_loader *ld); /* bytes save writes; constant per loader */
/* buf_size must be at least utg_loader_state_size (UTG_ERR_INVALID otherwise). */
UTGDEF utg_result utg_loader_save(const utg_loader *ld, void *buf, size_t buf_size);
UTGDEF utg_result utg_loader_restore(utg_loader *ld, const void *buf, size_t size, utg_msg *msg);
/* Back to the state right after create (Parameter Golf rebuilds its loader after the warmup steps). */
UTGDEF void utg_loader_reset(utg_loader *ld);

#endif /* UTG_NO_STDIO */

/* ------------------------------------------------------------------------------------------------
// >>checkpoint
   The whole training state in one file, so that a resumed run continues bit for bit: parameters,
   optimizer moments, EMA and SWA, Adam/SWA counters, loader position, step, training time. Layout
   (little-endian): "UTGCKPT1" | u32 version | u32 section count | u64 file size | sections, each
   { 4-byte tag, u32 0, u64 size, payload, zero padding to 8 } | u32 CRC-32 of everything before
   it | u32 0. Sections: CONF (the resolved config as KEY=VALUE lines), STAT (counters), PARM and
   OPT0..OPT3 (fp32 arenas), LOAD (loader state). STAT also holds the depth-plan phase the model
   was in, restored without re-copying untied MLPs. Loading checks everything before changing
   anything; the model knobs (shape, recurrence) must match the running model's.
   ------------------------------------------------------------------------------------------------ */

typedef struct utg_train_state {
    int64_t step;        /* optimizer steps done */
    double train_ms;     /* training time so far (validation excluded) */
    int64_t tokens_seen; /* training tokens consumed */
} utg_train_state;

/* The version utg_checkpoint_save writes: its STAT holds the depth-plan phase. utg_checkpoint_load
   also reads version 1, whose STAT ends before the phase (the model resumes in phase 0). */
#define UTG_CHECKPOINT_VERSION 2u

/* Usage: save after an optimizer step (and its utg_optim_average), when the model, optimizer and
   loader agree on the step; write the bytes with utg_write_file so that a crash never leaves half a
   checkpoint. To resume, build the model, optimizer and loader from the same config, read the file
   and call utg_checkpoint_load, then continue at ts->step. */
/* *out is allocated with the model's allocator (release with utg_free(utg_model_allocator(m), p)).
   loader may be NULL (no loader state is stored). OPT2 and OPT3 are written only when EMA and SWA
   are on. Errors: UTG_ERR_INVALID for a NULL argument or a loader that cannot save, UTG_ERR_NOMEM. */
UTGDEF utg_result utg_checkpoint_save(utg_model *m, utg_optim *o, const utg_loader *loader,
                                      const utg_train_state *ts, void **out, size_t *out_size);
/* Refused with UTG_ERR_FORMAT (corrupt, truncated, bad CRC) or UTG_ERR_MISMATCH (another model,
   another optimizer setup, another loader), the message in utg_model_message(m); nothing changes
   unless everything checks. */
UTGDEF utg_result utg_checkpoint_load(utg_model *m, utg_optim *o, utg_loader *loader, utg_train_state *ts,
                                      const void *bytes, size_t size);
/* CRC-32 (IEEE, as zlib's crc32): crc = utg_crc32(0, data, n); chain blocks by passing the previous
   result as crc. Used by checkpoints and the artifact envelope. */
UTGDEF uint32_t utg_crc32(uint32_t crc, const void *data, size_t n);

/* ------------------------------------------------------------------------------------------------
// >>tokenizer
   Tokenizer metadata for byte counting and decoding; the fp64 bits-per-byte accumulator.
   The score of Parameter Golf is bits per byte of the validation text, so the tokenizer's only
   job here is to say how many UTF-8 bytes each predicted token stands for. The rule is
   train_gpt.py's build_sentencepiece_luts: a target token t after the token p counts
       base_bytes[t] + (has_leading_space[t] && !is_boundary[p])
   where base_bytes is the piece's text length without a leading "▁" (1 for a byte piece, 0 for
   CONTROL, UNKNOWN and UNUSED pieces), has_leading_space says the piece starts with "▁", and a
   boundary piece (CONTROL, UNKNOWN, UNUSED, and every id past the model) swallows the space of the
   token after it. Usage for a validation pass:
       utg_tokenizer_load_spm_file(&tok, TOKENIZER_PATH, VOCAB_SIZE, NULL, &msg);
       utg_bpb acc = {0};  per batch: utg_model_eval(... token_losses ...);
                           utg_bpb_add(&acc, &tok, inputs, targets, token_losses, n);
       val_loss = utg_bpb_loss(&acc); val_bpb = utg_bpb_value(&acc); utg_tokenizer_free(&tok);
   ------------------------------------------------------------------------------------------------ */


#ifndef UTG_MAX_TOKENIZER_PIECES
#define UTG_MAX_TOKENIZER_PIECES (1 << 20) /* pieces in a model, and the largest table size */
#endif
#ifndef UTG_MAX_TOKENIZER_TEXT
#define UTG_MAX_TOKENIZER_TEXT (64u << 20) /* total bytes of piece text, NULs included */
#endif
#ifndef UTG_MAX_TOKENIZER_FILE
#define UTG_MAX_TOKENIZER_FILE (256u << 20) /* utg_tokenizer_load_spm_file refuses larger files */
#endif
#define UTG_MAX_PIECE_BYTES 65535 /* one piece's text; base_bytes is uint16 */

typedef enum utg_tokenizer_kind { UTG_TOKENIZER_SPM = 1, UTG_TOKENIZER_BYTE260 = 2 } utg_tokenizer_kind;

/* sentencepiece_model.proto ModelProto.SentencePiece.Type values */
typedef enum utg_piece_type {
    UTG_PIECE_NORMAL = 1,
    UTG_PIECE_UNKNOWN = 2,
    UTG_PIECE_CONTROL = 3,
    UTG_PIECE_USER_DEFINED = 4,
    UTG_PIECE_UNUSED = 5,
    UTG_PIECE_BYTE = 6
} utg_piece_type;

typedef struct utg_tokenizer {
    int kind;           /* utg_tokenizer_kind */
    int n_pieces;       /* pieces in the model (sp.vocab_size()) */
    int table_size;     /* length of the three tables: max(n_pieces, requested table size) */
    /* Special ids as SentencePieceProcessor reports them (sp.bos_id() etc.): the CONTROL piece
       named by trainer_spec.bos_piece (default "<s>"), "</s>", "<pad>", and the UNKNOWN piece;
       -1 when there is none. spm_train writes the numeric trainer_spec ids to match. */
    int bos_id, eos_id, unk_id, pad_id;
    /* sp.piece_to_id("▁") unless that is <unk>; -1 if the model has no standalone "▁" (Parameter
       Golf issue #897: without it every space costs three byte-fallback tokens). For byte260,
       the id of the space byte (36). */
    int space_piece_id;
    int model_type;     /* trainer_spec.model_type: 1 unigram, 2 bpe, 3 word, 4 char; 0 for byte260 */
    int byte_fallback;  /* trainer_spec.byte_fallback (1 for byte260) */
    uint8_t *is_boundary;       /* [table_size] */
    uint8_t *has_leading_space; /* [table_size] */
    uint16_t *base_bytes;       /* [table_size] */
    /* piece table for decoding / inspection: */
    char *piece_text;       /* all piece strings, each NUL-terminated */
    uint32_t *piece_offset; /* [n_pieces] into piece_text */
    float *piece_score;     /* [n_pieces] */
    uint8_t *piece_type;    /* [n_pieces] utg_piece_type */
    utg_allocator allocator;
} utg_tokenizer;

/* Parse a SentencePiece .model file held in memory. table_size >= 0 asks for tables at least that
   long (train_gpt.py passes VOCAB_SIZE); ids from n_pieces up are boundary ids worth 0 bytes.
   alloc may be NULL. On failure *tok is zeroed and msg says why. */
UTGDEF utg_result utg_tokenizer_load_spm(utg_tokenizer *tok, const void *model_bytes, size_t size,
                                         int table_size, const utg_allocator *alloc, utg_msg *msg);
/* Parameter Golf's pure-byte vocabulary: 0 <pad>, 1 <s>, 2 </s>, 3 <unk>, then byte b at id b + 4. */
UTGDEF utg_result utg_tokenizer_byte260(utg_tokenizer *tok, int table_size, const utg_allocator *alloc,
                                        utg_msg *msg);
/* Frees the tables with the tokenizer's allocator and zeroes *tok; a zeroed or freed tokenizer may be
   freed again. */
UTGDEF void utg_tokenizer_free(utg_tokenizer *tok);
/* The piece text of id (SentencePiece spelling, "▁" for a space); NULL if id is out of range. */
UTGDEF const char *utg_tokenizer_piece(const utg_tokenizer *tok, int id);
/* The byte sum of n (prev, target) pairs by the rule above. Ids outside [0, table_size) count as
   the padding ids past n_pieces do (boundary, 0 bytes); utg_bpb_add refuses them instead. */
UTGDEF uint64_t utg_tokenizer_count_bytes(const utg_tokenizer *tok, const int32_t *prev,
                                          const int32_t *target, size_t n);
#ifndef UTG_NO_STDIO
/* utg_tokenizer_load_spm on a file of at most UTG_MAX_TOKENIZER_FILE bytes; the message names the
   path. */
UTGDEF utg_result utg_tokenizer_load_spm_file(utg_tokenizer *tok, const char *path, int table_size,
                                              const utg_allocator *alloc, utg_msg *msg);
#endif

/* fp64 bits-per-byte accumulator (zero-initialise). The fields are plain sums, so accumulators of
   different threads or ranks combine by adding them field by field. */
typedef struct utg_bpb {
    double loss_sum; /* sum of per-token cross-entropy, nats */
    double tokens;   /* scored positions */
    double bytes;    /* bytes of the scored targets */
} utg_bpb;

/* Add n scored positions: prev[i] is the token before target[i] (the input token at that
   position), loss[i] its cross-entropy in nats. Any id outside [0, table_size) gives
   UTG_ERR_INVALID and adds nothing. */
UTGDEF utg_result utg_bpb_add(utg_bpb *acc, const utg_tokenizer *tok, const int32_t *prev,
                              const int32_t *target, const float *loss, size_t n);
UTGDEF double utg_bpb_loss(const utg_bpb *acc);  /* loss_sum / tokens (val_loss); 0 if empty */
UTGDEF double utg_bpb_value(const utg_bpb *acc); /* (val_loss / ln 2) * tokens / bytes; 0 if no bytes */

/* A whole validation pass, as train_gpt.py's eval_val (disjoint windows) or the records' sliding
   windows score it. The windows are numbered in stream order, and this process scores window w
   when w % world == rank (world 0 or 1: every window), so the ranks' accumulators, added field by
   field (an fp64 all-reduce), give the single-process sums. */
typedef struct utg_eval_opts {
    int seq_len;    /* window length in tokens */
    int stride;     /* 0: disjoint windows over the stream cut to whole windows; > 0: a window every
                       stride tokens while ws + seq_len - stride < n_tok - 1, the first scoring all
                       its positions and each later one its last stride (the tail window is
                       shortened to the stream) */
    int batch_seqs; /* windows per forward */
    int rank, world;
} utg_eval_opts;
/* The options a config asks for: EVAL_SEQ_LEN (0: TRAIN_SEQ_LEN), EVAL_STRIDE, and VAL_BATCH_SIZE
   tokens a forward, at most max_batch_tokens (a training micro-batch, say; 0: no cap), at least
   one window; rank 0 of world 1. */
UTGDEF utg_eval_opts utg_eval_opts_from_config(const utg_config *cfg, int64_t max_batch_tokens);
/* Scores tokens[0 .. n_tok) (inputs tokens[i], targets tokens[i + 1]) with utg_model_eval and adds
   this rank's windows to acc (zero it first). UTG_ERR_INVALID (with the model's message) for bad
   options or a stream shorter than one disjoint window; the model's error otherwise. */
UTGDEF utg_result utg_model_eval_bpb(utg_model *m, const utg_tokenizer *tok, const int32_t *tokens,
                                     size_t n_tok, const utg_eval_opts *opts, utg_bpb *acc);

/* ------------------------------------------------------------------------------------------------
// >>quant
   Host-side quantizers, on a copy of the weights. Per-row symmetric intN: for
   bits N in 2..8, r = 2^(N-1) - 1, scale_r = max(clip_r / r, 1 / r), q = clamp(round(clamp(w,
   +-clip_r) / scale_r), -r, r) with round half to even, one symbol per int8; the scale is stored as
   fp16 and dequantization is w = q * scale (train_gpt.py's quantize_float_tensor, which computes q
   with the fp32 scale). SDClip keeps its scale as computed (floor 1e-10, as PR #1394), since its
   rows are often narrower than 1 / r. The clip of a row comes from one of:
   ------------------------------------------------------------------------------------------------ */

typedef enum utg_clip_mode {
    UTG_CLIP_MAX = 0,    /* the row's max |w| */
    UTG_CLIP_PERCENTILE, /* quantile(|w_row|, param) with linear interpolation, as torch.quantile;
                            train_gpt.py: param = 0.9999984 */
    UTG_CLIP_SDCLIP,     /* param * std(row) (unbiased std, as torch.std): SDClip */
    UTG_CLIP_SEARCH      /* GPTQ-lite (PR #414): the quantile in {0.999, 0.9995, 0.9999, 0.99999, 1}
                            with the lowest reconstruction error, one choice per matrix */
} utg_clip_mode;

typedef struct utg_quant_spec {
    int bits;           /* 2..8 */
    utg_clip_mode clip;
    double param;       /* the percentile or the SDClip k */
} utg_quant_spec;

/* Quantize W[rows, cols] into q (rows*cols symbols) and scales (rows fp16). Refuses bad specs and
   non-finite weights with UTG_ERR_INVALID and a message. *chosen (may be NULL) receives the clip
   parameter used (the percentile UTG_CLIP_SEARCH picked, else spec->param). */
UTGDEF utg_result utg_quantize_rows(const float *W, int rows, int cols, const utg_quant_spec *spec, int8_t *q,
                                    uint16_t *scales, double *chosen, utg_msg *msg);
/* Full-Hessian GPTQ; Frantar et al. of W[rows, cols] given H[cols, cols] = sum of X^T X
   over the calibration inputs of this linear (any positive scale). Dead columns (zero diagonal)
   are zeroed; H gets 1% of its mean diagonal as damping (`damp`, 0 = 0.01); columns run in
   act-order (diagonal of H descending) in blocks of 128, each rounded with the row's fixed fp16
   scale (from spec's clip) and its error spread over the columns not yet quantized through the
   upper Cholesky factor of H^-1. Output as utg_quantize_rows. H is not modified. */
UTGDEF utg_result utg_gptq_rows(const float *W, int rows, int cols, const double *H,
                                const utg_quant_spec *spec, double damp, int8_t *q, uint16_t *scales,
                                utg_msg *msg);
/* W[r, c] = q[r, c] * fp16 scales[r]: what a loader of the artifact computes. */
UTGDEF void utg_dequantize_rows(const int8_t *q, const uint16_t *scales, int rows, int cols, float *W);
/* IEEE half floats, round to nearest even (overflow gives infinity, NaN stays NaN) */
UTGDEF uint16_t utg_f32_to_f16(float x);
UTGDEF float utg_f16_to_f32(uint16_t h);

/* ------------------------------------------------------------------------------------------------
// >>artifact
   The UTGA v1 artifact (docs/DESIGN.md "Artifact"): what a Parameter Golf submission ships.
   A 20-byte envelope (magic "UTGA", major version, codec, flags, raw_size, packed_size, CRC-32 of
   the decoded payload), then the payload as the codec packed it. The payload: a 16-byte header
   (minor u16, section count u16, plane alignment u16, zeros), a directory of 16-byte entries (tag,
   flags with bit 0 = critical, offset, size), then the sections, each 64-aligned, tiling the
   payload with zeroed padding: META (typed key/values), TENS (the tensor table), DATA (the planes)
   and ancillary sections such as PROV (provenance), which --strip drops. Q symbols are int8, one
   per byte; float and scale planes are byte-shuffled by element size. All integers little-endian.
   Brotli is not embedded: codecs are callbacks, with a default binding to libbrotli compiled under
   UTG_USE_BROTLI (link -lbrotlienc -lbrotlidec).
   Writing, at the end of training:
       utg_hessians_create; calibration forwards + utg_hessians_accumulate   (GPTQ_ENABLED only)
       utg_model_export(m, h, &codec, prov, plan, &bytes, &size, &report); utg_write_file
   Loading, in an evaluator that has only the file:
       utg_read_file_magic(path, "UTGA", 4, ...); utg_artifact_parse(bytes, size, NULL, NULL, &a, &msg);
       utg_model_create_from_artifact(a, NULL, &m); utg_artifact_free(a); then utg_model_eval.
   The parsed artifact owns a copy of the decoded payload: the file's bytes may be freed after
   parse, and the model owns its weights once created, so the artifact may go next.
   ------------------------------------------------------------------------------------------------ */

#define UTG_ARTIFACT_MAJOR 1
#define UTG_ARTIFACT_MINOR 0
#define UTG_ARTIFACT_ENVELOPE 20
#define UTG_ARTIFACT_ALIGN 64
#ifndef UTG_MAX_ARTIFACT_RAW
#define UTG_MAX_ARTIFACT_RAW (256u * 1024u * 1024u) /* cap on the decoded payload (16x a 16 MB budget) */
#endif
#define UTG_ARTIFACT_MAX_SECTIONS 32
#define UTG_ARTIFACT_MAX_KV 4096
#define UTG_ARTIFACT_MAX_TENSORS 65536
#define UTG_ARTIFACT_MAX_KEY 64     /* bytes of a META key */
#define UTG_ARTIFACT_MAX_ARRAY (1u << 24) /* elements of a META array or bytes of a string */
#define UTG_PARAM_GOLF_BUDGET 16000000 /* decimal bytes: artifact + code */

/* The codec id is the envelope's byte that says how the payload was packed: a loader picks its
   decoder by it (utg_codec_for_id), never by a file name. */
typedef enum utg_codec_id { UTG_CODEC_STORED = 0, UTG_CODEC_BROTLI = 1 } utg_codec_id;

/* A codec: compress writes at most *dst_size bytes and sets *dst_size to what it wrote;
   decompress must fill exactly dst_size bytes from n packed bytes, or fail. */
typedef struct utg_codec {
    int id; /* utg_codec_id, written into the envelope */
    const char *name; /* for reports and PROV, e.g. "brotli 1.0.9 q11 w24" */
    size_t (*max_packed)(size_t raw_size, void *user);
    utg_result (*compress)(const void *src, size_t n, void *dst, size_t *dst_size, void *user);
    utg_result (*decompress)(const void *src, size_t n, void *dst, size_t dst_size, void *user);
    void *user;
} utg_codec;

/* The identity codec (id 0): the payload as it is, for tests and for measuring the raw size. */
UTGDEF utg_codec utg_codec_stored(void);
/* The built-in codec with an envelope id: 1 and *out filled for stored, and for brotli when
   compiled with UTG_USE_BROTLI; 0 otherwise. */
UTGDEF int utg_codec_for_id(int id, utg_codec *out);
#ifdef UTG_USE_BROTLI
/* libbrotli with fixed parameters (quality 11, window 24, generic mode): identical input, identical
   bytes for one brotli version. */
UTGDEF utg_codec utg_codec_brotli(void);
#endif

/* The element types of a TENS entry (utg_dtype): F32, F16, BF16, or Q, int8 symbols in [-r, r]
   (r = 2^(qbits-1) - 1), one a byte, dequantized as symbol * scale with the scale layout of
   utg_scale_kind. */
typedef enum utg_scale_kind {
    UTG_SCALE_NONE = 0,   /* float tensors */
    UTG_SCALE_TENSOR = 1, /* one fp32 scale */
    UTG_SCALE_ROW = 2,    /* one fp16 scale per row (dims[0] rows) */
    UTG_SCALE_GROUP = 3   /* one fp16 scale per `group` consecutive elements */
} utg_scale_kind;
typedef enum utg_kv_type {
    UTG_KV_U32 = 0,
    UTG_KV_I32,
    UTG_KV_U64,
    UTG_KV_F32,
    UTG_KV_F64,
    UTG_KV_STR,
    UTG_KV_U32_ARRAY,
    UTG_KV_F32_ARRAY
} utg_kv_type;

/* One META entry of a parsed artifact. Scalars are in u (U32, U64), i (I32) or f (F32, F64);
   strings and arrays point into the payload (count bytes or elements, little-endian, unaligned:
   read them with utg_artifact_kv_u32 / _f32). */
typedef struct utg_artifact_kv {
    char key[UTG_ARTIFACT_MAX_KEY + 1];
    utg_kv_type type;
    uint64_t u;
    int64_t i;
    double f;
    const uint8_t *data;
    uint32_t count;
    const char *str; /* STR: a NUL-terminated copy (an embedded NUL ends it early; count is exact) */
} utg_artifact_kv;

/* One tensor: for the writer a description of host data, for a parsed artifact the view into its
   payload (values and scales unshuffled, ready to use). */
typedef struct utg_artifact_tensor {
    char name[UTG_MAX_NAME + 1];
    utg_dtype dtype;
    int qbits;                 /* 2..8 for UTG_DT_Q, else 0 */
    utg_scale_kind scale_kind; /* UTG_SCALE_NONE for floats; not NONE for UTG_DT_Q */
    int group;                 /* elements per scale with UTG_SCALE_GROUP */
    int ndim;                  /* 1..4 */
    int64_t dims[UTG_MAX_DIMS];
    const void *values;        /* F32: float, F16/BF16: uint16_t, Q: int8_t; numel of them */
    const void *scales;        /* TENSOR: one float; ROW/GROUP: uint16_t fp16 */
    /* filled by the parser and by utg_artifact_add_tensor */
    size_t numel, n_scales, values_size, scales_size;
    uint32_t values_offset, scales_offset; /* inside DATA */
} utg_artifact_tensor;

/* A directory entry of the payload: offset and size in payload bytes; a critical section with an
   unknown tag makes parse refuse the file, an ancillary one is skipped. */
typedef struct utg_artifact_section {
    char tag[5];
    uint32_t flags, offset, size; /* flags bit 0: critical */
} utg_artifact_section;

/* A parsed artifact: the envelope's fields, the directory, META and TENS decoded into arrays, and
   views into the decoded payload. Everything is owned by the artifact and freed by
   utg_artifact_free; the pointers are valid until then. */
typedef struct utg_artifact {
    /* envelope */
    int major, codec, flags;
    uint32_t raw_size, packed_size, crc;
    /* payload */
    int minor, n_sections, n_kv, n_tensors;
    utg_artifact_section sections[UTG_ARTIFACT_MAX_SECTIONS];
    utg_artifact_kv *kv;
    utg_artifact_tensor *tensors;
    const uint8_t *payload; /* raw_size bytes, 64-aligned: the decoded payload with its float and
                               scale planes already un-shuffled in place (so no longer the bytes the
                               CRC covers; decode the file again to see those) */
    uint32_t data_offset, data_size;
    /* private */
    utg_allocator alloc;
    void *block, *strings;
} utg_artifact;

/* Parse and check an artifact (the loader checklist of docs/FORMAT.md: envelope, decode into exactly
   raw_size, CRC, directory tiling, known critical tags, META and TENS syntax, plane bounds and overlap,
   symbol ranges, finite scales, the required keys and the schedule's block indices). `decoder` decodes a
   packed payload whose envelope names its id; NULL uses utg_codec_brotli when compiled in. Every
   failure returns a utg_result with a message; nothing is allocated then. */
UTGDEF utg_result utg_artifact_parse(const void *bytes, size_t size, const utg_codec *decoder,
                                     const utg_allocator *alloc, utg_artifact **out, utg_msg *msg);
/* Frees a parsed artifact (and the payload every view in it points into); NULL does nothing. */
UTGDEF void utg_artifact_free(utg_artifact *a);
UTGDEF int utg_artifact_find_kv(const utg_artifact *a, const char *key);     /* -1 if none */
UTGDEF int utg_artifact_find_tensor(const utg_artifact *a, const char *name); /* -1 if none */
UTGDEF uint32_t utg_artifact_kv_u32(const utg_artifact_kv *kv, uint32_t index); /* element of a U32 array */
UTGDEF float utg_artifact_kv_f32(const utg_artifact_kv *kv, uint32_t index);    /* element of an F32 array */
/* Dequantize (or convert) tensor `index` into n floats: w = q * scale for Q, F16 and BF16 widened,
   F32 copied. n must be the tensor's numel (UTG_ERR_MISMATCH otherwise). */
UTGDEF utg_result utg_artifact_tensor_floats(const utg_artifact *a, int index, float *dst, size_t n);
/* Order-0 entropy of a Q tensor's symbols in bits per symbol (0 for float tensors). */
UTGDEF double utg_artifact_tensor_entropy(const utg_artifact *a, int index);
/* The model config stored in META (utg.config.*), resolved. String knobs point into the artifact,
   so it must outlive *cfg (utg_model_create copies them). Unknown utg.config keys are ignored (an
   artifact from a newer writer still loads); a known key of the wrong type is UTG_ERR_FORMAT. */
UTGDEF utg_result utg_artifact_config(const utg_artifact *a, utg_config *cfg, utg_msg *msg);

/* The writer: collect keys, tensors and ancillary sections (all copied), then write. The bytes
   depend only on what was added and the codec. */
typedef struct utg_artifact_writer utg_artifact_writer;
/* The writer copies everything it is given, so the caller's buffers may go away after each add.
   Failed adds leave the writer as it was, with the reason in utg_artifact_writer_message. */
UTGDEF utg_result utg_artifact_writer_create(const utg_allocator *alloc, utg_artifact_writer **out);
UTGDEF void utg_artifact_writer_destroy(utg_artifact_writer *w); /* NULL does nothing */
/* value: a uint32_t, int32_t, uint64_t, float or double for scalars; count chars for a string;
   count uint32_t or float for arrays. Keys are dotted lower_snake ([a-z0-9_.], 1..64 bytes), unique. */
UTGDEF utg_result utg_artifact_add_kv(utg_artifact_writer *w, const char *key, utg_kv_type type,
                                      const void *value, uint32_t count);
/* t describes host data: name, dtype, qbits, scale_kind, group, ndim, dims, values and scales (the
   size fields are computed). Names are unique; float values and scales must be finite and symbols
   lie in [-r, r], r = 2^(qbits-1) - 1; anything else is UTG_ERR_INVALID with a message. */
UTGDEF utg_result utg_artifact_add_tensor(utg_artifact_writer *w, const utg_artifact_tensor *t);
/* An ancillary section (critical = 0), e.g. "PROV"; META, TENS and DATA are the writer's own. */
UTGDEF utg_result utg_artifact_add_section(utg_artifact_writer *w, const char tag[4], const void *bytes,
                                           size_t size);
/* Serialize, encode with codec (NULL: stored) and return the artifact in *out (release with
   utg_free and the writer's allocator). *raw_size (may be NULL) gets the decoded payload size. */
UTGDEF utg_result utg_artifact_write(utg_artifact_writer *w, const utg_codec *codec, void **out,
                                     size_t *out_size, size_t *raw_size);
UTGDEF const char *utg_artifact_writer_message(const utg_artifact_writer *w); /* the last failure */

/* ---- the model and its artifact ---- */

/* Hessians for GPTQ: H = sum of X^T X over the calibration tokens for the input X of every
   quantized linear: c_q, c_k and c_v share the attention input's H, the output
   projection reads the concatenated heads, the MLP down projection the post-activation; a block
   visited several times in the plan accumulates once per visit; the tied embedding (and an untied
   head) use the final norm's output. Accumulated on the backend. */
typedef struct utg_hessians utg_hessians;
/* One zeroed fp32 [cols, cols] sum per distinct linear input, in backend memory; the model must
   outlive it. *out is NULL on failure. Usage: create, then GPTQ_CALIBRATION_BATCHES x
   { utg_model_forward; utg_hessians_accumulate }, then utg_model_export with it. */
UTGDEF utg_result utg_hessians_create(utg_model *m, utg_hessians **out);
UTGDEF void utg_hessians_destroy(utg_hessians *h); /* NULL does nothing */
/* Add the inputs of the last utg_model_forward (the plan that ran) into every H. */
UTGDEF utg_result utg_hessians_accumulate(utg_hessians *h);
UTGDEF int utg_hessians_batches(const utg_hessians *h); /* accumulate calls so far */
/* H of model tensor `index` on the host as doubles (cols x cols, divided by the batch count);
   returns 0 when the tensor has none or n < cols * cols, 1 when H was written. */
UTGDEF int utg_hessians_get(const utg_hessians *h, int index, double *H, size_t n);
/* Columns of the H of tensor `index` (0: none). */
UTGDEF int utg_hessians_cols(const utg_hessians *h, int index);
/* Self-generated calibration text (PR #1019): n_seqs sequences of len tokens, the first uniform at
   random, each next one drawn from softmax(softcapped logits / temperature) of its prefix, which is
   run again through the model at every position (no KV cache: len forwards of growing length).
   Seeded: the same seed gives the same text. n_seqs * len must fit the reserved batch. */
UTGDEF utg_result utg_model_generate(utg_model *m, int n_seqs, int len, double temperature, uint64_t seed,
                                     int32_t *out);
/* The Hessians of GPTQ_CALIBRATION_BATCHES calibration sequences of TRAIN_SEQ_LEN, run in forwards
   of at most batch_seqs sequences (the model reserves for that many), as GPTQ_CALIBRATION says:
   train reads them from loader (which advances; NULL is refused), self has the model write them
   (utg_model_generate at GPTQ_SELFGEN_TEMPERATURE; PR #1019), random draws uniform tokens. self
   and random are seeded from SEED. *out is NULL on failure, with the model's message. */
UTGDEF utg_result utg_model_calibrate(utg_model *m, utg_loader *loader, int batch_seqs, utg_hessians **out);

/* How one model tensor is stored. utg_model_quant_plan fills these from the config: matrices of
   more than QUANT_PASSTHROUGH_NUMEL elements are quantized per row with MATRIX_BITS / ATTN_BITS /
   MLP_BITS (QUANT_LAYER_BITS per block), the embedding and an untied head with EMBED_BITS, the
   clip QUANT_CLIP with the SDClip k of the group; GPTQ_ENABLED uses GPTQ where a Hessian exists.
   Smaller tensors stay float: fp32 when a CONTROL_TENSOR_NAME_PATTERNS entry matches, else fp16. */
typedef struct utg_tensor_quant {
    utg_dtype dtype; /* UTG_DT_Q, UTG_DT_F16 or UTG_DT_F32 */
    int bits;
    utg_clip_mode clip;
    double param;    /* percentile or SDClip k */
    int gptq;        /* 1: GPTQ with the tensor's Hessian */
    /* results of utg_model_export */
    double chosen;   /* the clip parameter used */
    double rel_err;  /* ||W - Q||^2 / ||W||^2, H-weighted (tr(E H E^T) / tr(W H W^T)) when a Hessian exists */
    double entropy;  /* order-0 entropy of the symbols, bits each */
    size_t bytes;    /* raw plane bytes (symbols + scales, or floats) */
} utg_tensor_quant;

/* Fill plan[n] (n = utg_model_tensor_count, tensor table order) from the config; h may be NULL (no
   GPTQ). Only the plan fields are set; the result fields are zeroed for utg_model_export. */
UTGDEF utg_result utg_model_quant_plan(const utg_model *m, const utg_hessians *h, utg_tensor_quant *plan,
                                       int n);

/* What utg_model_export measured, for the logs and the budget check: sizes in bytes, the entropy
   bound of the symbols, the count of tensors per kind, and the rounds budget mode needed. */
typedef struct utg_export_report {
    size_t artifact_bytes, raw_bytes;   /* the written file, the decoded payload */
    size_t symbol_bytes, scale_bytes, float_bytes;
    double entropy_bytes;               /* sum over Q tensors of numel * entropy / 8 */
    int n_quantized, n_float, budget_rounds;
    double weighted_err;                /* numel-weighted mean of rel_err over Q tensors */
} utg_export_report;

/* Quantize the model's parameters as `plan` says (NULL: utg_model_quant_plan; with BUDGET_MODE the
   bit widths are then chosen to fit `budget_bytes`, see utg_model_budget_plan), write the artifact
   with META (config, plan, quantizer) and an optional PROV text, and return its bytes (release with
   utg_free with utg_model_allocator(m)). plan (when given) receives the per-tensor results. */
UTGDEF utg_result utg_model_export(utg_model *m, const utg_hessians *h, const utg_codec *codec,
                                   const char *prov, utg_tensor_quant *plan, void **out, size_t *out_size,
                                   utg_export_report *rep);
/* Budget mode: starting from `plan`, choose each block matrix's bit width in [min_bits, its bits in
   the plan] to minimise the summed H-weighted (else plain) squared error while the estimated
   artifact (order-0 entropy of the symbols, scales and floats, times the codec's measured ratio)
   fits `target_bytes`; the embedding and an untied head keep their bits. Writes the choice into
   plan; UTG_ERR_CONFIG when even min_bits does not fit. */
UTGDEF utg_result utg_model_budget_plan(utg_model *m, const utg_hessians *h, utg_tensor_quant *plan, int n,
                                        int min_bits, double target_bytes, double ratio);
/* Load an artifact's weights into a model with the same shape (the META config must agree on every
   shape knob; every tensor present with its dims). */
UTGDEF utg_result utg_model_load_artifact(utg_model *m, const utg_artifact *a);
/* A new model from an artifact alone: its META config (with `base`'s backend, allocator and logger;
   base may be NULL) and its weights. The config's tensor and parameter counts are compared with the
   artifact's TENS table before any model memory is allocated. On failure *out, when not NULL, holds
   the message (utg_model_message) and must be destroyed. */
UTGDEF utg_result utg_model_create_from_artifact(const utg_artifact *a, const utg_model_desc *base,
                                                 utg_model **out);

/* Quantization-aware training. utg_qat_begin replaces the quantized tensors (as
   utg_model_quant_plan chooses them) by their fake-quantized values (QAT=ste: per-row rounding with
   the row's scale; QAT=noisy: w + (u - 0.5) * rowmax / r, u uniform from (seed, step, tensor),
   PR #363) and keeps the masters; utg_qat_end puts the masters back. Gradients computed in between
   are the straight-through estimate. Both run on the backend (fake_quant_rows, copy): nothing
   moves through the host. */
typedef struct utg_qat utg_qat;
/* Fixes the quantized tensors and their bits from the config once, and allocates the masters'
   backend memory. The model must outlive it. */
UTGDEF utg_result utg_qat_create(utg_model *m, utg_qat **out);
UTGDEF void utg_qat_destroy(utg_qat *q); /* NULL does nothing; call utg_qat_end first if active */
/* begin before the step's first forward, end after its last backward and before utg_optim_step, so
   that the optimizer updates the masters. begin while active and end while inactive do nothing. */
UTGDEF void utg_qat_begin(utg_qat *q, int step);
UTGDEF void utg_qat_end(utg_qat *q);
/* 1 when the config asks for QAT at this step and LR scale (QAT_START_STEP, LATE_QAT_THRESHOLD). */
UTGDEF int utg_qat_wanted(const utg_config *cfg, int step, double lr_scale);
/* The key of QAT=noisy's draw for one tensor at one step (fake_quant_rows' noise_key; never 0). */
UTGDEF uint64_t utg_qat_noise_key(int seed, int step, int tensor);

/* ------------------------------------------------------------------------------------------------
// >>public
   Result names, the version, the thread count, the one release function for what the library hands
   out (utg_free), and the file helpers a trainer needs around the byte-level APIs: every loader in
   the library works on memory, so these are how bytes get from and to disk. Checkpoints and
   artifacts should go through utg_write_file, so that a crash leaves the previous file intact.
   ------------------------------------------------------------------------------------------------ */

UTGDEF const char *utg_result_string(utg_result r); /* static text; "unknown result" for others */
UTGDEF const char *utg_version(void);                /* UTG_VERSION_STRING of the implementation */
/* Threads the CPU backend's ops use from this call site (OpenMP's count; 1 without OpenMP). */
UTGDEF int utg_thread_count(void);
/* Release a buffer the library handed to the caller (safetensors bytes, artifact bytes, checkpoint
   bytes, validation tokens, file contents), with the allocator of the call that made it: the
   model's for utg_model_* calls (utg_model_allocator), the one passed otherwise, NULL for the
   default (UTG_MALLOC/UTG_FREE) and for utg_read_file. NULL p does nothing. */
UTGDEF void utg_free(const utg_allocator *alloc, void *p);
#ifndef UTG_NO_STDIO
/* Read a whole file with the default allocator (release with utg_free(NULL, p)). Fails cleanly past
   max_bytes. */
UTGDEF utg_result utg_read_file(const char *path, size_t max_bytes, void **out, size_t *out_size,
                                utg_msg *msg);
/* The same, but the file must start with the n_magic bytes `magic`: they are read and compared
   before anything is allocated for the rest (a large file of another kind costs one small read). */
UTGDEF utg_result utg_read_file_magic(const char *path, const void *magic, size_t n_magic, size_t max_bytes,
                                      void **out, size_t *out_size, utg_msg *msg);
/* Write atomically, so that `path` holds either its previous bytes or all of the new ones:
   - POSIX builds (the including file defines _POSIX_C_SOURCE, or is not in strict ISO mode): the
     bytes go to a new temporary "<path>.<pid>-<n>.utgtmp" created with O_CREAT | O_EXCL (it never
     follows a planted symlink or reuses a file), which is written, fsync'ed, closed and renamed
     over path; then the directory is fsync'ed so that the rename survives a crash. Temporaries of
     the same path left by processes that no longer exist are removed first.
   - strict ISO C builds (and Windows): a temporary "<path>.<n>.utgtmp" through fopen, then rename;
     nothing is forced to disk and a link planted at the temporary's name is not detected. Where
     rename cannot replace a file (Windows), the old file is removed first: a crash between the two
     leaves only the temporary.
   A replaced regular file keeps its permission bits. Any failure returns UTG_ERR_IO with the step
   and the system's reason, and removes the temporary; a failed fsync of the directory is reported
   too, although the new bytes are then in place (a crash could still undo the rename). */
UTGDEF utg_result utg_write_file(const char *path, const void *bytes, size_t size_bytes, utg_msg *msg);
#endif

#ifdef __cplusplus
}
#endif
#endif /* UTGOLF_H */

/* ================================================================================================
   IMPLEMENTATION
   ================================================================================================ */
#ifdef UTGOLF_IMPLEMENTATION
#ifndef UTGOLF_IMPLEMENTATION_INCLUDED
#define UTGOLF_IMPLEMENTATION_INCLUDED

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(UTG_MALLOC) != defined(UTG_FREE)
#error "define UTG_MALLOC and UTG_FREE together"
#endif
#ifndef UTG_MALLOC
#define UTG_MALLOC(sz, user) ((void)(user), malloc(sz))
#define UTG_FREE(p, user) ((void)(user), free(p))
#endif
#ifndef UTG_ASSERT
#include <assert.h>
#define UTG_ASSERT(x) assert(x)
#endif

#if defined(__cplusplus)
#define UTG_RESTRICT __restrict
#elif defined(__GNUC__) || defined(_MSC_VER)
#define UTG_RESTRICT __restrict
#else
#define UTG_RESTRICT
#endif
/* the short row reductions (a head's 64 values): called, they kept their 16 lanes on the stack and
   cost as much as the rows' arithmetic */
#if defined(__GNUC__)
#define UTG__FORCE_INLINE __attribute__((always_inline)) inline
#elif defined(_MSC_VER)
#define UTG__FORCE_INLINE __forceinline
#else
#define UTG__FORCE_INLINE
#endif

/* OpenMP through _Pragma so that builds without -fopenmp stay free of unknown-pragma warnings. */
#ifdef _OPENMP
#define UTG__OMP_FOR _Pragma("omp parallel for schedule(static)")
#define UTG__OMP_FOR_DYN _Pragma("omp parallel for schedule(dynamic, 1)")
#if defined(__clang__) /* clang warns that it cannot vectorize it (an error under -Werror) */
#define UTG__SIMD_MAX_M
#else
#define UTG__SIMD_MAX_M _Pragma("omp simd reduction(max : m)") /* over a variable named m */
#endif
/* threads a parallel region started here would get: 1 inside a region when nesting is off */
static int utg__max_threads(void) { return omp_get_active_level() >= omp_get_max_active_levels() ? 1 : omp_get_max_threads(); }
static int utg__thread_id(void) { return omp_get_thread_num(); }
#else
#define UTG__OMP_FOR
#define UTG__OMP_FOR_DYN
#define UTG__SIMD_MAX_M
static int utg__max_threads(void) { return 1; }
static int utg__thread_id(void) { return 0; }
#endif

#if defined(__GNUC__)
#define UTG__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define UTG__PRINTF(a, b)
#endif

/* ------------------------------------------------------------------------------------------------
// >>impl_util
   The small pieces every later section uses: allocation through the caller's utg_allocator,
   messages (utg__msgf, which makes bytes from files safe to print), overflow-checked size
   arithmetic, the platform-independent RNG, half-float decoding and little-endian integer access.
   Nothing here touches backend memory.
   ------------------------------------------------------------------------------------------------ */

/* n bytes from the allocator a (NULL or no alloc_fn: UTG_MALLOC); a request of 0 gets 1 byte, so
   NULL always means out of memory. */
static void *utg__alloc(const utg_allocator *a, size_t n) {
    if (n == 0) n = 1;
    if (a && a->alloc_fn) return a->alloc_fn(n, a->user);
    return UTG_MALLOC(n, a ? a->user : NULL);
}

/* Frees p (NULL is a no-op) with the allocator that gave it. */
static void utg__free(const utg_allocator *a, void *p);
/* Free n host buffers (NULL entries are skipped): a destroy function lists what its object owns. */
static void utg__free_all(const utg_allocator *a, void *const *bufs, int n) {
    int i;
    for (i = 0; i < n; i++) utg__free(a, bufs[i]);
}

static void utg__free(const utg_allocator *a, void *p) {
    if (!p) return;
    if (a && a->free_fn) a->free_fn(p, a->user);
    else UTG_FREE(p, a ? a->user : NULL);
}

static void utg__msgf(utg_msg *msg, const char *fmt, ...) UTG__PRINTF(2, 3);
/* Messages quote names and strings from files; a control byte among them is written as \xNN, so
   that printing a message never sends an escape sequence to a terminal. */
static void utg__msgf(utg_msg *msg, const char *fmt, ...) {
    char raw[sizeof msg->text];
    size_t i, at = 0;
    va_list ap;
    if (!msg) return;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    for (i = 0; raw[i] && at + 1 < sizeof msg->text; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c >= 0x20 && c != 0x7f) msg->text[at++] = (char)c;
        else if (at + 5 < sizeof msg->text)
            at += (size_t)snprintf(msg->text + at, sizeof msg->text - at, "\\x%02x", c);
        else break;
    }
    msg->text[at] = 0;
}

/* Overflow-checked size arithmetic: returns 0 on overflow. */
static int utg__mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > (size_t)-1 / a) return 0;
    *out = a * b;
    return 1;
}
static int utg__add_ok(size_t a, size_t b, size_t *out) {
    if (b > (size_t)-1 - a) return 0;
    *out = a + b;
    return 1;
}

/* RNG: splitmix64 seeding a xoshiro256** state. Small, fast, and the same on every platform. */
typedef struct utg__rng {
    uint64_t s[4];
} utg__rng;

/* One splitmix64 step: advances *x and returns a well-mixed 64-bit value. */
static uint64_t utg__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* The four xoshiro256** state words from splitmix64(seed), the seeding the xoshiro authors recommend. */
static void utg__rng_seed(utg__rng *r, uint64_t seed) {
    int i;
    for (i = 0; i < 4; i++) r->s[i] = utg__splitmix64(&seed);
}
static uint64_t utg__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
/* The next 64 random bits (xoshiro256**). */
static uint64_t utg__rng_next(utg__rng *r) {
    uint64_t *s = r->s, result = utg__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = utg__rotl(s[3], 45);
    return result;
}
/* Uniform in [0, 1) with 53 bits. */
static double utg__rng_uniform(utg__rng *r) { return (double)(utg__rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }
/* Standard normal by Box-Muller (one value per call; simple beats fast here: init only). */
static double utg__rng_normal(utg__rng *r) {
    double u1 = utg__rng_uniform(r), u2 = utg__rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Half floats (import only; round-trip exactness matters, speed does not). */
static float utg__f32_from_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static float utg__bf16_to_f32(uint16_t h) { return utg__f32_from_bits((uint32_t)h << 16); }
/* IEEE binary16 bits to float, exactly (subnormals, infinities and NaNs included). */
static float utg__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return utg__f32_from_bits(sign | 0x7f800000u | (man << 13));
    return utg__f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

/* Little-endian reads and writes of file fields, independent of the host's byte order and alignment. */
static uint32_t utg__rd_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t utg__rd_u64le(const uint8_t *p) {
    return (uint64_t)utg__rd_u32le(p) | ((uint64_t)utg__rd_u32le(p + 4) << 32);
}
static void utg__wr_u32le(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

/* ------------------------------------------------------------------------------------------------
// >>impl_config
   The knob table (UTG_CONFIG_KNOBS) expanded into utg__knobs: per knob its info (names, kind,
   range, doc), its default as a number or a string, and the offset of its field in utg_config.
   Every knob function works through that table, so a knob added to the X-macro list is parsed,
   validated, printed, resolved and saved in checkpoints and artifacts without further code.
   ------------------------------------------------------------------------------------------------ */

#define UTG__DEFNUM_INT(d) (double)(d)
#define UTG__DEFNUM_BOOL(d) (double)(d)
#define UTG__DEFNUM_REAL(d) (double)(d)
#define UTG__DEFNUM_STR(d) 0.0
#define UTG__DEFSTR_INT(d) NULL
#define UTG__DEFSTR_BOOL(d) NULL
#define UTG__DEFSTR_REAL(d) NULL
#define UTG__DEFSTR_STR(d) d
#define UTG__DEFNUM_ENUM(d) 0.0
#define UTG__DEFSTR_ENUM(d) NULL
#define UTG__CHOICES_INT(d) NULL
#define UTG__CHOICES_BOOL(d) NULL
#define UTG__CHOICES_REAL(d) NULL
#define UTG__CHOICES_STR(d) NULL
#define UTG__CHOICES_ENUM(d) d

typedef struct utg__knob {
    utg_knob_info info;
    size_t offset;
} utg__knob;

#define UTG__KNOB_ROW(kind, field, env, def, lo, hi, flags, doc)                                   \
    {{env, #field, UTG_KNOB_##kind, flags, UTG__DEFNUM_##kind(def), UTG__DEFSTR_##kind(def), doc, \
      (double)(lo), (double)(hi), UTG__CHOICES_##kind(def)},                                     \
     offsetof(utg_config, field)},
static const utg__knob utg__knobs[] = {UTG_CONFIG_KNOBS(UTG__KNOB_ROW)};
#define UTG__N_KNOBS ((int)(sizeof utg__knobs / sizeof utg__knobs[0]))

UTGDEF int utg_config_knob_count(void) { return UTG__N_KNOBS; }
UTGDEF const utg_knob_info *utg_config_knob(int i) {
    return (i >= 0 && i < UTG__N_KNOBS) ? &utg__knobs[i].info : NULL;
}

static int utg__streq_nocase(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        int ca = (*a >= 'A' && *a <= 'Z') ? *a + 32 : *a, cb = (*b >= 'A' && *b <= 'Z') ? *b + 32 : *b;
        if (ca != cb) return 0;
    }
    return *a == *b;
}

UTGDEF int utg_config_find_knob(const char *name) {
    int i;
    if (!name) return -1;
    for (i = 0; i < UTG__N_KNOBS; i++)
        if (strcmp(utg__knobs[i].info.env_name, name) == 0 || utg__streq_nocase(utg__knobs[i].info.field_name, name))
            return i;
    return -1;
}

static void *utg__knob_ptr(utg_config *c, int i) { return (char *)c + utg__knobs[i].offset; }
static const void *utg__knob_cptr(const utg_config *c, int i) { return (const char *)c + utg__knobs[i].offset; }

UTGDEF utg_config utg_config_resolve(const utg_config *desc) {
    utg_config c;
    int i;
    if (desc) c = *desc;
    else memset(&c, 0, sizeof c);
    for (i = 0; i < UTG__N_KNOBS; i++) {
        const utg_knob_info *k = &utg__knobs[i].info;
        void *p = utg__knob_ptr(&c, i);
        switch (k->kind) {
        case UTG_KNOB_INT:
        case UTG_KNOB_BOOL:
            if (*(int *)p == 0) *(int *)p = (int)k->default_number;
            break;
        case UTG_KNOB_REAL:
            if (*(double *)p == 0.0) *(double *)p = k->default_number;
            break;
        case UTG_KNOB_STR:
            if (*(const char **)p == NULL) *(const char **)p = k->default_string;
            break;
        case UTG_KNOB_ENUM: break; /* 0 is the first word, the default */
        }
    }
    return c;
}


/* The index of the n-byte word v among the '|'-separated choices; -1 when it is none of them. */
static int utg__choice_index(const char *choices, const char *v, size_t n) {
    int i;
    for (i = 0;; i++) {
        const char *bar = strchr(choices, '|');
        size_t w = bar ? (size_t)(bar - choices) : strlen(choices);
        if (w == n && !strncmp(v, choices, n)) return i;
        if (!bar) return -1;
        choices = bar + 1;
    }
}

/* Word i of the choices in *w; returns its length, 0 when there is no word i. */
static size_t utg__choice_word(const char *choices, int i, const char **w) {
    const char *bar;
    if (i < 0) return 0;
    for (; i > 0; i--) {
        if (!(choices = strchr(choices, '|'))) return 0;
        choices++;
    }
    bar = strchr(choices, '|');
    *w = choices;
    return bar ? (size_t)(bar - choices) : strlen(choices);
}

static void utg__format_real(char *buf, size_t n, double v);

/* The range or choices of knob k: for a message (verb 1: "in 1..1024", ">= 1", "0 or in 2..8",
   "in [0, 1)", "> 0", "0 or 1", "one of a|b") or for --help (verb 0: the same without "in " and
   "one of "); "" for a STR knob. */
static void utg__range_text(const utg_knob_info *k, int verb, char *buf, size_t n) {
    char lo[40], hi[40];
    const char *or0 = (k->flags & UTG_KF_OR0) ? "0 or " : "", *in = verb ? "in " : "";
    buf[0] = 0;
    if (k->kind == UTG_KNOB_STR) return;
    if (k->kind == UTG_KNOB_ENUM) { snprintf(buf, n, "%s%s", verb ? "one of " : "", k->choices); return; }
    if (k->kind == UTG_KNOB_BOOL) { snprintf(buf, n, "%s", verb ? "0 or 1" : "0|1"); return; }
    utg__format_real(lo, sizeof lo, k->min);
    utg__format_real(hi, sizeof hi, k->max);
    if (k->max == UTG_INF) snprintf(buf, n, "%s%s %s", or0, (k->flags & UTG_KF_GT) ? ">" : ">=", lo);
    else if (k->kind == UTG_KNOB_INT) snprintf(buf, n, "%s%s%s..%s", or0, in, lo, hi);
    else
        snprintf(buf, n, "%s%s%c%s, %s%c", or0, in, (k->flags & UTG_KF_GT) ? '(' : '[', lo, hi,
                 (k->flags & UTG_KF_LT) ? ')' : ']');
}

/* v (an INT, BOOL or REAL knob's value, UTG_OFF read as 0) lies in the range of knob k */
static int utg__in_range(const utg_knob_info *k, double v) {
    if (v == 0.0 && (k->flags & UTG_KF_OR0)) return 1;
    return isfinite(v) && ((k->flags & UTG_KF_GT) ? v > k->min : v >= k->min) &&
           ((k->flags & UTG_KF_LT) ? v < k->max : v <= k->max);
}

/* "NUM_LAYERS must be in 1..1024 (got 0)"; got is the value as text */
static void utg__range_msg(const utg_knob_info *k, const char *got, utg_msg *msg) {
    char range[256];
    utg__range_text(k, 1, range, sizeof range);
    utg__msgf(msg, "%s must be %s (got %s%s%s)", k->env_name, range, k->kind == UTG_KNOB_ENUM ? "'" : "", got,
              k->kind == UTG_KNOB_ENUM ? "'" : "");
}

/* Knob i of c lies in its range or choices; else a message naming the knob, the range and the value. */
static int utg__knob_ok(const utg_config *c, int i, utg_msg *msg) {
    const utg_knob_info *k = &utg__knobs[i].info;
    const void *p = utg__knob_cptr(c, i);
    const char *w;
    char got[48];
    double v;
    switch (k->kind) {
    case UTG_KNOB_STR: return 1;
    case UTG_KNOB_ENUM:
        if (utg__choice_word(k->choices, *(const int *)p, &w)) return 1;
        snprintf(got, sizeof got, "%d", *(const int *)p);
        utg__range_msg(k, got, msg);
        return 0;
    case UTG_KNOB_INT:
    case UTG_KNOB_BOOL: v = *(const int *)p; break;
    default: v = *(const double *)p; break;
    }
    if (v == UTG_OFF && ((k->flags & UTG_KF_OFF) || k->kind == UTG_KNOB_BOOL)) v = 0.0;
    if (utg__in_range(k, v)) return 1;
    utg__format_real(got, sizeof got, v);
    utg__range_msg(k, got, msg);
    return 0;
}

static int utg__layer_bits(const char *s, int block, int *bits);
UTGDEF utg_result utg_config_validate(const utg_config *c, utg_msg *msg) {
#define UTG__REQ(cond, ...) do { if (!(cond)) { utg__msgf(msg, __VA_ARGS__); return UTG_ERR_CONFIG; } } while (0)
    int i, hd, lb;
    for (i = 0; i < UTG__N_KNOBS; i++) /* each knob alone: the table's ranges and choices */
        if (!utg__knob_ok(c, i, msg)) return UTG_ERR_CONFIG;
    /* the rules that join knobs */
    UTG__REQ(c->model_dim % c->num_heads == 0, "MODEL_DIM (%d) must be divisible by NUM_HEADS (%d)",
             c->model_dim, c->num_heads);
    UTG__REQ(c->num_heads % c->num_kv_heads == 0, "NUM_HEADS (%d) must be divisible by NUM_KV_HEADS (%d)",
             c->num_heads, c->num_kv_heads);
    hd = c->model_dim / c->num_heads;
    UTG__REQ(hd % 2 == 0, "head dim MODEL_DIM/NUM_HEADS (%d) must be even for RoPE", hd);
    UTG__REQ(c->rope_dims % 2 == 0 && c->rope_dims <= hd,
             "ROPE_DIMS must be even and at most the head dim %d (got %d)", hd, c->rope_dims);
    UTG__REQ(c->eval_stride <= (c->eval_seq_len ? c->eval_seq_len : c->train_seq_len),
             "EVAL_STRIDE must be in 0..EVAL_SEQ_LEN (got %d)", c->eval_stride);
    UTG__REQ((c->sparse_attn_gate_enabled > 0) + (c->attn_out_gate_enabled > 0) + (c->gated_attn_enabled > 0) <= 1,
             "SPARSE_ATTN_GATE_ENABLED, ATTN_OUT_GATE_ENABLED and GATED_ATTN_ENABLED are alternatives: set one");
    UTG__REQ(c->gate_window <= c->model_dim || (c->sparse_attn_gate_enabled <= 0 &&
                                                 c->attn_out_gate_enabled <= 0 && c->smear_gate_enabled <= 0),
             "GATE_WINDOW must be in 1..MODEL_DIM (got %d)", c->gate_window);
    UTG__REQ(c->disable_layer0_attn <= 0 || c->block_attns == 1, "DISABLE_LAYER0_ATTN needs BLOCK_ATTNS=1");
    UTG__REQ(c->disable_layer0_attn <= 0 || c->value_residual <= 0,
             "VALUE_RESIDUAL reads layer 0's values: it does not combine with DISABLE_LAYER0_ATTN");
    /* the syntax of a list knob (the others are read when the model's plan is built) */
    UTG__REQ(utg__layer_bits(c->quant_layer_bits, -1, &lb) >= 0,
             "QUANT_LAYER_BITS must look like 3:5,4:5 (block:bits, bits 2..8; got '%s')",
             c->quant_layer_bits ? c->quant_layer_bits : "");
    return UTG_OK;
#undef UTG__REQ
}

/* Strict number parsing: the whole string must be a number, no garbage, no overflow. */
static int utg__parse_int(const char *s, int *out) {
    char *end;
    long v;
    if (!s || !*s) return 0;
    v = strtol(s, &end, 10);
    while (*end == ' ' || *end == '\t') end++;
    if (*end || v < -2147483647L || v > 2147483647L) return 0;
    *out = (int)v;
    return 1;
}
static int utg__parse_real(const char *s, double *out) {
    char *end;
    double v;
    if (!s || !*s) return 0;
    v = strtod(s, &end);
    while (*end == ' ' || *end == '\t') end++;
    if (*end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

UTGDEF utg_result utg_config_set(utg_config *cfg, const char *name, const char *value, utg_msg *msg) {
    int i = utg_config_find_knob(name), iv;
    double dv;
    const utg_knob_info *k;
    if (i < 0) { utg__msgf(msg, "unknown knob '%s'", name ? name : "(null)"); return UTG_ERR_CONFIG; }
    k = &utg__knobs[i].info;
    switch (k->kind) {
    case UTG_KNOB_INT:
    case UTG_KNOB_BOOL:
        if (k->kind == UTG_KNOB_BOOL && value && (utg__streq_nocase(value, "true") || utg__streq_nocase(value, "false")))
            iv = utg__streq_nocase(value, "true");
        else if (!utg__parse_int(value, &iv)) {
            utg__msgf(msg, "%s: '%s' is not an integer", k->env_name, value ? value : "");
            return UTG_ERR_CONFIG;
        }
        if (!utg__in_range(k, iv)) { utg__range_msg(k, value, msg); return UTG_ERR_CONFIG; }
        if (iv == 0 && k->default_number != 0.0) {
            if (!(k->flags & UTG_KF_OFF)) {
                utg__msgf(msg, "%s: 0 is not allowed (default %g)", k->env_name, k->default_number);
                return UTG_ERR_CONFIG;
            }
            iv = UTG_OFF;
        }
        *(int *)utg__knob_ptr(cfg, i) = iv;
        break;
    case UTG_KNOB_REAL:
        if (!utg__parse_real(value, &dv)) {
            utg__msgf(msg, "%s: '%s' is not a finite number", k->env_name, value ? value : "");
            return UTG_ERR_CONFIG;
        }
        if (!utg__in_range(k, dv)) { utg__range_msg(k, value, msg); return UTG_ERR_CONFIG; }
        if (dv == 0.0 && k->default_number != 0.0) {
            if (!(k->flags & UTG_KF_OFF)) {
                utg__msgf(msg, "%s: 0 is not allowed (default %g)", k->env_name, k->default_number);
                return UTG_ERR_CONFIG;
            }
            dv = UTG_OFF;
        }
        *(double *)utg__knob_ptr(cfg, i) = dv;
        break;
    case UTG_KNOB_STR:
        *(const char **)utg__knob_ptr(cfg, i) = value ? value : "";
        break;
    case UTG_KNOB_ENUM:
        if ((iv = utg__choice_index(k->choices, value ? value : "", value ? strlen(value) : 0)) < 0) {
            utg__range_msg(k, value ? value : "", msg);
            return UTG_ERR_CONFIG;
        }
        *(int *)utg__knob_ptr(cfg, i) = iv;
        break;
    }
    return UTG_OK;
}

static char *utg__trim(char *s) {
    char *e;
    while (*s == ' ' || *s == '\t' || *s == '\r') s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = 0;
    return s;
}

UTGDEF utg_result utg_config_parse_text(utg_config *cfg, char *text, utg_msg *msg) {
    int line_no = 0;
    char *line = text;
    while (line && *line) {
        char *next = strchr(line, '\n'), *eq, *key, *val;
        utg_result r;
        if (next) *next++ = 0;
        line_no++;
        line = utg__trim(line);
        if (*line == 0 || *line == '#') { line = next; continue; }
        if (strncmp(line, "export ", 7) == 0) line = utg__trim(line + 7);
        eq = strchr(line, '=');
        if (!eq) { utg__msgf(msg, "line %d: expected KEY=VALUE", line_no); return UTG_ERR_CONFIG; }
        *eq = 0;
        key = utg__trim(line);
        val = utg__trim(eq + 1);
        if (strlen(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[strlen(val) - 1] == val[0]) {
            val[strlen(val) - 1] = 0;
            val++;
        }
        r = utg_config_set(cfg, key, val, msg);
        if (r != UTG_OK) {
            utg_msg inner = *msg;
            utg__msgf(msg, "line %d: %s", line_no, inner.text);
            return r;
        }
        line = next;
    }
    return UTG_OK;
}

/* The shortest of %.9g .. %.17g that reads back as the same double: the usual values print as they
   were written (0.95, not 0.94999999999999996), and every value survives format -> parse. */
static void utg__format_real(char *buf, size_t n, double v) {
    int prec;
    for (prec = 9; prec < 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
    snprintf(buf, n, "%.17g", v);
}

UTGDEF const char *utg_config_format(const utg_config *cfg, int i, char *buf, size_t n) {
    const utg_knob_info *k = utg_config_knob(i);
    const void *p;
    if (!buf || n == 0) return buf;
    buf[0] = 0;
    if (!k) return buf;
    p = utg__knob_cptr(cfg, i);
    switch (k->kind) {
    case UTG_KNOB_INT:
    case UTG_KNOB_BOOL: snprintf(buf, n, "%d", *(const int *)p == UTG_OFF ? 0 : *(const int *)p); break;
    case UTG_KNOB_REAL:
        utg__format_real(buf, n, *(const double *)p == UTG_OFF ? 0.0 : *(const double *)p);
        break;
    case UTG_KNOB_STR: snprintf(buf, n, "%s", *(const char *const *)p ? *(const char *const *)p : ""); break;
    case UTG_KNOB_ENUM: { /* an index outside the choices prints as the number, which the parser refuses */
        const char *w;
        size_t len = utg__choice_word(k->choices, *(const int *)p, &w);
        if (len) snprintf(buf, n, "%.*s", (int)len, w);
        else snprintf(buf, n, "%d", *(const int *)p);
    } break;
    }
    return buf;
}

UTGDEF const char *utg_config_help_line(int i, char *buf, size_t n) {
    const utg_knob_info *k = utg_config_knob(i);
    utg_config zero, def;
    char v[96], range[128];
    if (!buf || n == 0) return buf;
    buf[0] = 0;
    if (!k) return buf;
    memset(&zero, 0, sizeof zero);
    def = utg_config_resolve(&zero);
    utg_config_format(&def, i, v, sizeof v);
    utg__range_text(k, 0, range, sizeof range);
    snprintf(buf, n, "  %-28s %-12s %-16s %s", k->env_name, v[0] ? v : "\"\"", range, k->doc);
    return buf;
}

#ifndef UTG_NO_STDIO
UTGDEF utg_result utg_config_apply_env(utg_config *cfg, utg_msg *msg) {
    int i;
    for (i = 0; i < UTG__N_KNOBS; i++) {
        const char *name = utg__knobs[i].info.env_name, *v = getenv(name);
        utg_result r = v ? utg_config_set(cfg, name, v, msg) : UTG_OK;
        if (r != UTG_OK) return r;
    }
    return UTG_OK;
}
#endif

/* ------------------------------------------------------------------------------------------------
// >>impl_model
   The model, in the order a model is built and run:
     tensor table   utg__build_tensors lists every parameter (state_dict order of train_gpt.py's
                    GPT, then the recurrence's own tensors); utg__add_tensor gives each its offset
                    in one parameter arena and one gradient arena of the same layout.
     plans          utg__compile_plans turns the recurrence knobs into one utg_plan per phase
                    (virtual layer -> physical block, control owner, skip slots, lanes) and
                    utg__verify_plan proves each plan reads only what exists.
     arenas         utg__carve_all carves every activation and gradient temporary for a batch
                    of N tokens out of one backend buffer (sized once, for all plans).
     forward        utg__forward: the embedding stage (token embedding, BigramHash, SmearGate,
                    norm: x0), the virtual layers of the current plan (utg__layer_forward: skip
                    pop, depth conditioning, resid_mix, attention and MLP sublayers, lanes, skip
                    push), the final norm, the tied or untied head and the softcapped
                    cross-entropy, whose gradient is left in the logits buffer.
     backward       utg_model_backward walks the same steps in reverse (utg__layer_backward),
                    ADDING every weight gradient so that a block visited several times sums them.
   All tensors live in backend memory; the host touches them only through upload and download.
   ------------------------------------------------------------------------------------------------ */

/* Index tables: the model finds each tensor by its index into m->tensors, resolved once at build
   time, and a virtual layer's pointers are computed from them (utg__layer_ptrs). [k] indexes the
   block's attention sublayers (BLOCK_ATTNS). */
typedef struct utg__heavy_ix { /* tensor-table indexes of one physical block's matrices (-1: none) */
    int q_gain[2], c_q[2], c_k[2], c_v[2], proj[2], gate[2], fc, mid, mlp_proj;
} utg__heavy_ix;

typedef struct utg__ctrl_ix { /* the control tensors of one owner (a block, or a virtual layer) */
    int attn_scale[2], mlp_scale, resid_mix, norm_bias;
    int q_gain[2]; /* Q_GAIN_SCOPE=control: q_gain lives here instead of with the attention matrices */
} utg__ctrl_ix;

typedef struct utg__rset { /* an untied repeat MLP: the block it copies, and its own matrices (-1: shared) */
    int block, visit, fc, mid, proj;
} utg__rset;

/* What one virtual layer reads (the parameters) or writes (the gradients): pointers into the arena,
   resolved from the plan by utg__layer_ptrs. NULL marks a tensor the configuration does not have.
   Index [k] is the layer's k-th attention sublayer (BLOCK_ATTNS). */
typedef struct utg__layer_weights {
    /* control tensors: per block, or per virtual layer with CONTROL_SCOPE=virtual */
    float *attn_scale[2];     /* [d] scale of the attention output on the residual */
    float *q_gain[2];         /* [H] per-head query gain */
    float *mlp_scale;         /* [d] scale of the MLP output on the residual */
    float *resid_mix;         /* [2, d] the block input as resid_mix[0] * x + resid_mix[1] * x0 */
    float *norm_bias;         /* [n_norms, d] NORM_BIAS: a bias after each pre-norm */
    /* matrices of the physical block (or of an untied repeat's MLP) */
    float *c_q[2], *c_k[2], *c_v[2], *attn_proj[2];
    float *fc, *mlp_mid, *mlp_proj; /* mlp_mid with MLP_LAYERS=3 only */
    float *attn_gate[2];      /* [H, gate_win] weights of an attention output gate */
    /* parallel residual lanes: the block's 4 parallel_post_lambdas and 2 parallel_resid_lambdas */
    float *par_post, *par_resid;
    /* depth conditioning of this virtual layer */
    float *iter_embed, *iter_scale; /* ITER_EMBED, ITER_SCALE: [d] each */
    float *film_gamma, *film_beta;  /* FILM: [d] each */
    float *hc_alpha, *hc_beta;      /* SHC_ENABLED: one scalar each */
    /* value embedding and value residual */
    float *ve_scale;          /* this layer's ve_layer_scales entry (a VE_LAYERS layer) */
    float *vrl_alpha;         /* vrl_alphas[l - 1]: the gate of v0 in layer l > 0 */
    int makes_v0;             /* VALUE_RESIDUAL: this layer's first attention computes v0 */
    float ln_scale;           /* LN_SCALE: 1/sqrt(owner + 1) on the pre-norm outputs, else 1 */
    int xsa;                  /* exclusive self attention in this layer */
} utg__layer_weights;

/* Activation shapes. N = tokens of the batch (n_seqs * Tc), d the model width (= H * hd, so q and
   every per-head output are [N, d]), kvd = Hkv * hd, F the MLP hidden width. In utg__attn_acts:
   n, nb, qn, qg, y, yx, yg, a are [N, d]; kn, kr, v are [N, kvd]; r is [N], rq and lse [N * H],
   rk [N * Hkv], g [N, H]. All live in the activation arena (backend memory), carved once per
   capacity by utg__carve_all; a NULL pointer means the feature is off for this model. */
typedef struct utg__attn_acts { /* what one attention sublayer keeps for its backward */
    void *n, *nb;             /* input norm, norm + bias (NULL without NORM_BIAS) */
    float *r;                 /* the input norm's 1/rms */
    void *qn, *kn;            /* q and k after the per-head RMSNorm */
    float *rq, *rk;           /* their 1/rms per head */
    void *qg, *kr, *v;        /* q after RoPE and q_gain, k after RoPE, v */
    void *y, *a;              /* attention output, and after the output projection */
    float *lse;               /* the attention's log-sum-exp per query and head */
    void *yx;                 /* XSA_LAST_N: y with each head's own-value component removed (NULL: no XSA) */
    void *yg;                 /* attention gate: the gated heads (NULL: no gate) */
    float *g;                 /* attention gate: the gate values [N, H] */
} utg__attn_acts;

/* What one MLP sublayer keeps for its backward: all [N, d] except u, ua, u2, ua2 [N, F] and r [N]. */
typedef struct utg__mlp_acts {
    void *n, *nb, *u, *ua, *u2, *ua2, *m; /* norm, +bias, fc out, relu^2, mid out, relu^2, out */
    float *r;                             /* the norm's 1/rms */
} utg__mlp_acts;

/* One virtual layer's saved activations, every buffer [N, d]. The const pointers (xs, xs1, xc) are
   views: they alias a buffer of this layer or the layer's input (the previous out, or x0), so that
   a layer without the skip or the conditioning copies nothing. out (and out1 on two lanes) is the
   next layer's input; a pushed U-Net slot points at it too (slot_src), for the layer that pops it. */
typedef struct utg__acts { /* what one virtual layer keeps for its backward */
    const void *xs, *xs1;     /* the input after the U-Net skip add (points at hs/hs1 or the input) */
    const void *xc;           /* the block input after the conditioning (points at hc or xs) */
    void *hs, *hs1;           /* buffers: input after the U-Net skip add */
    void *hc;                 /* buffer: after the depth conditioning (iteration embedding / FiLM) */
    void *hin;                /* resid_mix output: the attention input */
    utg__attn_acts at[2];
    void *hmid[2];            /* after each attention residual add */
    void *hin_m;              /* two_lane: the MLP input resid_mix(lane1, x0) */
    utg__mlp_acts ml;
    void *sa, *sm;            /* lanes: attn_scale * attention, mlp_scale * MLP */
    void *l0a, *l1a;          /* two_lane: the lanes after the attention update */
    void *blk, *delta;        /* ITER_SCALE: the block output and block output - block input */
    void *dsc;                /* SHC with ITER_SCALE: gamma * delta (else it points at delta) */
    void *out, *out1;         /* output (lane 0, lane 1) */
} utg__acts;

/* The doubles of m->step_stats: the sum of the mean losses of the training forwards since
   utg_model_zero_grads, the gradient arena's sum of squares (utg_optim_step writes it), and the
   mean loss of the last forward (written when a caller asks for it). utg_optim_step reads the first
   two in one download. */
enum { UTG__STAT_LOSS_SUM = 0, UTG__STAT_GRAD_SUMSQ = 1, UTG__STAT_LAST_LOSS = 2 };

/* The model: its config, the backend it runs on, the tensor table with the parameter and gradient
   arenas (backend memory, same layout), the compiled plans, the shape, and the activation arena
   sized for cap_tok tokens. Every float pointer below is backend memory unless it says host. */
struct utg_model {
    utg_config cfg;
    utg_allocator alloc;
    utg_logger logger;
    utg_msg msg;
    utg_backend *be;
    utg_dtype at;    /* the activations' storage type (ACTIVATION_DTYPE resolved on the backend) */
    size_t at_size;  /* its bytes per element */
    int own_backend;
    /* the model's matmuls: be->matmul, or be->matmul_bf16 with MATMUL_BF16 (called by utg__mm) */
    void (*mm)(utg_backend *be, int types, void *C, const void *A, const void *B, int M, int N, int K,
               utg_trans ta, utg_trans tb, float alpha, float beta);
    /* parameters */
    int n_tensors, max_tensors;
    utg_tensor_info *tensors;
    size_t arena_floats, n_params;
    float *params, *grads;
    int t_tok_emb, t_skip, t_skip_gates, t_lm_head; /* -1 when absent (t_lm_head: tied) */
    int t_iter_embed, t_iter_scale, t_film, t_par_post, t_par_resid;
    int t_smg;                                  /* SMEAR_ENABLED: smear.gate [d] */
    int t_ve_embed, t_ve_proj, t_ve_scale, t_ve_ls; /* the value embedding */
    int t_vrl, t_hca, t_hcb;                    /* vrl_alphas, hc_alpha, hc_beta */
    int n_ve, *ve_of; /* VE_LAYERS: index into ve_layer_scales per virtual layer, or -1 */
    int n_phys, n_ctrl, n_depth, n_skip, n_rsets, n_norms, n_attn, mlp3;
    utg__heavy_ix *heavy;
    utg__ctrl_ix *ctrl;
    utg__rset *rsets;
    /* depth plans */
    int n_plans, phase;
    utg_plan *plans;
    const utg_plan *plan; /* plans + phase */
    int lane_mode, final_lane, lanes_any, cond_any, iter_any; /* cond: FiLM or ITER_*; iter: ITER_* */
    /* shape */
    int d, H, Hkv, hd, kvd, F, V, T;
    int rd;          /* rotary dims per head (ROPE_DIMS) */
    int gate_win;    /* attention gate: input channels read (0: no gate) */
    float gate_scale, gate_mult;
    int t_smear_w, t_smear_lam; /* SmearGate tensors, -1 when off */
    int t_bg_embed, t_bg_proj, t_bg_scale; /* BigramHash tensors, -1 when off */
    int32_t *bigram_ids, *host_bigram_ids; /* BigramHash: the bucket of every token (backend, host) */
    void *bigram_rows, *bigram_proj;       /* BigramHash: each token's B[h] row, and its projection */
    void *g_bigram_rows, *g_bigram_proj;   /* their gradients */
    int xsa_from;    /* control owners from this index on run XSA (n_ctrl: none) */
    float slope;     /* MLP activation: leaky_relu(x, slope)^2; 0 = relu^2 */
    float eps, softcap;
    float *rope_cs;   /* [T, hd/2] cos then sin, for the training length */
    float *rope_eval; /* the same for rope_eval_len (evaluation at another length) */
    int rope_eval_len;
    int Tc;           /* sequence length of the current forward */
    const float *rope_cur;
    char *cfg_strings; /* the model's own copies of cfg's string values (utg__own_config_strings) */
    float *const_buf;  /* backend memory of the two constants below (utg__upload_constants) */
    float *half;       /* one 0.5 on the backend: the scalar weight of a two-lane mean */
    float *minus_ones; /* d values of -1 on the backend: the weight of a subtraction (utg__sub) */
    double *step_stats; /* backend: the step's loss sum and gradient sum of squares (UTG__STAT_*) */
    int step_forwards;  /* training forwards since utg_model_zero_grads: the loss sum's count */
    /* activations, sized for cap_tok tokens */
    int cap_tok, n_tok;
    void *act_arena;
    double act_bytes_per_token[2]; /* the arena's bytes per token with fp32 and with bf16 storage */
    utg__acts *acts;
    void *emb, *x0, *hlast, *hf, *logits; /* in the activation type m->at */
    float *r0, *rf, *row_loss;            /* the two norms' 1/rms and the per-token losses: fp32 */
    int32_t *ids, *tgt;
    void **slot_src; /* per skip slot: the pushed layer output */
    /* Gradient temporaries, shared by all layers (a layer's backward is done before the next
       starts). g_X is dL/dX; [N, d] unless noted. */
    void *g_lane0, *g_lane0_spare; /* the stream's gradient, and a buffer to swap with it */
    void *g_lane1, *g_lane1_spare; /* the same for the second lane of parallel residuals */
    void *g_lane0_mid, *g_lane1_mid; /* two_lane: the lanes after the attention update */
    void *g_attn_scaled, *g_mlp_scaled; /* lanes: attn_scale * attention, mlp_scale * MLP */
    void *g_mix_out;   /* a resid_mix output, the input of an attention (or two_lane MLP) */
    void *g_normed;    /* a sublayer's normed input; first the MLP output, which it reuses */
    void *g_attn_out;  /* an attention sublayer's output, after its projection */
    void *g_heads;     /* the attention heads before the projection; then raw q */
    void *g_q;         /* q after norm, RoPE and gain */
    void *g_k, *g_v;   /* k after norm and RoPE, and v: [N, kvd] */
    void *g_k_raw;     /* k before norm and RoPE (first XSA's share of dv): [N, kvd] */
    void *g_hidden, *g_hidden_pre; /* the MLP hidden layer after and before the activation: [N, F] */
    void *g_x0;        /* the embedding stream x0 that every resid_mix reads */
    void *g_depth_cond; /* ITER_* and SHC: [2, N, d], the identity path and d(delta) */
    void *g_skip;      /* [max_slots, N, d] the U-Net skip slots */
    void *g_gate_in;   /* attention gate: its input's gradient, added to the attention input's */
    void *emb_s, *g_emb; /* SmearGate: the smeared embedding, and dL/d(the raw embedding) */
    void *xn, *xprev;    /* SMEAR_ENABLED: the normed embedding, and it shifted by one position */
    /* value embedding: the rows, their projection and its scaled form [N, kvd]; their gradients */
    void *ve_rows, *ve_projected, *ve_scaled;
    void *g_ve_rows, *g_ve_proj, *g_ve_scaled;
    void *g_v0;          /* VALUE_RESIDUAL: dL/d(layer 0's values) from the later layers */
    int max_slots; /* the most skip slots any plan uses (at least 1) */
    int have_forward;
};

static void utg__log(utg_model *m, utg_log_level lvl, const char *fmt, ...) UTG__PRINTF(3, 4);
/* printf-style message to the model's logger, if it has one. */
static void utg__log(utg_model *m, utg_log_level lvl, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    if (!m || !m->logger.fn) return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    m->logger.fn(lvl, buf, __FILE__, __LINE__, m->logger.user);
}

/* Appends a tensor of shape [d0, d1, d2] (ndim of them used) to the table, at the end of the arena
   (each tensor starting on a 16-float boundary), and returns its index. block is the physical
   block it belongs to (-1: none), role what the optimizer and the quantizer do with it. */
static int utg__add_tensor(utg_model *m, const char *name, utg_role role, int block, int ndim, int64_t d0,
                           int64_t d1, int64_t d2) {
    utg_tensor_info *t;
    UTG_ASSERT(m->n_tensors < m->max_tensors);
    t = &m->tensors[m->n_tensors];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    t->numel = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1) * (size_t)(ndim > 2 ? d2 : 1);
    t->role = role;
    t->block = block;
    t->offset = m->arena_floats;
    m->arena_floats += (t->numel + 15) & ~(size_t)15; /* keep every tensor 64-byte aligned */
    m->n_params += t->numel;
    return m->n_tensors++;
}

/* ---- the depth plans ---- */

/* "4,5" -> {4, 5}. Returns the count, or -1 on bad syntax or more than cap entries. */
static int utg__parse_ints(const char *s, int *out, int cap, int pairs) {
    int n = 0;
    if (!s) return 0;
    while (*s == ' ') s++;
    if (!*s) return 0;
    for (;;) {
        char *end;
        long v;
        int k;
        for (k = 0; k < (pairs ? 2 : 1); k++) {
            while (*s == ' ') s++;
            if (!(*s >= '0' && *s <= '9')) return -1;
            v = strtol(s, &end, 10);
            if (v < 0 || v > 1000000000L || n >= cap) return -1;
            out[n++] = (int)v;
            s = end;
            while (*s == ' ') s++;
            if (pairs && k == 0) { if (*s != ':') return -1; s++; }
        }
        if (!*s) return n;
        if (*s != ',') return -1;
        s++;
    }
}

#define UTG__MAX_VIRTUAL 4096

/* One phase of the recurrence while plans are compiled: its virtual->physical list (n entries, the
   first n_enc the U-Net encoder), the first layer that pops a skip, and when the phase begins
   (a step, or a fraction of training; -1: not by that measure). */
typedef struct utg__phase_src {
    int *list, n, n_enc, pop_start, start_step;
    double start_frac;
} utg__phase_src;

/* What utg__compile_plans carries between its steps: the knobs it reads, the full virtual->physical
   list of the recurrence form, the phases over it and the untied-MLP block set. The steps fail through
   UTG__FAIL (a message and UTG_ERR_CONFIG). */
typedef struct utg__plan_src {
    const utg_config *c;
    int L, n_full, n_enc_full, explicit_split, nph;
    int looped, untie, skips_loop, skips_none, ls, le, trig_step;
    double trig_frac;
    int *full, *tmp; /* UTG__MAX_VIRTUAL ints; tmp: 3 * UTG__MAX_VIRTUAL ints for parsing and phase lists */
    int n_untie_layers, untie_set[1024];
    utg__phase_src ph[64];
} utg__plan_src;
#define UTG__FAIL(...) do { utg__msgf(&m->msg, __VA_ARGS__); return UTG_ERR_CONFIG; } while (0)

/* ENCODER_LAYERS + DECODER_LAYERS: the full list given explicitly, with its U-Net split. */
static utg_result utg__plan_full_explicit(utg_model *m, utg__plan_src *s) {
    const utg_config *c = s->c;
    int ne = utg__parse_ints(c->encoder_layers, s->full, UTG__MAX_VIRTUAL, 0), nd;
    if (ne < 0)
        UTG__FAIL("ENCODER_LAYERS must be a comma-separated list of layer indexes (got '%s')",
                  c->encoder_layers);
    nd = utg__parse_ints(c->decoder_layers, s->full + ne, UTG__MAX_VIRTUAL - ne, 0);
    if (nd < 0)
        UTG__FAIL("DECODER_LAYERS must be a comma-separated list of layer indexes (got '%s')",
                  c->decoder_layers);
    if (ne + nd == 0) UTG__FAIL("ENCODER_LAYERS and DECODER_LAYERS are both empty");
    s->n_full = ne + nd;
    s->n_enc_full = ne;
    s->explicit_split = 1;
    return UTG_OK;
}

/* RECUR_LAYERS, cut and repeat (PR #1204): [0 .. cut-1] + recur + [cut .. L-1], cut = max(recur) + 1. */
static utg_result utg__plan_full_recur(utg_model *m, utg__plan_src *s) {
    const utg_config *c = s->c;
    int *tmp = s->tmp, L = s->L, i, nr = utg__parse_ints(c->recur_layers, tmp, 1024, 0), cut = 0;
    if (nr <= 0)
        UTG__FAIL("RECUR_LAYERS must be a comma-separated list of layer indexes (got '%s')", c->recur_layers);
    for (i = 0; i < nr; i++) if (tmp[i] + 1 > cut) cut = tmp[i] + 1;
    if (cut > L) UTG__FAIL("RECUR_LAYERS names layer %d but the model has %d", cut - 1, L);
    for (i = 0; i < cut; i++) s->full[s->n_full++] = i;
    for (i = 0; i < nr; i++) s->full[s->n_full++] = tmp[i];
    for (i = cut; i < L; i++) s->full[s->n_full++] = i;
    return UTG_OK;
}

/* NUM_LOOPS looping (PR #1394): [0 .. s-1] + (NUM_LOOPS+1) x [s .. e] + [e+1 .. L-1]. */
static utg_result utg__plan_full_looped(utg_model *m, utg__plan_src *s) {
    int L = s->L, ls = s->ls, le = s->le, i, j;
    if (ls > le || le >= L)
        UTG__FAIL("the looped segment LOOP_START..LOOP_END (%d..%d) must lie inside 0..%d", ls, le, L - 1);
    if ((long long)L + (long long)s->c->num_loops * (le - ls + 1) > UTG__MAX_VIRTUAL)
        UTG__FAIL("too many virtual layers");
    for (i = 0; i < ls; i++) s->full[s->n_full++] = i;
    for (j = 0; j <= s->c->num_loops; j++) for (i = ls; i <= le; i++) s->full[s->n_full++] = i;
    for (i = le + 1; i < L; i++) s->full[s->n_full++] = i;
    return UTG_OK;
}

/* Universal Transformer (PR #1110): UNIVERSAL_ITERATIONS passes over all blocks. */
static utg_result utg__plan_full_universal(utg_model *m, utg__plan_src *s) {
    int L = s->L, i;
    if ((long long)L * s->c->universal_iterations > UTG__MAX_VIRTUAL) UTG__FAIL("too many virtual layers");
    for (i = 0; i < L * s->c->universal_iterations; i++) s->full[s->n_full++] = i % L;
    return UTG_OK;
}

/* The full virtual->physical list of the one recurrence form configured (baseline: 0 .. L-1). */
static utg_result utg__plan_full(utg_model *m, utg__plan_src *s) {
    const utg_config *c = s->c;
    int i, kinds;
    kinds = (c->encoder_layers[0] || c->decoder_layers[0]) + (c->recur_layers[0] != 0) + s->looped +
            (c->universal_unique_blocks > 0);
    if (kinds > 1)
        UTG__FAIL("choose one recurrence form: ENCODER_LAYERS/DECODER_LAYERS, RECUR_LAYERS, NUM_LOOPS or "
                  "UNIVERSAL_UNIQUE_BLOCKS");
    if (c->encoder_layers[0] || c->decoder_layers[0]) return utg__plan_full_explicit(m, s);
    if (c->recur_layers[0]) return utg__plan_full_recur(m, s);
    if (s->looped) return utg__plan_full_looped(m, s);
    if (c->universal_unique_blocks > 0) return utg__plan_full_universal(m, s);
    for (i = 0; i < s->L; i++) s->full[s->n_full++] = i;
    return UTG_OK;
}

/* Every virtual layer names a physical one; the knobs that need a looped plan or one trigger. */
static utg_result utg__plan_check_full(utg_model *m, const utg__plan_src *s) {
    const utg_config *c = s->c;
    int i;
    for (i = 0; i < s->n_full; i++)
        if (s->full[i] < 0 || s->full[i] >= s->L)
            UTG__FAIL("virtual layer %d names physical layer %d, but there are %d", i, s->full[i], s->L);
    if (s->skips_loop && !s->looped) UTG__FAIL("UNET_SKIPS=loop needs a looped segment (NUM_LOOPS > 0)");
    if (c->loop_phase2_at > 0 &&
        !(s->looped && c->enable_looping_at > 0 && c->loop_phase2_at > c->enable_looping_at &&
          c->num_loops >= 2))
        UTG__FAIL("LOOP_PHASE2_AT needs NUM_LOOPS >= 2 and a smaller ENABLE_LOOPING_AT");
    if (s->trig_step >= 0 && s->trig_frac >= 0)
        UTG__FAIL("set RECUR_START_STEP or ENABLE_LOOPING_AT, not both");
    return UTG_OK;
}

/* Appends a phase: the n layers of list, from start_step (or the fraction start_frac of training). */
static void utg__plan_add_phase(utg__plan_src *s, int *list, int n, int start_step, double start_frac) {
    utg__phase_src *q = &s->ph[s->nph++];
    q->list = list;
    q->n = n;
    q->start_step = start_step;
    q->start_frac = start_frac;
}

/* NUM_LAYER_SCHEDULE curriculum: from each step on, the first `depth` layers of the full plan. */
static utg_result utg__plan_phases_schedule(utg_model *m, utg__plan_src *s) {
    const utg_config *c = s->c;
    int *tmp = s->tmp, p, npairs = utg__parse_ints(c->num_layer_schedule, tmp, 2 * 64, 1);
    if (npairs <= 0 || npairs % 2)
        UTG__FAIL("NUM_LAYER_SCHEDULE must look like 0:2,2000:6 (step:depth pairs; got '%s')",
                  c->num_layer_schedule);
    if (s->trig_step >= 0 || s->trig_frac >= 0)
        UTG__FAIL("NUM_LAYER_SCHEDULE does not combine with RECUR_START_STEP or ENABLE_LOOPING_AT");
    if (tmp[0] != 0) UTG__FAIL("NUM_LAYER_SCHEDULE must start at step 0 (got %d)", tmp[0]);
    for (p = 0; p < npairs / 2; p++) {
        int st = tmp[2 * p], dep = tmp[2 * p + 1];
        if (dep < 1 || dep > s->n_full)
            UTG__FAIL("NUM_LAYER_SCHEDULE depth %d is outside 1..%d (the full plan's virtual layers)", dep,
                      s->n_full);
        if (p > 0 && st <= tmp[2 * p - 2]) UTG__FAIL("NUM_LAYER_SCHEDULE steps must increase");
        utg__plan_add_phase(s, s->full, dep, st, -1);
    }
    return UTG_OK;
}

/* RECUR_START_STEP / ENABLE_LOOPING_AT: the flat model first, then the full recurrent plan (with
   LOOP_PHASE2_AT, one extra pass over the loop in between). */
static utg_result utg__plan_phases_switch(utg_model *m, utg__plan_src *s) {
    int *tmp = s->tmp, L = s->L, i, j, ntmp = 0;
    if (s->n_full == L) {
        for (i = 0; i < L && s->full[i] == i; i++) {}
        if (i == L) UTG__FAIL("RECUR_START_STEP / ENABLE_LOOPING_AT need a recurrent plan to switch to");
    }
    for (i = 0; i < L; i++) tmp[ntmp++] = i; /* phase 0: the flat model, blocks 0 .. L-1 */
    utg__plan_add_phase(s, tmp, L, 0, -1);
    if (s->c->loop_phase2_at > 0) { /* phase 1: one extra pass over the loop (PR #1412) */
        int *l1 = tmp + ntmp, n1 = 0;
        for (i = 0; i < s->ls; i++) l1[n1++] = i;
        for (j = 0; j < 2; j++) for (i = s->ls; i <= s->le; i++) l1[n1++] = i;
        for (i = s->le + 1; i < L; i++) l1[n1++] = i;
        utg__plan_add_phase(s, l1, n1, -1, s->trig_frac);
        utg__plan_add_phase(s, s->full, s->n_full, -1, s->c->loop_phase2_at);
    } else {
        utg__plan_add_phase(s, s->full, s->n_full, s->trig_step, s->trig_frac);
    }
    return UTG_OK;
}

/* The phases: a depth curriculum, a switch to recurrence during training, or the full plan throughout. */
static utg_result utg__plan_phases(utg_model *m, utg__plan_src *s) {
    if (s->c->num_layer_schedule[0]) return utg__plan_phases_schedule(m, s);
    if (s->trig_step >= 0 || s->trig_frac >= 0) return utg__plan_phases_switch(m, s);
    utg__plan_add_phase(s, s->full, s->n_full, 0, -1);
    return UTG_OK;
}

/* U-Net split of each phase: pops start after the last push, so every pop reads a slot pushed
   earlier in the same phase (utg__verify_plan proves it once the tensors exist) */
static void utg__plan_unet_split(utg__plan_src *s) {
    int p;
    for (p = 0; p < s->nph; p++) {
        utg__phase_src *q = &s->ph[p];
        if (s->explicit_split && q->list == s->full && q->n == s->n_full) q->n_enc = s->n_enc_full;
        else q->n_enc = q->n / 2;
        q->pop_start = q->n_enc;
        if (s->skips_loop) { /* stem -> tail: the layers before the loop push, the layers after it pop */
            int tail = s->L - 1 - s->le;
            q->n_enc = s->ls < q->n ? s->ls : q->n; /* a NUM_LAYER_SCHEDULE prefix may end inside the stem */
            /* a prefix holds the tail's head, or none of it */
            q->pop_start = (q->list == s->full ? s->n_full : q->n) - tail;
        }
        if (q->pop_start < q->n_enc) q->pop_start = q->n_enc;
    }
}

/* REPEAT_UNTIE_MLP_LAYERS: the blocks whose repeat visits get MLPs of their own (none listed: all). */
static utg_result utg__plan_untie_layers(utg_model *m, utg__plan_src *s) {
    const utg_config *c = s->c;
    int i;
    s->n_untie_layers = 0;
    if (!s->untie) return UTG_OK;
    s->n_untie_layers = utg__parse_ints(c->repeat_untie_mlp_layers, s->untie_set, 1024, 0);
    if (s->n_untie_layers < 0)
        UTG__FAIL("REPEAT_UNTIE_MLP_LAYERS must be a comma-separated list (got '%s')",
                  c->repeat_untie_mlp_layers);
    for (i = 0; i < s->n_untie_layers; i++)
        if (s->untie_set[i] >= s->L)
            UTG__FAIL("REPEAT_UNTIE_MLP_LAYERS names layer %d but the model has %d", s->untie_set[i], s->L);
    return UTG_OK;
}

/* The lane mode of parallel residuals and the per-iteration conditioning, and the forms that exclude
   each other. */
static utg_result utg__plan_lanes(utg_model *m, const utg_config *c) {
    m->lane_mode = c->parallel_residual == UTG_PARALLEL_RESIDUAL_GPTJ       ? UTG_LANE_GPTJ
                   : c->parallel_residual == UTG_PARALLEL_RESIDUAL_TWO_LANE ? UTG_LANE_TWO
                   : c->parallel_residual == UTG_PARALLEL_RESIDUAL_PARALLEL ? UTG_LANE_PARALLEL
                                                                            : UTG_LANE_SINGLE;
    m->final_lane = c->parallel_final_lane == UTG_PARALLEL_FINAL_LANE_ATTN  ? 1
                    : c->parallel_final_lane == UTG_PARALLEL_FINAL_LANE_MLP ? 2
                                                                            : 0;
    m->lanes_any = m->lane_mode == UTG_LANE_TWO || m->lane_mode == UTG_LANE_PARALLEL;
    m->iter_any = c->iter_embed > 0 || c->iter_scale > 0 || c->shc_enabled > 0;
    m->cond_any = m->iter_any || c->film > 0;
    if (m->lane_mode != UTG_LANE_SINGLE && m->n_attn != 1) UTG__FAIL("parallel residuals need BLOCK_ATTNS=1");
    if (c->film > 0 && (c->iter_embed > 0 || c->iter_scale > 0))
        UTG__FAIL("FILM does not combine with ITER_EMBED / ITER_SCALE (two forms of the same conditioning)");
    if (c->film > 0 && c->shc_enabled > 0) UTG__FAIL("FILM does not combine with SHC_ENABLED");
    if (m->lanes_any && m->cond_any) {
        char lanes[32];
        utg_config_format(c, utg_config_find_knob("PARALLEL_RESIDUAL"), lanes, sizeof lanes);
        UTG__FAIL("ITER_EMBED, ITER_SCALE, SHC_ENABLED and FILM work on one lane: "
                  "they do not combine with PARALLEL_RESIDUAL=%s", lanes);
    }
    return UTG_OK;
}

/* The untied MLP set of block b's visit-th repeat (new on first use, then plan P initialises it), or
   -1 when REPEAT_UNTIE_MLP_LAYERS leaves block b tied. */
static int utg__plan_mlp_set(utg_model *m, const utg__plan_src *s, utg_plan *P, int b, int visit) {
    int k, listed = s->n_untie_layers == 0;
    for (k = 0; k < s->n_untie_layers; k++) listed |= s->untie_set[k] == b;
    if (!listed) return -1;
    for (k = 0; k < m->n_rsets; k++) if (m->rsets[k].block == b && m->rsets[k].visit == visit) break;
    if (k == m->n_rsets) {
        m->rsets[k].block = b;
        m->rsets[k].visit = visit;
        m->n_rsets++;
        P->init_sets[P->n_init_sets++] = k;
    }
    return k;
}

/* Phase q's plan P: each layer's block, control owner, visit, MLP set, skip push and pop, and lane. */
static utg_result utg__plan_build_phase(utg_model *m, const utg__plan_src *s, const utg__phase_src *q,
                                        utg_plan *P) {
    const utg_config *c = s->c;
    int skips_none = s->skips_none, i, j, dec_from;
    int n_skip = skips_none ? 0 : (q->n_enc < q->n - q->pop_start ? q->n_enc : q->n - q->pop_start);
    if (n_skip < 0) n_skip = 0;
    P->n_layers = q->n;
    P->n_encoder = skips_none ? 0 : q->n_enc;
    P->n_slots = skips_none ? 0 : q->n_enc;
    P->start_step = q->start_step;
    P->start_frac = q->start_frac;
    P->lanes_from = -1;
    P->layers = (utg_plan_layer *)utg__alloc(&m->alloc, sizeof(utg_plan_layer) * (size_t)q->n);
    P->init_sets = (int *)utg__alloc(&m->alloc, sizeof(int) * (size_t)q->n);
    if (!P->layers || !P->init_sets) return UTG_ERR_NOMEM;
    dec_from = skips_none ? q->n / 2 : q->n_enc;
    for (i = 0; i < q->n; i++) {
        utg_plan_layer *pl = &P->layers[i];
        int b = q->list[i];
        pl->block = b;
        pl->ctrl = c->control_scope == UTG_CONTROL_SCOPE_VIRTUAL ? i : b;
        pl->visit = 0;
        for (j = 0; j < i; j++) pl->visit += q->list[j] == b;
        pl->mlp_set = s->untie && pl->visit > 0 ? utg__plan_mlp_set(m, s, P, b, pl->visit) : -1;
        pl->push_slot = (!skips_none && i < q->n_enc) ? i : -1;
        pl->pop_slot = pl->skip_index = -1;
        if (i >= q->pop_start && i - q->pop_start < n_skip) {
            pl->skip_index = i - q->pop_start;
            pl->pop_slot = q->n_enc - 1 - pl->skip_index;
        }
        pl->lane = UTG_LANE_SINGLE;
        /* from the first decoder layer at PARALLEL_START_LAYER on, every later layer too */
        if (m->lane_mode != UTG_LANE_SINGLE && i >= dec_from &&
            (b >= UTG_OFF0(c->parallel_start_layer) ||
             (i > 0 && P->layers[i - 1].lane != UTG_LANE_SINGLE))) {
            pl->lane = m->lane_mode;
            if (m->lanes_any && P->lanes_from < 0) P->lanes_from = i;
        }
        if (pl->lane != UTG_LANE_SINGLE && pl->push_slot >= 0)
            UTG__FAIL("a parallel-residual layer cannot push a U-Net skip");
    }
    if (n_skip > m->n_skip) m->n_skip = n_skip;
    if (P->n_slots > m->max_slots) m->max_slots = P->n_slots;
    if (q->n > m->n_depth) m->n_depth = q->n;
    return UTG_OK;
}

/* Allocates the plans and the untied sets, then builds one plan per phase. */
static utg_result utg__plan_build(utg_model *m, const utg__plan_src *s) {
    int p;
    utg_result r;
    m->plans = (utg_plan *)utg__alloc(&m->alloc, sizeof(utg_plan) * (size_t)s->nph);
    m->rsets = (utg__rset *)utg__alloc(&m->alloc, sizeof(utg__rset) * (size_t)UTG__MAX_VIRTUAL);
    if (!m->plans || !m->rsets) return UTG_ERR_NOMEM;
    memset(m->plans, 0, sizeof(utg_plan) * (size_t)s->nph);
    m->n_plans = s->nph;
    m->n_depth = m->n_skip = m->n_rsets = 0;
    m->max_slots = 1;
    for (p = 0; p < s->nph; p++)
        if ((r = utg__plan_build_phase(m, s, &s->ph[p], &m->plans[p])) != UTG_OK) return r;
    return UTG_OK;
}

/* The control owners (per virtual layer or per block), XSA's first layer, and DISABLE_LAYER0_ATTN's
   attention-free block 0, which runs on one lane. */
static utg_result utg__plan_controls(utg_model *m, const utg_config *c, int L) {
    int p, i;
    m->n_ctrl = c->control_scope == UTG_CONTROL_SCOPE_VIRTUAL ? m->n_depth : L;
    m->xsa_from = c->xsa_last_n >= m->n_ctrl ? 0 : m->n_ctrl - c->xsa_last_n;
    if (c->disable_layer0_attn > 0)
        for (p = 0; p < m->n_plans; p++)
            for (i = 0; i < m->plans[p].n_layers; i++)
                if (m->plans[p].layers[i].block == 0 && m->plans[p].layers[i].lane != UTG_LANE_SINGLE)
                    UTG__FAIL("DISABLE_LAYER0_ATTN: block 0 runs with parallel residuals in virtual layer %d",
                              i);
    return UTG_OK;
}

/* VE_LAYERS: the virtual layers that add the value embedding, each with its row (the plans' lists are
   copied by now: tmp is free again). */
static utg_result utg__plan_ve_layers(utg_model *m, const utg__plan_src *s) {
    const utg_config *c = s->c;
    int *tmp = s->tmp, i, ntmp;
    m->n_ve = 0;
    if (c->ve_enabled <= 0) return UTG_OK;
    m->ve_of = (int *)utg__alloc(&m->alloc, sizeof(int) * (size_t)m->n_depth);
    if (!m->ve_of) return UTG_ERR_NOMEM;
    for (i = 0; i < m->n_depth; i++) m->ve_of[i] = -1;
    ntmp = utg__parse_ints(c->ve_layers, tmp, UTG__MAX_VIRTUAL, 0);
    if (ntmp <= 0)
        UTG__FAIL("VE_LAYERS must be a comma-separated list of virtual layers (got '%s')", c->ve_layers);
    for (i = 0; i < ntmp; i++) {
        if (tmp[i] >= m->n_depth)
            UTG__FAIL("VE_LAYERS names virtual layer %d but the deepest plan has %d", tmp[i], m->n_depth);
        if (m->ve_of[tmp[i]] >= 0) UTG__FAIL("VE_LAYERS names virtual layer %d twice", tmp[i]);
        m->ve_of[tmp[i]] = i;
    }
    m->n_ve = ntmp;
    return UTG_OK;
}
#undef UTG__FAIL

/* Compile the configured recurrence into plans: the virtual->physical list of each
   phase, its U-Net split, control owners, untied MLP sets and lane modes. */
static utg_result utg__compile_plans(utg_model *m) {
    const utg_config *c = &m->cfg;
    utg__plan_src s;
    utg_result r;
    memset(&s, 0, sizeof s);
    s.c = c;
    s.L = m->n_phys;
    s.n_enc_full = -1;
    s.looped = c->num_loops > 0;
    s.untie = c->repeat_untie_mlp != UTG_REPEAT_UNTIE_MLP_NONE;
    s.skips_loop = c->unet_skips == UTG_UNET_SKIPS_LOOP;
    s.skips_none = c->unet_skips == UTG_UNET_SKIPS_NONE;
    s.ls = UTG_OFF0(c->loop_start);
    s.le = UTG_OFF0(c->loop_end);
    s.trig_step = c->recur_start_step > 0 ? c->recur_start_step : -1;
    s.trig_frac = c->enable_looping_at > 0 ? c->enable_looping_at : -1.0;
    s.full = (int *)utg__alloc(&m->alloc, sizeof(int) * 4 * UTG__MAX_VIRTUAL);
    if (!s.full) return UTG_ERR_NOMEM;
    s.tmp = s.full + UTG__MAX_VIRTUAL;
    r = utg__plan_full(m, &s);
    if (r == UTG_OK) r = utg__plan_check_full(m, &s);
    if (r == UTG_OK) r = utg__plan_phases(m, &s);
    if (r == UTG_OK) {
        utg__plan_unet_split(&s);
        r = utg__plan_untie_layers(m, &s);
    }
    if (r == UTG_OK) r = utg__plan_lanes(m, c);
    if (r == UTG_OK) r = utg__plan_build(m, &s);
    if (r == UTG_OK) r = utg__plan_controls(m, c, s.L);
    if (r == UTG_OK) r = utg__plan_ve_layers(m, &s);
    utg__free(&m->alloc, s.full);
    return r;
}

/* Prove what the forward and backward rely on, for one plan: every layer names a block, a control
   owner, an MLP set and a skip row that exist in the tensor table, and every pop reads a skip slot
   that an earlier layer of the same plan pushed (a push happens after its layer, a pop before). */
static utg_result utg__verify_plan(utg_model *m, int p) {
    const utg_plan *P = &m->plans[p];
    unsigned char pushed[UTG__MAX_VIRTUAL];
    int i;
#define UTG__BAD(...) do { char why_[256]; snprintf(why_, sizeof why_, __VA_ARGS__); \
                           utg__msgf(&m->msg, "depth plan %d, virtual layer %d: %s", p, i, why_); return UTG_ERR_CONFIG; } while (0)
    if (P->n_slots < 0 || P->n_slots > m->max_slots || P->n_slots > UTG__MAX_VIRTUAL) { i = -1; UTG__BAD("%d skip slots", P->n_slots); }
    memset(pushed, 0, sizeof pushed);
    for (i = 0; i < P->n_layers; i++) {
        const utg_plan_layer *pl = &P->layers[i];
        int b = pl->block;
        if (b < 0 || b >= m->n_phys) UTG__BAD("block %d does not exist (%d physical blocks)", b, m->n_phys);
        if (m->heavy[b].fc < 0 || m->heavy[b].mlp_proj < 0) UTG__BAD("block %d has no MLP tensors", b);
        if (m->heavy[b].c_q[0] < 0 && !(b == 0 && m->cfg.disable_layer0_attn > 0)) UTG__BAD("block %d has no attention tensors", b);
        if (pl->ctrl < 0 || pl->ctrl >= m->n_ctrl || m->ctrl[pl->ctrl].mlp_scale < 0)
            UTG__BAD("control owner %d does not exist (%d owners)", pl->ctrl, m->n_ctrl);
        if (pl->mlp_set < -1 || pl->mlp_set >= m->n_rsets || (pl->mlp_set >= 0 && m->rsets[pl->mlp_set].proj < 0))
            UTG__BAD("untied MLP set %d does not exist (%d sets)", pl->mlp_set, m->n_rsets);
        if (pl->lane != UTG_LANE_SINGLE && m->lanes_any && m->t_par_post < 0) UTG__BAD("parallel lanes without their lambdas");
        if (pl->pop_slot >= 0) {
            if (pl->pop_slot >= P->n_slots || !pushed[pl->pop_slot]) {
                char skips[32];
                utg_config_format(&m->cfg, utg_config_find_knob("UNET_SKIPS"), skips, sizeof skips);
                UTG__BAD("pops skip slot %d, which no earlier layer of the plan pushed (UNET_SKIPS=%s)",
                         pl->pop_slot, skips);
            }
            if (pl->skip_index < 0 || pl->skip_index >= m->n_skip || m->t_skip < 0)
                UTG__BAD("reads skip_weights row %d of %d", pl->skip_index, m->n_skip);
        } else if (pl->pop_slot != -1) UTG__BAD("skip slot %d", pl->pop_slot);
        if (pl->push_slot >= 0) {
            if (pl->push_slot >= P->n_slots) UTG__BAD("pushes skip slot %d of %d", pl->push_slot, P->n_slots);
            pushed[pl->push_slot] = 1;
        } else if (pl->push_slot != -1) UTG__BAD("skip slot %d", pl->push_slot);
        if (m->ve_of && m->ve_of[i] >= m->n_ve) UTG__BAD("value-embedding scale %d of %d", m->ve_of[i], m->n_ve);
    }
#undef UTG__BAD
    return UTG_OK;
}

/* Frees every plan with its layer and init-set arrays; the model is left with no plans. */
static void utg__free_plans(utg_model *m) {
    int p;
    if (m->plans)
        for (p = 0; p < m->n_plans; p++) {
            utg__free(&m->alloc, m->plans[p].layers);
            utg__free(&m->alloc, m->plans[p].init_sets);
        }
    utg__free(&m->alloc, m->plans);
    m->plans = NULL;
    m->n_plans = 0;
}

UTGDEF const char *utg_plan_describe(const utg_plan *p, char *buf, size_t n) {
    size_t at = 0;
    int i;
    if (!buf || !n) return buf;
    buf[0] = 0;
    if (!p) return buf;
#define UTG__PUT(...)                                     \
    do {                                                  \
        int w_ = snprintf(buf + at, n - at, __VA_ARGS__); \
        if (w_ < 0 || (size_t)w_ >= n - at) return buf;   \
        at += (size_t)w_;                                 \
    } while (0)
    UTG__PUT("%d virtual layer%s:", p->n_layers, p->n_layers == 1 ? "" : "s");
    for (i = 0; i < p->n_layers; i++) {
        if (i == p->n_encoder && i > 0) UTG__PUT(" |");
        if (i == p->lanes_from) UTG__PUT(" =");
        UTG__PUT(" %d%s", p->layers[i].block, p->layers[i].mlp_set >= 0 ? "'" : "");
    }
#undef UTG__PUT
    return buf;
}

/* Carving one arena: pass 1 runs with base 0 to measure, pass 2 hands out the pointers. */
typedef struct utg__carver {
    char *base;
    size_t used;
    int overflow;
} utg__carver;
/* n elements of elem_size bytes from the carver on a 64-byte boundary: a pointer in pass 2, NULL
   in pass 1 (measuring) or once the size overflowed (c->overflow then set). */
static void *utg__carve_bytes(utg__carver *c, size_t n, size_t elem_size) {
    size_t bytes, start = (c->used + 63) & ~(size_t)63, end;
    if (!utg__mul_ok(n, elem_size, &bytes) || !utg__add_ok(start, bytes, &end)) {
        c->overflow = 1;
        return NULL;
    }
    c->used = end;
    return c->base ? (void *)(c->base + start) : NULL;
}
/* n fp32 values (statistics, losses; int32 ids) */
static float *utg__carve(utg__carver *c, size_t n) { return (float *)utg__carve_bytes(c, n, sizeof(float)); }
/* n activations, in the model's storage type */
static void *utg__carve_act(const utg_model *m, utg__carver *c, size_t n) {
    return utg__carve_bytes(c, n, m->at_size);
}

/* The address of activation element i of an activation buffer (any storage type): activation
   buffers are void pointers, so that no offset is ever counted in floats by mistake. */
static void *utg__act_at(const utg_model *m, const void *base, size_t i) {
    return (char *)(uintptr_t)base + i * m->at_size;
}
/* n activations from backend memory into host floats (bf16 widened; one wait) */
static void utg__download_acts(utg_model *m, float *host, const void *src, size_t n) {
    size_t i;
    m->be->download(m->be, host, src, n * m->at_size);
    if (m->at != UTG_DT_BF16) return;
    for (i = n; i-- > 0;) { /* widened in place from the end: element i's bf16 lies below its float */
        uint16_t h;
        float f;
        memcpy(&h, (char *)host + 2 * i, 2);
        f = utg__bf16_to_f32(h);
        memcpy((char *)host + 4 * i, &f, 4);
    }
}

/* The model's matmuls (m->mm: matmul, or matmul_bf16 with MATMUL_BF16), with the operand types
   their shape implies: a transposed A is a weight gradient, C[F32] += A^T[act] B[act] (and the
   Hessians' X^T X); otherwise C[act] = A[act] op(W[F32]). */
static void utg__model_mm(utg_model *m, void *C, const void *A, const void *B, int M, int N, int K,
                          utg_trans ta, utg_trans tb, float alpha, float beta) {
    int types =
        ta == UTG_TRANS ? UTG_MM_TYPES(UTG_DT_F32, m->at, m->at) : UTG_MM_TYPES(m->at, m->at, UTG_DT_F32);
    m->mm(m->be, types, C, A, B, M, N, K, ta, tb, alpha, beta);
}

#define UTG__W(t) (m->params + m->tensors[t].offset)
#define UTG__G(t) (m->grads + m->tensors[t].offset)

/* The common forms of the backend's channel mix (mix_fwd), named at the call site. Rows of `cols`
   channels; out may alias x. A weight w is per channel ([cols]) unless the name says scalar. */
static void utg__add(utg_model *m, void *out, const void *x, const void *z, int rows, int cols) {
    m->be->mix_fwd(m->be, m->at, out, x, NULL, z, NULL, rows, cols, 0); /* out = x + z */
}
static void utg__add_scaled(utg_model *m, void *out, const void *x, const void *z, const float *w, int rows,
                            int cols) {
    m->be->mix_fwd(m->be, m->at, out, x, NULL, z, w, rows, cols, 0); /* out = x + w * z */
}
static void utg__add_scaled_by_scalar(utg_model *m, void *out, const void *x, const void *z, const float *w,
                                      int rows, int cols) {
    m->be->mix_fwd(m->be, m->at, out, x, NULL, z, w, rows, cols, UTG_MIX_WZ_SCALAR); /* out = x + w[0] * z */
}
static void utg__scale(utg_model *m, void *out, const void *x, const float *w, int rows, int cols) {
    m->be->mix_fwd(m->be, m->at, out, x, w, NULL, NULL, rows, cols, 0); /* out = w * x */
}
static void utg__add_bias(utg_model *m, void *out, const void *x, const float *bias, int rows, int cols) {
    m->be->mix_fwd(m->be, m->at, out, x, NULL, NULL, bias, rows, cols, 0); /* out = x + bias */
}
/* out = x - z over rows of d channels */
static void utg__sub(utg_model *m, void *out, const void *x, const void *z, int rows) {
    m->be->mix_fwd(m->be, m->at, out, x, NULL, z, m->minus_ones, rows, m->d, 0);
}
/* out = (a + b) / 2 over rows of d channels */
static void utg__mean(utg_model *m, void *out, const void *a, const void *b, int rows) {
    m->be->mix_fwd(m->be, m->at, out, a, m->half, b, m->half, rows, m->d,
                   UTG_MIX_WX_SCALAR | UTG_MIX_WZ_SCALAR);
}
/* out = x / 2 over rows of d channels */
static void utg__halve(utg_model *m, void *out, const void *x, int rows) {
    m->be->mix_fwd(m->be, m->at, out, x, m->half, NULL, NULL, rows, m->d, UTG_MIX_WX_SCALAR);
}

/* the id before each document (SentencePiece's bos_id in the challenge's tokenizers): the SmearGate
   does not reach across it */
#define UTG__BOS_ID 1

/* Shift by one position within each sequence: dst[s, t] = src[s, t - 1], zero at t = 0; back = 1 is its
   transpose, dst[s, t - 1] += src[s, t]. */
static void utg__shift(utg_model *m, void *dst, const void *src, int n_seqs, int back) {
    size_t row = (size_t)m->d, seq = (size_t)m->Tc * row;
    int s;
    for (s = 0; s < n_seqs; s++) {
        void *o = utg__act_at(m, dst, (size_t)s * seq);
        const void *i = utg__act_at(m, src, (size_t)s * seq);
        if (back) { /* o[t - 1] += i[t]: a mix whose output is its x */
            m->be->mix_fwd(m->be, m->at, o, o, NULL, utg__act_at(m, i, row), NULL, m->Tc - 1, m->d, 0);
        } else {
            m->be->fill(m->be, o, m->at, 0.0f, row);
            m->be->copy(m->be, utg__act_at(m, o, row), i, (seq - row) * m->at_size);
        }
    }
}

/* ---- features of the embedding stage: each one's tensors, buffers, forward and backward ----
   The stage computes x0, the stream every layer starts from and every resid_mix reads:
       emb = tok_emb[ids] [+ BigramHash];  emb' = SmearGate(emb) or emb;
       x0 = rmsnorm(emb'), or with the static smear lerp(shift(xn), xn, sigmoid(g)), xn = rmsnorm(emb').
   A feature is on when its first tensor index is >= 0. */

/* BigramHash (BIGRAM_VOCAB_SIZE, PR #162): emb += scale * proj(B[h(prev, cur)]). Table and
   projection start at zero, the scale at 0.05. */
static void utg__bigram_tensors(utg_model *m) {
    const utg_config *c = &m->cfg;
    m->t_bg_embed = m->t_bg_proj = m->t_bg_scale = -1;
    if (c->bigram_vocab_size <= 0) return;
    m->t_bg_embed = utg__add_tensor(m, "bigram.embed.weight", UTG_ROLE_EMBED, -1, 2, c->bigram_vocab_size,
                                    c->bigram_dim, 0);
    m->t_bg_proj = utg__add_tensor(m, "bigram.proj.weight", UTG_ROLE_MATRIX, -1, 2, m->d, c->bigram_dim, 0);
    m->t_bg_scale = utg__add_tensor(m, "bigram.scale", UTG_ROLE_CONTROL, -1, 1, 1, 0, 0);
}
/* BigramHash's buffers for N tokens: bucket ids, the looked-up rows [N, bigram_dim], their
   projection [N, d], and the gradients of the last two. */
static void utg__bigram_carve(utg_model *m, utg__carver *c, size_t N) {
    size_t db = (size_t)m->cfg.bigram_dim, d = (size_t)m->d;
    if (m->t_bg_embed < 0) return;
    m->bigram_ids = (int32_t *)utg__carve(c, N);
    m->bigram_rows = utg__carve_act(m, c, N * db);
    m->bigram_proj = utg__carve_act(m, c, N * d);
    m->g_bigram_rows = utg__carve_act(m, c, N * db);
    m->g_bigram_proj = utg__carve_act(m, c, N * d);
}
/* The records' hash, in int32 arithmetic: (36313 cur) ^ (27191 prev) mod (K - 1); the first token
   of each sequence, which has no predecessor, gets bucket K - 1. */
static void utg__bigram_forward(utg_model *m, const int32_t *inputs, int N) {
    utg_backend *be = m->be;
    int K = m->cfg.bigram_vocab_size, db = m->cfg.bigram_dim, i;
    for (i = 0; i < N; i++) {
        uint32_t h;
        if (i % m->Tc == 0) {
            m->host_bigram_ids[i] = K - 1;
            continue;
        }
        h = (uint32_t)((int32_t)(36313 * inputs[i]) ^ (int32_t)(27191 * inputs[i - 1]));
        m->host_bigram_ids[i] = (int32_t)(h % (uint32_t)(K - 1));
    }
    be->upload(be, m->bigram_ids, m->host_bigram_ids, (size_t)N * sizeof(int32_t));
    be->embed_fwd(be, m->at, m->bigram_rows, UTG__W(m->t_bg_embed), m->bigram_ids, N, db);
    utg__model_mm(m, m->bigram_proj, m->bigram_rows, UTG__W(m->t_bg_proj), N, m->d, db, UTG_NO_TRANS,
                  UTG_TRANS, 1.0f, 0.0f);
    utg__add_scaled_by_scalar(m, m->emb, m->emb, m->bigram_proj, UTG__W(m->t_bg_scale), N, m->d);
}
/* gE = dL/d(emb): adds the gradients of the table, the projection and the scale. */
static void utg__bigram_backward(utg_model *m, const void *gE, int N) {
    utg_backend *be = m->be;
    int db = m->cfg.bigram_dim, d = m->d;
    const float *scale = UTG__W(m->t_bg_scale);
    be->fill(be, m->g_bigram_proj, m->at, 0.0f, (size_t)N * d);
    be->mix_bwd(be, m->at, NULL, m->g_bigram_proj, NULL, UTG__G(m->t_bg_scale), gE, NULL, NULL,
                m->bigram_proj, scale, N, d, UTG_MIX_WZ_SCALAR);
    utg__model_mm(m, m->g_bigram_rows, m->g_bigram_proj, UTG__W(m->t_bg_proj), N, db, d, UTG_NO_TRANS,
                  UTG_NO_TRANS, 1.0f, 0.0f);
    utg__model_mm(m, UTG__G(m->t_bg_proj), m->g_bigram_proj, m->bigram_rows, d, db, N, UTG_TRANS,
                  UTG_NO_TRANS, 1.0f, 1.0f);
    be->embed_bwd(be, m->at, UTG__G(m->t_bg_embed), m->g_bigram_rows, m->bigram_ids, N, db);
}

/* The input-dependent SmearGate (SMEAR_GATE_ENABLED, PR #1667, BOS-masked as PR #1855):
   emb'_t = emb_t + lambda * sigmoid(w . emb_t[:GATE_WINDOW]) * emb_{t-1}, never across a BOS.
   w and lambda start at zero, so the gate starts transparent. */
static void utg__smear_gate_tensors(utg_model *m) {
    m->t_smear_w = m->t_smear_lam = -1;
    if (m->cfg.smear_gate_enabled <= 0) return;
    m->t_smear_w = utg__add_tensor(m, "smear_gate.weight", UTG_ROLE_CONTROL, -1, 2, 1, m->cfg.gate_window, 0);
    m->t_smear_lam = utg__add_tensor(m, "smear_lambda", UTG_ROLE_CONTROL, -1, 1, 1, 0, 0);
}
/* The smeared embedding and dL/d(emb), [N, d] each (NULL when the gate is off). */
static void utg__smear_gate_carve(utg_model *m, utg__carver *c, size_t N) {
    m->emb_s = m->t_smear_w >= 0 ? utg__carve_act(m, c, N * (size_t)m->d) : NULL;
    m->g_emb = m->t_smear_w >= 0 ? utg__carve_act(m, c, N * (size_t)m->d) : NULL;
}
/* Returns the smeared embedding. */
static const void *utg__smear_gate_forward(utg_model *m, int N) {
    m->be->smear_fwd(m->be, m->at, m->emb_s, m->emb, UTG__W(m->t_smear_w), UTG__W(m->t_smear_lam), m->ids, N,
                     m->Tc, m->d, m->cfg.gate_window, UTG__BOS_ID);
    return m->emb_s;
}
/* g_smeared = dL/d(emb'); returns dL/d(emb) and adds the gradients of w and lambda. */
static const void *utg__smear_gate_backward(utg_model *m, const void *g_smeared, int N) {
    utg_backend *be = m->be;
    be->fill(be, m->g_emb, m->at, 0.0f, (size_t)N * m->d);
    be->smear_bwd(be, m->at, m->g_emb, UTG__G(m->t_smear_w), UTG__G(m->t_smear_lam), g_smeared, m->emb,
                  UTG__W(m->t_smear_w), UTG__W(m->t_smear_lam), m->ids, N, m->Tc, m->d, m->cfg.gate_window,
                  UTG__BOS_ID);
    return m->g_emb;
}

/* The static SmearGate (SMEAR_ENABLED, PR #162, #1204, #1110) after the embedding norm:
   x0_t = (1 - sigmoid(g)) xn_t + sigmoid(g) xn_{t-1}, g [d] zero-init. */
static void utg__static_smear_tensors(utg_model *m) {
    m->t_smg = m->cfg.smear_enabled > 0 ? utg__add_tensor(m, "smear.gate", UTG_ROLE_CONTROL, -1, 1, m->d, 0, 0) : -1;
}
/* The normed embedding xn and its one-position shift, [N, d] each. */
static void utg__static_smear_carve(utg_model *m, utg__carver *c, size_t N) {
    if (m->t_smg < 0) return;
    m->xn = utg__carve_act(m, c, N * (size_t)m->d);
    m->xprev = utg__carve_act(m, c, N * (size_t)m->d);
}
/* x0 from the embedding: xn = rmsnorm(emb), x0_t = a xn_t + (1 - a) xn_{t-1}, a = sigmoid(g). */
static void utg__static_smear_forward(utg_model *m, const void *emb, int n_seqs) {
    int N = n_seqs * m->Tc;
    m->be->rmsnorm_fwd(m->be, m->at, m->xn, m->r0, emb, N, m->d, m->eps);
    utg__shift(m, m->xprev, m->xn, n_seqs, 0);
    m->be->lerp_fwd(m->be, m->at, m->x0, m->xprev, m->xn, UTG__W(m->t_smg), NULL, N, m->d);
}
/* From dL/dx0 (m->g_x0) to dL/d(emb') in m->g_normed (zeroed by the caller); the layers'
   temporaries g_attn_out and g_mix_out are free by now. */
static void utg__static_smear_backward(utg_model *m, int N) {
    utg_backend *be = m->be;
    be->fill(be, m->g_mix_out, m->at, 0.0f, (size_t)N * m->d);
    be->lerp_bwd(be, m->at, m->g_attn_out, m->g_mix_out, UTG__G(m->t_smg), NULL, m->g_x0, m->x0, m->xn,
                 UTG__W(m->t_smg), NULL, N, m->d);
    utg__shift(m, m->g_mix_out, m->g_attn_out, N / m->Tc, 1);
    be->rmsnorm_bwd(be, m->at, m->g_normed, m->g_mix_out, m->xn, m->r0, N, m->d);
}

/* The value embedding (VE_ENABLED, PR #1204, #1110): once per forward ve = scale * proj(E_ve[ids])
   [N, kvd], added times ve_layer_scales[k] to the values of the VE_LAYERS (utg__attn_fwd). Table
   N(0, 0.01^2), projection zero, scale 0.1, layer scales 1. */
static void utg__value_embed_tensors(utg_model *m) {
    const utg_config *c = &m->cfg;
    m->t_ve_embed = m->t_ve_proj = m->t_ve_scale = m->t_ve_ls = -1;
    if (c->ve_enabled <= 0) return;
    m->t_ve_embed = utg__add_tensor(m, "ve_shared.embed.weight", UTG_ROLE_EMBED, -1, 2, m->V, c->ve_dim, 0);
    m->t_ve_proj = utg__add_tensor(m, "ve_shared.proj.weight", UTG_ROLE_MATRIX, -1, 2, m->kvd, c->ve_dim, 0);
    m->t_ve_scale = utg__add_tensor(m, "ve_shared.scale", UTG_ROLE_CONTROL, -1, 1, 1, 0, 0);
    m->t_ve_ls = utg__add_tensor(m, "ve_layer_scales", UTG_ROLE_CONTROL, -1, 1, m->n_ve, 0, 0);
}
static void utg__value_embed_carve(utg_model *m, utg__carver *c, size_t N) {
    size_t vd = (size_t)m->cfg.ve_dim, kv = (size_t)m->kvd;
    if (m->t_ve_embed < 0) return;
    m->ve_rows = utg__carve_act(m, c, N * vd);
    m->ve_projected = utg__carve_act(m, c, N * kv);
    m->ve_scaled = utg__carve_act(m, c, N * kv);
    m->g_ve_scaled = utg__carve_act(m, c, N * kv);
    m->g_ve_proj = utg__carve_act(m, c, N * kv);
    m->g_ve_rows = utg__carve_act(m, c, N * vd);
}
static void utg__value_embed_forward(utg_model *m, int N) {
    utg_backend *be = m->be;
    int vd = m->cfg.ve_dim;
    be->embed_fwd(be, m->at, m->ve_rows, UTG__W(m->t_ve_embed), m->ids, N, vd);
    utg__model_mm(m, m->ve_projected, m->ve_rows, UTG__W(m->t_ve_proj), N, m->kvd, vd, UTG_NO_TRANS,
                  UTG_TRANS, 1.0f, 0.0f);
    be->mix_fwd(be, m->at, m->ve_scaled, m->ve_projected, UTG__W(m->t_ve_scale), NULL, NULL, N, m->kvd,
                UTG_MIX_WX_SCALAR);
}
/* From dL/d(ve) (g_ve_scaled, summed over the VE layers) to the table's, projection's and scale's
   gradients (added). */
static void utg__value_embed_backward(utg_model *m, int N) {
    utg_backend *be = m->be;
    int vd = m->cfg.ve_dim, kv = m->kvd;
    be->fill(be, m->g_ve_proj, m->at, 0.0f, (size_t)N * kv);
    be->mix_bwd(be, m->at, m->g_ve_proj, NULL, UTG__G(m->t_ve_scale), NULL, m->g_ve_scaled, m->ve_projected,
                UTG__W(m->t_ve_scale), NULL, NULL, N, kv, UTG_MIX_WX_SCALAR);
    utg__model_mm(m, m->g_ve_rows, m->g_ve_proj, UTG__W(m->t_ve_proj), N, vd, kv, UTG_NO_TRANS, UTG_NO_TRANS,
                  1.0f, 0.0f);
    utg__model_mm(m, UTG__G(m->t_ve_proj), m->g_ve_proj, m->ve_rows, kv, vd, N, UTG_TRANS, UTG_NO_TRANS, 1.0f,
                  1.0f);
    be->embed_bwd(be, m->at, UTG__G(m->t_ve_embed), m->g_ve_rows, m->ids, N, vd);
}

/* The tensor table, in the order PyTorch's state_dict lists the baseline GPT; the recurrence adds
   its tensors where they belong (control owners beyond the physical blocks come after them). */
static utg_result utg__build_tensors(utg_model *m) {
    const utg_config *c = &m->cfg;
    int i, k, nown = m->n_phys > m->n_ctrl ? m->n_phys : m->n_ctrl;
    char nm[UTG_MAX_NAME];
    const char *att[2] = {"attn", "attn2"};
    m->max_tensors = 32 + 24 * nown + 4 * m->n_rsets;
    m->tensors = (utg_tensor_info *)utg__alloc(&m->alloc, sizeof(utg_tensor_info) * (size_t)m->max_tensors);
    m->heavy = (utg__heavy_ix *)utg__alloc(&m->alloc, sizeof(utg__heavy_ix) * (size_t)m->n_phys);
    m->ctrl = (utg__ctrl_ix *)utg__alloc(&m->alloc, sizeof(utg__ctrl_ix) * (size_t)m->n_ctrl);
    if (!m->tensors || !m->heavy || !m->ctrl) return UTG_ERR_NOMEM;
    memset(m->heavy, 0xff, sizeof(utg__heavy_ix) * (size_t)m->n_phys); /* all -1 */
    memset(m->ctrl, 0xff, sizeof(utg__ctrl_ix) * (size_t)m->n_ctrl);
    m->t_skip = m->n_skip > 0 ? utg__add_tensor(m, "skip_weights", UTG_ROLE_CONTROL, -1, 2, m->n_skip, m->d, 0) : -1;
    m->t_skip_gates = m->n_skip > 0 && c->skip_gates_enabled > 0 ? utg__add_tensor(m, "skip_gates", UTG_ROLE_CONTROL, -1, 2, m->n_skip, m->d, 0) : -1;
    m->t_tok_emb = utg__add_tensor(m, "tok_emb.weight", UTG_ROLE_EMBED, -1, 2, m->V, m->d, 0);
    utg__bigram_tensors(m);
    utg__smear_gate_tensors(m);
    utg__static_smear_tensors(m);
    utg__value_embed_tensors(m);
    m->t_vrl = c->value_residual > 0 && m->n_depth > 1 ? utg__add_tensor(m, "vrl_alphas", UTG_ROLE_CONTROL, -1, 1, m->n_depth - 1, 0, 0) : -1;
    m->t_iter_embed = c->iter_embed > 0 ? utg__add_tensor(m, "iter_embed", UTG_ROLE_CONTROL, -1, 2, m->n_depth, m->d, 0) : -1;
    m->t_iter_scale = c->iter_scale > 0 ? utg__add_tensor(m, "iter_scale", UTG_ROLE_CONTROL, -1, 2, m->n_depth, m->d, 0) : -1;
    m->t_hca = c->shc_enabled > 0 ? utg__add_tensor(m, "hc_alpha", UTG_ROLE_CONTROL, -1, 1, m->n_depth, 0, 0) : -1;
    m->t_hcb = c->shc_enabled > 0 ? utg__add_tensor(m, "hc_beta", UTG_ROLE_CONTROL, -1, 1, m->n_depth, 0, 0) : -1;
    m->t_film = c->film > 0 ? utg__add_tensor(m, "film", UTG_ROLE_CONTROL, -1, 3, m->n_depth, 2, m->d) : -1;
    for (i = 0; i < nown; i++) {
#define UTG__T(dst, suffix, role, blk, nd, a, b2) \
    (snprintf(nm, sizeof nm, "blocks.%d.%s", i, suffix), (dst) = utg__add_tensor(m, nm, role, blk, nd, a, b2, 0))
        if (i < m->n_ctrl) {
            utg__ctrl_ix *o = &m->ctrl[i];
            int blk = c->control_scope == UTG_CONTROL_SCOPE_VIRTUAL ? -1 : i;
            UTG__T(o->attn_scale[0], "attn_scale", UTG_ROLE_CONTROL, blk, 1, m->d, 0);
            if (m->n_attn > 1) UTG__T(o->attn_scale[1], "attn_scale_2", UTG_ROLE_CONTROL, blk, 1, m->d, 0);
            UTG__T(o->mlp_scale, "mlp_scale", UTG_ROLE_CONTROL, blk, 1, m->d, 0);
            if (c->q_gain_scope == UTG_Q_GAIN_SCOPE_CONTROL)
                for (k = 0; k < m->n_attn; k++) {
                    char sfx[32];
                    snprintf(sfx, sizeof sfx, "%s.q_gain", att[k]); UTG__T(o->q_gain[k], sfx, UTG_ROLE_CONTROL, blk, 1, m->H, 0);
                }
            UTG__T(o->resid_mix, "resid_mix", UTG_ROLE_CONTROL, blk, 2, 2, m->d);
            if (c->norm_bias > 0) UTG__T(o->norm_bias, "norm_bias", UTG_ROLE_CONTROL, blk, 2, m->n_norms, m->d);
        }
        if (i < m->n_phys) {
            utg__heavy_ix *h = &m->heavy[i];
            for (k = 0; k < m->n_attn; k++) { /* q_gain lives in the attention module: shared like its matrices */
                char sfx[32];
                if (c->q_gain_scope != UTG_Q_GAIN_SCOPE_CONTROL) { snprintf(sfx, sizeof sfx, "%s.q_gain", att[k]); UTG__T(h->q_gain[k], sfx, UTG_ROLE_CONTROL, i, 1, m->H, 0); }
            }
            for (k = 0; k < m->n_attn && !(i == 0 && c->disable_layer0_attn > 0); k++) { /* (q_gain stays, as PR #1204) */
                char sfx[32];
                snprintf(sfx, sizeof sfx, "%s.c_q.weight", att[k]); UTG__T(h->c_q[k], sfx, UTG_ROLE_MATRIX, i, 2, m->d, m->d);
                snprintf(sfx, sizeof sfx, "%s.c_k.weight", att[k]); UTG__T(h->c_k[k], sfx, UTG_ROLE_MATRIX, i, 2, m->kvd, m->d);
                snprintf(sfx, sizeof sfx, "%s.c_v.weight", att[k]); UTG__T(h->c_v[k], sfx, UTG_ROLE_MATRIX, i, 2, m->kvd, m->d);
                snprintf(sfx, sizeof sfx, "%s.proj.weight", att[k]); UTG__T(h->proj[k], sfx, UTG_ROLE_MATRIX, i, 2, m->d, m->d);
                if (m->gate_win) { snprintf(sfx, sizeof sfx, "%s.attn_gate_w", att[k]); UTG__T(h->gate[k], sfx, UTG_ROLE_CONTROL, i, 2, m->H, m->gate_win); }
            }
            UTG__T(h->fc, "mlp.fc.weight", UTG_ROLE_MATRIX, i, 2, m->F, m->d);
            if (m->mlp3) UTG__T(h->mid, "mlp.mid.weight", UTG_ROLE_MATRIX, i, 2, m->F, m->F);
            UTG__T(h->mlp_proj, "mlp.proj.weight", UTG_ROLE_MATRIX, i, 2, m->d, m->F);
        }
#undef UTG__T
    }
    for (k = 0; k < m->n_rsets; k++) { /* untied repeat MLPs, zero until the schedule copies them */
        utg__rset *s = &m->rsets[k];
        int full = c->repeat_untie_mlp == UTG_REPEAT_UNTIE_MLP_FULL;
        s->fc = s->mid = s->proj = -1;
        if (full) {
            snprintf(nm, sizeof nm, "repeat_mlp.%d.fc.weight", k); s->fc = utg__add_tensor(m, nm, UTG_ROLE_MATRIX, s->block, 2, m->F, m->d, 0);
            if (m->mlp3) { snprintf(nm, sizeof nm, "repeat_mlp.%d.mid.weight", k); s->mid = utg__add_tensor(m, nm, UTG_ROLE_MATRIX, s->block, 2, m->F, m->F, 0); }
        }
        snprintf(nm, sizeof nm, "repeat_mlp.%d.proj.weight", k); s->proj = utg__add_tensor(m, nm, UTG_ROLE_MATRIX, s->block, 2, m->d, m->F, 0);
    }
    m->t_par_post = m->t_par_resid = -1;
    if (m->lanes_any) {
        m->t_par_post = utg__add_tensor(m, "parallel_post_lambdas", UTG_ROLE_CONTROL, -1, 3, m->n_phys, 2, 2);
        m->t_par_resid = utg__add_tensor(m, "parallel_resid_lambdas", UTG_ROLE_CONTROL, -1, 2, m->n_phys, 2, 0);
    }
    m->t_lm_head = c->tie_embeddings > 0 ? -1 : utg__add_tensor(m, "lm_head.weight", UTG_ROLE_HEAD, -1, 2, m->V, m->d, 0);
    return UTG_OK;
}

/* Copy the shared MLP of an untied repeat set into it (the moment recurrence switches on). */
static void utg__init_rset(utg_model *m, int k) {
    const utg__rset *s = &m->rsets[k];
    const utg__heavy_ix *h = &m->heavy[s->block];
    if (s->fc >= 0)
        m->be->copy(m->be, m->params + m->tensors[s->fc].offset, m->params + m->tensors[h->fc].offset,
                    m->tensors[s->fc].numel * sizeof(float));
    if (s->mid >= 0)
        m->be->copy(m->be, m->params + m->tensors[s->mid].offset, m->params + m->tensors[h->mid].offset,
                    m->tensors[s->mid].numel * sizeof(float));
    if (s->proj >= 0)
        m->be->copy(m->be, m->params + m->tensors[s->proj].offset, m->params + m->tensors[h->mlp_proj].offset,
                    m->tensors[s->proj].numel * sizeof(float));
}

/* A (semi-)orthogonal W[rows, cols] as nn.init.orthogonal_ (gain 1): Gram-Schmidt, twice for
   accuracy, in double over the shorter side of a Gaussian matrix. 0 when out of memory. */
static int utg__orthogonal(utg_model *m, float *W, int rows, int cols, utg__rng *rng) {
    int tall = rows > cols, n = tall ? cols : rows, len = tall ? rows : cols, a, b, pass;
    double *v = (double *)utg__alloc(&m->alloc, sizeof(double) * (size_t)n * len);
    size_t k;
    if (!v) return 0;
    for (k = 0; k < (size_t)n * len; k++) v[k] = utg__rng_normal(rng);
    for (a = 0; a < n; a++) {
        double *va = v + (size_t)a * len, nr = 0.0;
        for (pass = 0; pass < 2; pass++)
            for (b = 0; b < a; b++) {
                const double *vb = v + (size_t)b * len;
                double dp = 0.0;
                for (k = 0; k < (size_t)len; k++) dp += va[k] * vb[k];
                for (k = 0; k < (size_t)len; k++) va[k] -= dp * vb[k];
            }
        for (k = 0; k < (size_t)len; k++) nr += va[k] * va[k];
        nr = nr > 0.0 ? 1.0 / sqrt(nr) : 0.0;
        for (k = 0; k < (size_t)len; k++) va[k] *= nr;
    }
    /* vectors are rows of W (rows <= cols) or its columns (a tall W) */
    for (a = 0; a < n; a++)
        for (k = 0; k < (size_t)len; k++) {
            if (tall) W[k * (size_t)cols + a] = (float)v[(size_t)a * len + k];
            else W[(size_t)a * cols + k] = (float)v[(size_t)a * len + k];
        }
    utg__free(&m->alloc, v);
    return 1;
}

/* One host pass over the tensor table in order, drawing from one RNG, then one upload: the values
   depend only on the seed and the table, never on the backend or the thread count. Which init each
   tensor gets follows train_gpt.py's GPT._init_weights and the record PRs (noted inline): matrices
   nn.Linear's uniform (or orthogonal with ORTHO_INIT), output projections zero, scales and gains
   their constants, resid_mix [1; 0] so that a block starts reading only its input. */
UTGDEF utg_result utg_model_init_params(utg_model *m, uint64_t seed) {
    float *host;
    utg__rng rng;
    int ti, k;
    size_t i;
    if (!m || !m->plans || !m->params) return UTG_ERR_INVALID;
    host = (float *)utg__alloc(&m->alloc, m->arena_floats * sizeof(float));
    if (!host) { utg__msgf(&m->msg, "out of memory for %zu parameters", m->arena_floats); return UTG_ERR_NOMEM; }
    memset(host, 0, m->arena_floats * sizeof(float));
    utg__rng_seed(&rng, seed);
    for (ti = 0; ti < m->n_tensors; ti++) {
        const utg_tensor_info *t = &m->tensors[ti];
        float *p = host + t->offset;
        const char *leaf = strrchr(t->name, '.') ? strrchr(t->name, '.') + 1 : t->name;
        if (ti == m->t_tok_emb) { /* tied: N(0, TIED_EMBED_INIT_STD); untied: nn.Embedding's N(0, 1) */
            double std = m->cfg.tie_embeddings > 0 ? m->cfg.tied_embed_init_std : 1.0;
            for (i = 0; i < t->numel; i++) p[i] = (float)(std * utg__rng_normal(&rng));
        } else if (ti == m->t_ve_embed) {
            for (i = 0; i < t->numel; i++) p[i] = (float)(0.01 * utg__rng_normal(&rng));
        } else if (ti == m->t_ve_scale) {
            p[0] = 0.1f;
        } else if (ti == m->t_skip || ti == m->t_iter_scale || ti == m->t_par_post || ti == m->t_ve_ls || ti == m->t_hca ||
                   ti == m->t_hcb || !strcmp(leaf, "attn_scale") ||
                   !strcmp(leaf, "attn_scale_2") || !strcmp(leaf, "mlp_scale")) {
            for (i = 0; i < t->numel; i++) p[i] = 1.0f;
        } else if (ti == m->t_par_resid) { /* PR #1204: sqrt(1.1); PR #1530: 1.1 */
            for (i = 0; i < t->numel; i++) p[i] = m->lane_mode == UTG_LANE_TWO ? (float)sqrt(1.1) : 1.1f;
        } else if (ti == m->t_film) { /* gamma 1, beta 0 */
            for (k = 0; k < m->n_depth; k++) for (i = 0; i < (size_t)m->d; i++) p[(size_t)k * 2 * m->d + i] = 1.0f;
        } else if (strcmp(leaf, "resid_mix") == 0) {
            for (i = 0; i < (size_t)t->shape[1]; i++) p[i] = 1.0f; /* row 1 (x0 weight) stays 0 */
        } else if (ti == m->t_bg_scale) {
            p[0] = 0.05f;
        } else if (strcmp(leaf, "attn_gate_w") == 0) { /* dense G1: N(0, 0.005^2); the sparse gates start at 0 */
            if (m->cfg.gated_attn_enabled > 0) for (i = 0; i < t->numel; i++) p[i] = (float)(0.005 * utg__rng_normal(&rng));
        } else if (strcmp(leaf, "q_gain") == 0) {
            for (i = 0; i < t->numel; i++) p[i] = (float)m->cfg.qk_gain_init;
        } else if (t->role == UTG_ROLE_MATRIX && strstr(t->name, "proj.weight") == NULL && strncmp(t->name, "repeat_mlp.", 11) != 0) {
            if (m->cfg.ortho_init > 0 && t->shape[0] >= 64 && t->shape[1] >= 64) {
                if (!utg__orthogonal(m, p, (int)t->shape[0], (int)t->shape[1], &rng)) { utg__free(&m->alloc, host); return UTG_ERR_NOMEM; }
            } else { /* nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
                double bound = 1.0 / sqrt((double)t->shape[1]);
                for (i = 0; i < t->numel; i++) p[i] = (float)((2.0 * utg__rng_uniform(&rng) - 1.0) * bound);
            }
        } /* attn.proj, mlp.proj, lm_head, the repeat MLPs, norm biases and iteration embeddings start at zero */
    }
    m->be->upload(m->be, m->params, host, m->arena_floats * sizeof(float));
    utg__free(&m->alloc, host);
    /* untied sets the first plan already uses start as copies of their shared MLP */
    for (k = 0; k < m->plans[0].n_init_sets; k++) utg__init_rset(m, m->plans[0].init_sets[k]);
    return UTG_OK;
}

/* The RoPE table for sequence length T in backend memory: [T, rd/2] cosines then [T, rd/2] sines,
   inv_freq_i = base^(-2i / rd), as train_gpt.py's Rotary (NTK-scaled past the reference length). */
static utg_result utg__rope_table(utg_model *m, int T, float **dst) {
    int half = m->rd / 2, t, i;
    float *host = (float *)utg__alloc(&m->alloc, sizeof(float) * 2 * (size_t)T * half);
    double base = m->cfg.rope_base;
    /* NTK-aware scaling: past the reference length (ROPE_TRAIN_SEQ_LEN, else the training length) the
       base grows by (T / T_ref)^(rd / (rd - 2)); a reference below TRAIN_SEQ_LEN scales training too */
    int ref = m->cfg.rope_train_seq_len > 0 ? m->cfg.rope_train_seq_len : m->T;
    if (!host) return UTG_ERR_NOMEM;
    if (m->cfg.rope_ntk > 0 && T > ref && m->rd > 2)
        base *= pow((double)T / (double)ref, (double)m->rd / (double)(m->rd - 2));
    for (t = 0; t < T; t++)
        for (i = 0; i < half; i++) {
            /* float32 throughout, as train_gpt.py's Rotary computes its tables (over the rotary dims) */
            float inv_freq = 1.0f / powf((float)base, (float)(2 * i) / (float)m->rd);
            float ang = (float)t * inv_freq;
            host[(size_t)t * half + i] = cosf(ang);
            host[(size_t)T * half + (size_t)t * half + i] = sinf(ang);
        }
    *dst = (float *)m->be->buf_alloc(m->be, sizeof(float) * 2 * (size_t)T * half);
    if (*dst) m->be->upload(m->be, *dst, host, sizeof(float) * 2 * (size_t)T * half);
    utg__free(&m->alloc, host);
    return *dst ? UTG_OK : UTG_ERR_NOMEM;
}

/* The model's shape from its resolved, validated config: the depth plans, proven sound, and the
   tensor table. Allocates only those tables (bounded by the knobs' ranges), never the arena. */
static utg_result utg__model_layout(utg_model *m) {
    utg_result r;
    int i;
    m->d = m->cfg.model_dim;
    m->H = m->cfg.num_heads;
    m->Hkv = m->cfg.num_kv_heads;
    m->hd = m->d / m->H;
    m->kvd = m->Hkv * m->hd;
    m->F = m->cfg.mlp_hidden > 0 ? m->cfg.mlp_hidden : m->cfg.mlp_mult * m->d;
    m->rd = m->cfg.rope_dims > 0 ? m->cfg.rope_dims : m->hd;
    m->slope = m->cfg.mlp_activation == UTG_MLP_ACTIVATION_LEAKY_RELU2 ? (float)m->cfg.leaky_relu_slope : 0.0f;
    m->gate_win = m->cfg.gated_attn_enabled > 0 ? m->cfg.model_dim
                : (m->cfg.sparse_attn_gate_enabled > 0 || m->cfg.attn_out_gate_enabled > 0) ? m->cfg.gate_window : 0;
    m->gate_scale = m->cfg.sparse_attn_gate_enabled > 0 ? (float)m->cfg.sparse_attn_gate_scale : 1.0f;
    m->gate_mult = m->cfg.attn_out_gate_enabled > 0 ? 2.0f : 1.0f;
    m->V = m->cfg.vocab_size;
    m->T = m->cfg.train_seq_len;
    m->eps = (float)m->cfg.rms_norm_eps;
    m->softcap = m->cfg.logit_softcap > 0 ? (float)m->cfg.logit_softcap : 0.0f;
    m->n_phys = m->cfg.universal_unique_blocks > 0 ? m->cfg.universal_unique_blocks : m->cfg.num_layers;
    m->n_attn = m->cfg.block_attns;
    m->mlp3 = m->cfg.mlp_layers == 3;
    m->n_norms = m->n_attn + 1;
    if ((r = utg__compile_plans(m)) != UTG_OK) return r;
    if ((r = utg__build_tensors(m)) != UTG_OK) {
        utg__msgf(&m->msg, "out of memory building the tensor table");
        return r;
    }
    for (i = 0; i < m->n_plans; i++)
        if ((r = utg__verify_plan(m, i)) != UTG_OK) return r;
    return UTG_OK;
}

UTGDEF utg_result utg_config_model_size(const utg_config *cfg, size_t *n_params, int *n_tensors,
                                        utg_msg *msg) {
    utg_model *m;
    utg_result r;
    if (!cfg) return UTG_ERR_INVALID;
    m = (utg_model *)utg__alloc(NULL, sizeof *m);
    if (!m) return UTG_ERR_NOMEM;
    memset(m, 0, sizeof *m);
    m->cfg = utg_config_resolve(cfg);
    r = utg_config_validate(&m->cfg, &m->msg);
    if (r == UTG_OK) r = utg__model_layout(m);
    if (r == UTG_OK) {
        if (n_params) *n_params = m->n_params;
        if (n_tensors) *n_tensors = m->n_tensors;
    } else if (msg) utg__msgf(msg, "%s", m->msg.text);
    utg_model_destroy(m);
    return r;
}

/* ACTIVATION_DTYPE on this backend: auto takes the backend's choice; a type the backend does not
   store is refused. */
static utg_result utg__pick_activation_dtype(utg_model *m) {
    int want = m->cfg.activation_dtype;
    utg_dtype at = want == UTG_ACTIVATION_DTYPE_BF16   ? UTG_DT_BF16
                   : want == UTG_ACTIVATION_DTYPE_FP32 ? UTG_DT_F32
                                                       : m->be->auto_activation_dtype;
    if (at != UTG_DT_F32 && at != UTG_DT_BF16) at = UTG_DT_F32;
    if (!(m->be->storage_dtypes & (1u << at))) {
        utg__msgf(&m->msg, "backend '%s' cannot store activations as %s (ACTIVATION_DTYPE)",
                  m->be->name ? m->be->name : "?", at == UTG_DT_BF16 ? "bf16" : "fp32");
        return UTG_ERR_CONFIG;
    }
    m->at = at;
    m->at_size = at == UTG_DT_BF16 ? 2 : 4;
    return UTG_OK;
}

/* The model's small backend buffer: the constants its channel mixes read (m->half, m->minus_ones)
   and the step's statistics (m->step_stats, UTG__STAT_*: doubles the reductions write). Each part
   starts on a 64-byte boundary: half at 0, the statistics 16 floats in, minus_ones 32 in. */
static utg_result utg__upload_constants(utg_model *m) {
    size_t n = 32 + (size_t)m->d, i;
    float *host;
    m->const_buf = (float *)m->be->buf_alloc(m->be, sizeof(float) * n);
    host = (float *)utg__alloc(&m->alloc, sizeof(float) * n);
    if (!m->const_buf || !host) {
        utg__free(&m->alloc, host);
        utg__msgf(&m->msg, "out of memory for the model's constants");
        return UTG_ERR_NOMEM;
    }
    memset(host, 0, sizeof(float) * 32);
    host[0] = 0.5f;
    for (i = 32; i < n; i++) host[i] = -1.0f;
    m->be->upload(m->be, m->const_buf, host, sizeof(float) * n);
    utg__free(&m->alloc, host);
    m->half = m->const_buf;
    m->step_stats = (double *)(void *)(m->const_buf + 16);
    m->minus_ones = m->const_buf + 32;
    return UTG_OK;
}

/* The config's string values belong to the caller (utg_config_set does not copy them); the model
   keeps its config for its whole life, so it copies them into one block of its own. */
static utg_result utg__own_config_strings(utg_model *m) {
    int i, n = utg_config_knob_count();
    size_t bytes = 0;
    char *p;
    for (i = 0; i < n; i++) {
        const char *v;
        if (utg__knobs[i].info.kind != UTG_KNOB_STR) continue;
        v = *(const char **)utg__knob_ptr(&m->cfg, i);
        if (v && !utg__add_ok(bytes, strlen(v) + 1, &bytes)) return UTG_ERR_NOMEM;
    }
    m->cfg_strings = p = (char *)utg__alloc(&m->alloc, bytes ? bytes : 1);
    if (!p) return UTG_ERR_NOMEM;
    for (i = 0; i < n; i++) {
        const char **field;
        size_t len;
        if (utg__knobs[i].info.kind != UTG_KNOB_STR) continue;
        field = (const char **)utg__knob_ptr(&m->cfg, i);
        if (!*field) continue;
        len = strlen(*field) + 1;
        memcpy(p, *field, len);
        *field = p;
        p += len;
    }
    return UTG_OK;
}

UTGDEF utg_result utg_model_create(const utg_model_desc *desc, utg_model **out) {
    utg_model_desc zero;
    utg_model *m;
    utg_result r;
    size_t bytes;
    int i;
    char pbuf[256];
    if (!out) return UTG_ERR_INVALID;
    *out = NULL;
    if (!desc) { memset(&zero, 0, sizeof zero); desc = &zero; }
    m = (utg_model *)utg__alloc(&desc->allocator, sizeof *m);
    if (!m) return UTG_ERR_NOMEM;
    memset(m, 0, sizeof *m);
    m->alloc = desc->allocator;
    m->logger = desc->logger;
    m->cfg = utg_config_resolve(&desc->config);
    *out = m; /* from here on the caller gets the model (and its message) even on failure */
    if ((r = utg__own_config_strings(m)) != UTG_OK) return r;
    if ((r = utg_config_validate(&m->cfg, &m->msg)) != UTG_OK) return r;
    if (desc->backend) {
        m->be = desc->backend;
        if (m->be->abi_version != UTG_BACKEND_ABI_VERSION || m->be->struct_size != sizeof(utg_backend)) {
            utg__msgf(&m->msg, "backend '%s' has ABI %u/size %u, this header expects %u/%u",
                      m->be->name ? m->be->name : "?", m->be->abi_version, m->be->struct_size,
                      UTG_BACKEND_ABI_VERSION, (unsigned)sizeof(utg_backend));
            m->be = NULL;
            return UTG_ERR_BACKEND;
        }
    } else {
        if ((r = utg_backend_cpu_create(&m->alloc, &m->be)) != UTG_OK) return r;
        m->own_backend = 1;
    }
    m->mm = m->cfg.matmul_bf16 > 0 ? m->be->matmul_bf16 : m->be->matmul;
    if (!m->mm) {
        utg__msgf(&m->msg, "backend '%s' has no %s op", m->be->name ? m->be->name : "?", m->cfg.matmul_bf16 > 0 ? "matmul_bf16 (MATMUL_BF16=1)" : "matmul");
        return UTG_ERR_BACKEND;
    }
    if ((r = utg__pick_activation_dtype(m)) != UTG_OK) return r;
    if ((r = utg__model_layout(m)) != UTG_OK) return r;
    m->phase = 0;
    m->plan = &m->plans[0];
    if (!utg__mul_ok(m->arena_floats, sizeof(float), &bytes)) return UTG_ERR_NOMEM;
    m->params = (float *)m->be->buf_alloc(m->be, bytes);
    m->grads = (float *)m->be->buf_alloc(m->be, bytes);
    if (!m->params || !m->grads) {
        utg__msgf(&m->msg, "out of memory for %zu parameters", m->arena_floats);
        return UTG_ERR_NOMEM;
    }
    if ((r = utg__upload_constants(m)) != UTG_OK) return r;
    if ((r = utg__rope_table(m, m->T, &m->rope_cs)) != UTG_OK) return r;
    if ((r = utg_model_init_params(m, (uint64_t)(m->cfg.seed > 0 ? m->cfg.seed : 0))) != UTG_OK) return r;
    utg__log(m, UTG_LOG_INFO, "model: %d physical blocks, %d virtual layers, d=%d, heads %d/%d, vocab %d, %zu parameters, backend %s",
             m->n_phys, m->n_depth, m->d, m->H, m->Hkv, m->V, m->n_params, m->be->name);
    for (i = 0; i < m->n_plans && m->n_plans > 1; i++)
        utg__log(m, UTG_LOG_INFO, "plan %d: %s", i, utg_plan_describe(&m->plans[i], pbuf, sizeof pbuf));
    return UTG_OK;
}

/* Frees the activation arena and its host-side companions; the next forward reserves anew. */
static void utg__free_acts(utg_model *m) {
    if (m->act_arena) m->be->buf_free(m->be, m->act_arena);
    utg__free(&m->alloc, m->acts);
    utg__free(&m->alloc, m->slot_src);
    utg__free(&m->alloc, m->host_bigram_ids);
    m->act_arena = NULL;
    m->acts = NULL;
    m->slot_src = NULL;
    m->host_bigram_ids = NULL;
    m->cap_tok = 0;
}

/* The model's backend memory, and the backend itself when the model created it. */
static void utg__free_backend_buffers(utg_model *m) {
    utg__free_acts(m);
    m->be->buf_free(m->be, m->params);
    m->be->buf_free(m->be, m->grads);
    if (m->const_buf) m->be->buf_free(m->be, m->const_buf);
    m->be->buf_free(m->be, m->rope_cs);
    if (m->rope_eval) m->be->buf_free(m->be, m->rope_eval);
    if (m->own_backend) utg_backend_destroy(m->be);
}

UTGDEF void utg_model_destroy(utg_model *m) {
    utg_allocator a;
    if (!m) return;
    a = m->alloc;
    if (m->be) utg__free_backend_buffers(m);
    utg__free_plans(m);
    {
        void *owned[] = {m->tensors, m->heavy, m->ctrl, m->rsets, m->ve_of, m->cfg_strings, m};
        utg__free_all(&a, owned, 7);
    }
}

UTGDEF const char *utg_model_message(const utg_model *m) { return m ? m->msg.text : "no model"; }
UTGDEF const utg_config *utg_model_config(const utg_model *m) { return m ? &m->cfg : NULL; }
UTGDEF const utg_plan *utg_model_plan(const utg_model *m) { return m ? m->plan : NULL; }
UTGDEF int utg_model_plan_count(const utg_model *m) { return m ? m->n_plans : 0; }
UTGDEF const utg_plan *utg_model_plan_at(const utg_model *m, int i) {
    return (m && i >= 0 && i < m->n_plans) ? &m->plans[i] : NULL;
}
UTGDEF utg_backend *utg_model_backend(utg_model *m) { return m ? m->be : NULL; }
UTGDEF int utg_model_tensor_count(const utg_model *m) { return m ? m->n_tensors : 0; }
UTGDEF const utg_tensor_info *utg_model_tensor(const utg_model *m, int i) {
    return (m && i >= 0 && i < m->n_tensors) ? &m->tensors[i] : NULL;
}
UTGDEF int utg_model_find_tensor(const utg_model *m, const char *name) {
    int i;
    if (!m || !name) return -1;
    for (i = 0; i < m->n_tensors; i++) if (strcmp(m->tensors[i].name, name) == 0) return i;
    return -1;
}
UTGDEF size_t utg_model_param_count(const utg_model *m) { return m ? m->n_params : 0; }
UTGDEF size_t utg_model_arena_floats(const utg_model *m) { return m ? m->arena_floats : 0; }
UTGDEF float *utg_model_params(utg_model *m) { return m ? m->params : NULL; }
UTGDEF float *utg_model_grads(utg_model *m) { return m ? m->grads : NULL; }
UTGDEF int utg_model_phase(const utg_model *m) { return m ? m->phase : 0; }
UTGDEF int utg_model_physical_blocks(const utg_model *m) { return m ? m->n_phys : 0; }
UTGDEF int utg_model_schedule_phase(const utg_model *m, int step, double frac) {
    int p, want = 0;
    if (!m) return 0;
    for (p = 1; p < m->n_plans; p++) {
        const utg_plan *P = &m->plans[p];
        if ((P->start_step >= 0 && step >= P->start_step) || (P->start_frac >= 0 && frac >= P->start_frac)) want = p;
    }
    return want;
}
UTGDEF utg_result utg_model_set_phase(utg_model *m, int phase, int activate) {
    int p, k;
    if (!m || !m->plans) return UTG_ERR_INVALID;
    if (phase < 0 || phase >= m->n_plans) {
        utg__msgf(&m->msg, "phase %d is outside 0..%d", phase, m->n_plans - 1);
        return UTG_ERR_INVALID;
    }
    if (activate)
        for (p = m->phase + 1; p <= phase; p++)
            for (k = 0; k < m->plans[p].n_init_sets; k++) utg__init_rset(m, m->plans[p].init_sets[k]);
    m->phase = phase;
    m->plan = &m->plans[phase];
    m->have_forward = 0;
    return UTG_OK;
}

/* The backend span of tensor index (or of the whole arena, index < 0) in the parameter or gradient
   arena, after checking that the caller's n floats match it exactly. */
static utg_result utg__span(utg_model *m, utg_arena which, int index, size_t n, float **dev) {
    float *base;
    if (!m || (int)which < 0 || (int)which > 1 || index >= m->n_tensors) {
        if (m) utg__msgf(&m->msg, "bad tensor index %d or arena %d", index, which);
        return UTG_ERR_INVALID;
    }
    base = which == UTG_ARENA_GRADS ? m->grads : m->params;
    if (index < 0) {
        if (n != m->arena_floats) {
            utg__msgf(&m->msg, "arena has %zu floats, not %zu", m->arena_floats, n);
            return UTG_ERR_INVALID;
        }
        *dev = base;
    } else {
        if (n != m->tensors[index].numel) {
            utg__msgf(&m->msg, "%s has %zu elements, not %zu", m->tensors[index].name,
                      m->tensors[index].numel, n);
            return UTG_ERR_INVALID;
        }
        *dev = base + m->tensors[index].offset;
    }
    return UTG_OK;
}
UTGDEF utg_result utg_model_get(utg_model *m, utg_arena which, int index, float *host_dst, size_t n) {
    float *dev;
    utg_result r = utg__span(m, which, index, n, &dev);
    if (r == UTG_OK && n) m->be->download(m->be, host_dst, dev, n * sizeof(float));
    return r;
}
UTGDEF utg_result utg_model_set(utg_model *m, utg_arena which, int index, const float *host_src, size_t n) {
    float *dev;
    utg_result r = utg__span(m, which, index, n, &dev);
    if (r == UTG_OK && n) m->be->upload(m->be, dev, host_src, n * sizeof(float));
    return r;
}
UTGDEF void utg_model_zero_grads(utg_model *m) {
    if (!m) return;
    m->be->fill(m->be, m->grads, UTG_DT_F32, 0.0f, m->arena_floats);
    m->be->fill(m->be, m->step_stats + UTG__STAT_LOSS_SUM, UTG_DT_F32, 0.0f, 2); /* one 0.0 double */
    m->step_forwards = 0;
}

/* Every buffer any plan of the model needs: all plans share one arena, so a switch allocates nothing. */
static void utg__carve_all(utg_model *m, utg__carver *c, size_t N) {
    size_t d = (size_t)m->d, kv = (size_t)m->kvd, F = (size_t)m->F, V = (size_t)m->V;
    int l, k, nb = m->cfg.norm_bias > 0, iter = m->iter_any;
    for (l = 0; l < m->n_depth; l++) {
        utg__acts *A = &m->acts[l];
        utg__mlp_acts *M = &A->ml;
        memset(A, 0, sizeof *A);
        A->hs = utg__carve_act(m, c, N * d);
        if (m->lanes_any) A->hs1 = utg__carve_act(m, c, N * d);
        if (m->cond_any) A->hc = utg__carve_act(m, c, N * d);
        A->hin = utg__carve_act(m, c, N * d);
        for (k = 0; k < m->n_attn; k++) {
            utg__attn_acts *S = &A->at[k];
            S->n = utg__carve_act(m, c, N * d); S->r = utg__carve(c, N);
            if (nb) S->nb = utg__carve_act(m, c, N * d);
            S->qn = utg__carve_act(m, c, N * d); S->rq = utg__carve(c, N * m->H);
            S->kn = utg__carve_act(m, c, N * kv); S->rk = utg__carve(c, N * m->Hkv);
            S->qg = utg__carve_act(m, c, N * d);
            S->kr = utg__carve_act(m, c, N * kv); S->v = utg__carve_act(m, c, N * kv);
            S->y = utg__carve_act(m, c, N * d);
            S->lse = utg__carve(c, N * m->H);
            S->a = utg__carve_act(m, c, N * d);
            if (m->cfg.xsa_last_n > 0) S->yx = utg__carve_act(m, c, N * d);
            if (m->gate_win) { S->yg = utg__carve_act(m, c, N * d); S->g = utg__carve(c, N * m->H); }
            A->hmid[k] = utg__carve_act(m, c, N * d);
        }
        if (m->lane_mode == UTG_LANE_TWO) {
            A->hin_m = utg__carve_act(m, c, N * d);
            A->l0a = utg__carve_act(m, c, N * d);
            A->l1a = utg__carve_act(m, c, N * d);
        }
        if (m->lanes_any) {
            A->sa = utg__carve_act(m, c, N * d);
            A->sm = utg__carve_act(m, c, N * d);
            A->out1 = utg__carve_act(m, c, N * d);
        }
        M->n = utg__carve_act(m, c, N * d); M->r = utg__carve(c, N);
        if (nb) M->nb = utg__carve_act(m, c, N * d);
        M->u = utg__carve_act(m, c, N * F); M->ua = utg__carve_act(m, c, N * F);
        if (m->mlp3) { M->u2 = utg__carve_act(m, c, N * F); M->ua2 = utg__carve_act(m, c, N * F); }
        M->m = utg__carve_act(m, c, N * d);
        if (iter) { A->blk = utg__carve_act(m, c, N * d); A->delta = utg__carve_act(m, c, N * d); }
        if (iter && m->t_hcb >= 0 && m->t_iter_scale >= 0) A->dsc = utg__carve_act(m, c, N * d);
        A->out = utg__carve_act(m, c, N * d);
    }
    m->emb = utg__carve_act(m, c, N * d); m->x0 = utg__carve_act(m, c, N * d); m->r0 = utg__carve(c, N);
    m->hlast = m->lanes_any ? utg__carve_act(m, c, N * d) : NULL;
    m->hf = utg__carve_act(m, c, N * d); m->rf = utg__carve(c, N);
    m->logits = utg__carve_act(m, c, N * V); m->row_loss = utg__carve(c, N);
    m->ids = (int32_t *)utg__carve(c, N); m->tgt = (int32_t *)utg__carve(c, N);
    m->g_lane0 = utg__carve_act(m, c, N * d);
    m->g_lane0_spare = utg__carve_act(m, c, N * d);
    m->g_attn_out = utg__carve_act(m, c, N * d);
    m->g_mix_out = utg__carve_act(m, c, N * d);
    m->g_normed = utg__carve_act(m, c, N * d);
    m->g_heads = utg__carve_act(m, c, N * d);
    m->g_q = utg__carve_act(m, c, N * d);
    m->g_hidden = utg__carve_act(m, c, N * F);
    m->g_hidden_pre = utg__carve_act(m, c, N * F);
    m->g_k = utg__carve_act(m, c, N * kv);
    m->g_k_raw = utg__carve_act(m, c, N * kv);
    m->g_v = utg__carve_act(m, c, N * kv);
    m->g_x0 = utg__carve_act(m, c, N * d);
    m->g_gate_in = m->gate_win ? utg__carve_act(m, c, N * d) : NULL;
    utg__smear_gate_carve(m, c, N);
    utg__bigram_carve(m, c, N);
    utg__static_smear_carve(m, c, N);
    utg__value_embed_carve(m, c, N);
    m->g_v0 = m->t_vrl >= 0 ? utg__carve_act(m, c, N * kv) : NULL;
    m->g_depth_cond =
        iter ? utg__carve_act(m, c, 2 * N * d) : NULL; /* two buffers: the identity path and d(delta) */
    if (m->lanes_any) {
        m->g_lane1 = utg__carve_act(m, c, N * d);
        m->g_lane1_spare = utg__carve_act(m, c, N * d);
        m->g_lane0_mid = utg__carve_act(m, c, N * d);
        m->g_lane1_mid = utg__carve_act(m, c, N * d);
        m->g_attn_scaled = utg__carve_act(m, c, N * d);
        m->g_mlp_scaled = utg__carve_act(m, c, N * d);
    }
    m->g_skip = utg__carve_act(m, c, (size_t)m->max_slots * N * d);
}

/* Makes the activation arena hold N tokens: two carving passes (measure, then hand out), and
   nothing when the arena is already large enough. Checks N * max(V, F) against INT32_MAX, the
   largest int element count an op sees. */
/* The activation arena's bytes per token for N tokens in each storage type (m->act_bytes), from
   measuring passes of the carver (which leave NULL pointers, filled by the real pass after). */
static void utg__measure_acts(utg_model *m, size_t N) {
    size_t keep = m->at_size, sizes[2] = {4, 2};
    int i;
    for (i = 0; i < 2; i++) {
        utg__carver c;
        memset(&c, 0, sizeof c);
        m->at_size = sizes[i];
        utg__carve_all(m, &c, N);
        m->act_bytes_per_token[i] = c.overflow ? 0.0 : (double)c.used / (double)N;
    }
    m->at_size = keep;
}

static utg_result utg__reserve_tokens(utg_model *m, size_t N) {
    utg__carver c;
    if (N <= (size_t)m->cap_tok) return UTG_OK;
    utg__free_acts(m);
    if (N > (size_t)INT32_MAX / (size_t)(m->V > m->F ? m->V : m->F)) {
        utg__msgf(&m->msg, "batch of %zu tokens is too large", N);
        return UTG_ERR_INVALID;
    }
    m->acts = (utg__acts *)utg__alloc(&m->alloc, sizeof(utg__acts) * (size_t)m->n_depth);
    m->slot_src = (void **)utg__alloc(&m->alloc, sizeof(void *) * (size_t)(m->max_slots + 1));
    if (m->t_bg_embed >= 0) m->host_bigram_ids = (int32_t *)utg__alloc(&m->alloc, sizeof(int32_t) * N);
    if (!m->acts || !m->slot_src || (m->t_bg_embed >= 0 && !m->host_bigram_ids)) {
        utg__free_acts(m);
        return UTG_ERR_NOMEM;
    }
    utg__measure_acts(m, N);
    memset(&c, 0, sizeof c);
    utg__carve_all(m, &c, N);
    if (c.overflow) {
        utg__free_acts(m);
        utg__msgf(&m->msg, "activation size overflows");
        return UTG_ERR_NOMEM;
    }
    m->act_arena = m->be->buf_alloc(m->be, c.used);
    if (!m->act_arena) {
        utg__msgf(&m->msg, "out of memory for %.1f MiB of activations", (double)c.used / 1048576.0);
        utg__free_acts(m);
        return UTG_ERR_NOMEM;
    }
    c.base = (char *)m->act_arena;
    c.used = 0;
    utg__carve_all(m, &c, N);
    m->cap_tok = (int)N;
    utg__log(m, UTG_LOG_DEBUG, "activations: %.1f MiB for %zu tokens", (double)c.used / 1048576.0, N);
    return UTG_OK;
}

UTGDEF utg_dtype utg_model_activation_dtype(const utg_model *m) { return m ? m->at : UTG_DT_F32; }
UTGDEF double utg_model_activation_bytes_per_token(const utg_model *m, utg_dtype dtype) {
    if (!m || (dtype != UTG_DT_F32 && dtype != UTG_DT_BF16)) return 0.0;
    return m->act_bytes_per_token[dtype == UTG_DT_BF16];
}

UTGDEF utg_result utg_model_reserve(utg_model *m, int n_seqs) {
    size_t N;
    if (!m || !m->be || !m->plan) return UTG_ERR_INVALID;
    if (n_seqs <= 0) { utg__msgf(&m->msg, "batch must hold at least one sequence"); return UTG_ERR_INVALID; }
    if (!utg__mul_ok((size_t)n_seqs, (size_t)m->T, &N) || N > (size_t)INT32_MAX) {
        utg__msgf(&m->msg, "batch of %d sequences of %d tokens is too large", n_seqs, m->T);
        return UTG_ERR_INVALID;
    }
    return utg__reserve_tokens(m, N);
}

/* The weights (which = 0) or gradients (which = 1) virtual layer l of the current plan uses. */
static void utg__layer_ptrs(utg_model *m, int l, int which, utg__layer_weights *w) {
    const utg_plan_layer *pl = &m->plan->layers[l];
    const utg__heavy_ix *h = &m->heavy[pl->block];
    const utg__ctrl_ix *o = &m->ctrl[pl->ctrl];
    float *base = which == UTG_ARENA_GRADS ? m->grads : m->params;
    int k, fc = h->fc, mid = h->mid, mp = h->mlp_proj;
#define UTG__P(t) ((t) >= 0 ? base + m->tensors[t].offset : NULL)
    memset(w, 0, sizeof *w);
    if (pl->mlp_set >= 0) {
        const utg__rset *s = &m->rsets[pl->mlp_set];
        if (s->fc >= 0) fc = s->fc;
        if (s->mid >= 0) mid = s->mid;
        if (s->proj >= 0) mp = s->proj;
    }
    for (k = 0; k < m->n_attn; k++) {
        w->attn_scale[k] = UTG__P(o->attn_scale[k]);
        w->q_gain[k] = UTG__P(h->q_gain[k] >= 0 ? h->q_gain[k] : o->q_gain[k]);
        w->c_q[k] = UTG__P(h->c_q[k]); w->c_k[k] = UTG__P(h->c_k[k]); w->c_v[k] = UTG__P(h->c_v[k]); w->attn_proj[k] = UTG__P(h->proj[k]);
        w->attn_gate[k] = UTG__P(h->gate[k]);
    }
    w->mlp_scale = UTG__P(o->mlp_scale);
    w->resid_mix = UTG__P(o->resid_mix);
    w->norm_bias = UTG__P(o->norm_bias);
    w->fc = UTG__P(fc); w->mlp_mid = UTG__P(mid); w->mlp_proj = UTG__P(mp);
    if (m->t_par_post >= 0) { w->par_post = UTG__P(m->t_par_post) + 4 * (size_t)pl->block; w->par_resid = UTG__P(m->t_par_resid) + 2 * (size_t)pl->block; }
    if (m->t_iter_embed >= 0) w->iter_embed = UTG__P(m->t_iter_embed) + (size_t)l * m->d;
    if (m->t_iter_scale >= 0) w->iter_scale = UTG__P(m->t_iter_scale) + (size_t)l * m->d;
    if (m->t_film >= 0) { w->film_gamma = UTG__P(m->t_film) + (size_t)l * 2 * m->d; w->film_beta = w->film_gamma + m->d; }
    if (m->t_hca >= 0) { w->hc_alpha = UTG__P(m->t_hca) + l; w->hc_beta = UTG__P(m->t_hcb) + l; }
    if (m->t_ve_ls >= 0 && m->ve_of[l] >= 0) w->ve_scale = UTG__P(m->t_ve_ls) + m->ve_of[l];
    if (m->t_vrl >= 0 && l > 0) w->vrl_alpha = UTG__P(m->t_vrl) + (l - 1);
    w->makes_v0 = m->t_vrl >= 0 && l == 0;
    w->ln_scale = m->cfg.ln_scale > 0 ? 1.0f / sqrtf((float)pl->ctrl + 1.0f) : 1.0f;
    w->xsa = m->cfg.xsa_last_n > 0 && pl->ctrl >= m->xsa_from;
#undef UTG__P
}

/* ---- sublayers: a = attention(norm(in) [+ bias]), m = MLP(norm(in) [+ bias]), both unscaled ---- */

/* what the output projection reads: the attention output after XSA and the gate, where they run */
static const void *utg__attn_out(const utg__layer_weights *w, int k, const utg__attn_acts *S) {
    return w->attn_gate[k] ? S->yg : w->xsa ? S->yx : S->y;
}

/* Attention sublayer k of a layer: a = proj(attention(q, k, v)) with q, k, v from norm(in) [+ bias]
   (scaled by ln_scale), q and k through the head norm and RoPE, q by q_gain; v with the value
   embedding and the value residual where on; XSA and the output gate on the heads where on.
   in NULL: the caller's mix_rmsnorm_fwd has already written the norm into S. */
static void utg__attn_fwd(utg_model *m, const utg__layer_weights *w, int k, const float *nbias,
                          utg__attn_acts *S, const void *in, int n_seqs) {
    utg_backend *be = m->be;
    int N = n_seqs * m->Tc, d = m->d;
    const void *src;
    if (in)
        be->rmsnorm_fwd(be, m->at, S->n, S->r, in, N, d,
                        m->eps); /* NULL: mix_rmsnorm_fwd wrote S->n and S->r */
    src = S->n;
    if (nbias) { utg__add_bias(m, S->nb, S->n, nbias, N, d); src = S->nb; }
    /* raw q and k pass through gradient temporaries, which are free in forward */
    utg__model_mm(m, m->g_q, src, w->c_q[k], N, d, d, UTG_NO_TRANS, UTG_TRANS, w->ln_scale, 0.0f);
    be->qk_norm_rope_fwd(be, m->at, S->qg, S->qn, S->rq, m->g_q, m->rope_cur, w->q_gain[k], N, m->Tc, m->H,
                         m->hd, m->rd, m->eps);
    utg__model_mm(m, m->g_k, src, w->c_k[k], N, m->kvd, d, UTG_NO_TRANS, UTG_TRANS, w->ln_scale, 0.0f);
    be->qk_norm_rope_fwd(be, m->at, S->kr, S->kn, S->rk, m->g_k, m->rope_cur, NULL, N, m->Tc, m->Hkv, m->hd,
                         m->rd, m->eps);
    utg__model_mm(m, S->v, src, w->c_v[k], N, m->kvd, d, UTG_NO_TRANS, UTG_TRANS, w->ln_scale, 0.0f);
    if (w->ve_scale)
        utg__add_scaled_by_scalar(m, S->v, S->v, m->ve_scaled, w->ve_scale, N,
                                  m->kvd); /* + the value embedding */
    if (w->vrl_alpha) /* + sigmoid(alpha) * layer 0's values */
        be->mix_fwd(be, m->at, S->v, S->v, NULL, m->acts[0].at[0].v, w->vrl_alpha, N, m->kvd,
                    UTG_MIX_WZ_SCALAR | UTG_MIX_WZ_SIGMOID);
    be->attn_fwd(be, m->at, S->y, S->lse, S->qg, S->kr, S->v, n_seqs, m->Tc, m->H, m->Hkv, m->hd,
                 1.0f / sqrtf((float)m->hd));
    if (w->xsa) be->xsa_fwd(be, m->at, S->yx, S->y, S->v, N, m->H, m->Hkv, m->hd);
    if (w->attn_gate[k])
        be->gate_fwd(be, m->at, S->yg, S->g, w->xsa ? S->yx : S->y, src, w->attn_gate[k], N, m->H, m->hd, d,
                     m->gate_win, m->gate_scale, m->gate_mult);
    utg__model_mm(m, S->a, utg__attn_out(w, k, S), w->attn_proj[k], N, d, d, UTG_NO_TRANS, UTG_TRANS, 1.0f,
                  0.0f);
}

/* ga = dL/da (m->g_attn_out; consumed first); ADDS dL/din into gin. The gradient runs back through
   the output projection, the gate and XSA (g_heads and g_normed take turns holding it), the
   attention core (g_q [N, d], g_k and g_v [N, kvd]), the value extras (the value embedding's and
   the value residual's gradients accumulate in g_ve_scaled and g_v0 for the forward's once-per-pass
   tensors), q_gain/RoPE/head norms, and the three projections into g_normed [N, d], which
   rmsnorm_bwd turns into dL/din. Weight gradients are all ADDED (a block's visits sum). */
static void utg__attn_bwd(utg_model *m, const utg__layer_weights *w, const utg__layer_weights *g, int k, const float *nbias, float *gbias,
                          const utg__attn_acts *S, void *ga, void *gin) {
    utg_backend *be = m->be;
    int N = m->n_tok, d = m->d, kv = m->kvd, n_seqs = m->n_tok / m->Tc;
    size_t Nd = (size_t)N * d;
    const void *src = nbias ? S->nb : S->n;
    void *gy = m->g_heads;
    /* a = out proj^T, out = the attention output after XSA and the gate */
    utg__model_mm(m, m->g_heads, ga, w->attn_proj[k], N, d, d, UTG_NO_TRANS, UTG_NO_TRANS, 1.0f, 0.0f);
    utg__model_mm(m, g->attn_proj[k], ga, utg__attn_out(w, k, S), d, d, N, UTG_TRANS, UTG_NO_TRANS, 1.0f,
                  1.0f);
    /* attention core (attn_bwd writes g_q, g_k, g_v) */
    /* gy holds dL/d(the attention output) back through the gate and XSA: g_heads and g_normed take turns */
    if (w->attn_gate[k]) {
        be->fill(be, m->g_normed, m->at, 0.0f, Nd);
        be->fill(be, m->g_gate_in, m->at, 0.0f, Nd);
        be->gate_bwd(be, m->at, m->g_normed, m->g_gate_in, g->attn_gate[k], gy, w->xsa ? S->yx : S->y, src,
                     w->attn_gate[k], S->g, N, m->H, m->hd, d, m->gate_win, m->gate_scale, m->gate_mult);
        gy = m->g_normed;
    }
    if (w->xsa) { /* dL/dv gets XSA's share, held in g_k_raw (free until k's backward) until attn_bwd has written g_v */
        void *other = gy == m->g_heads ? m->g_normed : m->g_heads;
        be->fill(be, other, m->at, 0.0f, Nd);
        be->fill(be, m->g_k_raw, m->at, 0.0f, (size_t)N * kv);
        be->xsa_bwd(be, m->at, other, m->g_k_raw, gy, S->y, S->v, N, m->H, m->Hkv, m->hd);
        gy = other;
    }
    be->attn_bwd(be, m->at, m->g_q, m->g_k, m->g_v, gy, S->qg, S->kr, S->v, S->y, S->lse, n_seqs, m->Tc, m->H,
                 m->Hkv, m->hd, 1.0f / sqrtf((float)m->hd));
    if (w->xsa) utg__add(m, m->g_v, m->g_v, m->g_k_raw, N, kv);
    /* v = c_v(src) [+ ls * ve] [+ sigmoid(alpha) v0]; layer 0's v0 also reached every later layer */
    if (w->makes_v0 && k == 0) utg__add(m, m->g_v, m->g_v, m->g_v0, N, kv);
    if (w->ve_scale)
        be->mix_bwd(be, m->at, NULL, m->g_ve_scaled, NULL, g->ve_scale, m->g_v, NULL, NULL, m->ve_scaled,
                    w->ve_scale, N, kv, UTG_MIX_WZ_SCALAR);
    if (w->vrl_alpha)
        be->mix_bwd(be, m->at, NULL, m->g_v0, NULL, g->vrl_alpha, m->g_v, NULL, NULL, m->acts[0].at[0].v,
                    w->vrl_alpha, N, kv, UTG_MIX_WZ_SCALAR | UTG_MIX_WZ_SIGMOID);
    /* q_gain, RoPE and the per-head norms, back to raw q (written into g_heads) and k (into g_k_raw) */
    be->qk_norm_rope_bwd(be, m->at, m->g_heads, g->q_gain[k], m->g_q, S->qn, S->rq, m->rope_cur, w->q_gain[k],
                         N, m->Tc, m->H, m->hd, m->rd);
    be->qk_norm_rope_bwd(be, m->at, m->g_k_raw, NULL, m->g_k, S->kn, S->rk, m->rope_cur, NULL, N, m->Tc,
                         m->Hkv, m->hd, m->rd);
    /* q, k, v = src W^T */
    utg__model_mm(m, m->g_normed, m->g_heads, w->c_q[k], N, d, d, UTG_NO_TRANS, UTG_NO_TRANS, w->ln_scale,
                  0.0f);
    utg__model_mm(m, m->g_normed, m->g_k_raw, w->c_k[k], N, d, kv, UTG_NO_TRANS, UTG_NO_TRANS, w->ln_scale,
                  1.0f);
    utg__model_mm(m, m->g_normed, m->g_v, w->c_v[k], N, d, kv, UTG_NO_TRANS, UTG_NO_TRANS, w->ln_scale, 1.0f);
    utg__model_mm(m, g->c_q[k], m->g_heads, src, d, d, N, UTG_TRANS, UTG_NO_TRANS, w->ln_scale, 1.0f);
    utg__model_mm(m, g->c_k[k], m->g_k_raw, src, kv, d, N, UTG_TRANS, UTG_NO_TRANS, w->ln_scale, 1.0f);
    utg__model_mm(m, g->c_v[k], m->g_v, src, kv, d, N, UTG_TRANS, UTG_NO_TRANS, w->ln_scale, 1.0f);
    if (w->attn_gate[k]) utg__add(m, m->g_normed, m->g_normed, m->g_gate_in, N, d); /* the gate read src too */
    if (nbias) be->mix_bwd(be, m->at, NULL, NULL, NULL, gbias, m->g_normed, NULL, NULL, NULL, nbias, N, d, 0);
    be->rmsnorm_bwd(be, m->at, gin, m->g_normed, S->n, S->r, N, d);
}

/* The MLP sublayer: m = proj(act(fc(norm(in) [+ bias]))), act = leaky_relu(x, slope)^2, with a
   second hidden layer (mid) for MLP_LAYERS=3. in NULL: the norm is already in M. */
static void utg__mlp_fwd(utg_model *m, const utg__layer_weights *w, const float *nbias, utg__mlp_acts *M,
                         const void *in, int N) {
    utg_backend *be = m->be;
    int d = m->d, F = m->F;
    const void *src;
    if (in)
        be->rmsnorm_fwd(be, m->at, M->n, M->r, in, N, d,
                        m->eps); /* NULL: mix_rmsnorm_fwd wrote M->n and M->r */
    src = M->n;
    if (nbias) { utg__add_bias(m, M->nb, M->n, nbias, N, d); src = M->nb; }
    utg__model_mm(m, M->u, src, w->fc, N, F, d, UTG_NO_TRANS, UTG_TRANS, w->ln_scale, 0.0f);
    be->relu2_fwd(be, m->at, M->ua, M->u, (size_t)N * F, m->slope);
    if (m->mlp3) {
        utg__model_mm(m, M->u2, M->ua, w->mlp_mid, N, F, F, UTG_NO_TRANS, UTG_TRANS, 1.0f, 0.0f);
        be->relu2_fwd(be, m->at, M->ua2, M->u2, (size_t)N * F, m->slope);
    }
    utg__model_mm(m, M->m, m->mlp3 ? M->ua2 : M->ua, w->mlp_proj, N, d, F, UTG_NO_TRANS, UTG_TRANS, 1.0f,
                  0.0f);
}

/* gm = dL/dm (may be m->g_normed, reused once gm is consumed); ADDS dL/din into gin. Buffers:
   g_hidden [N, F] holds dL/d(activation output), g_hidden_pre [N, F] dL/d(fc output), g_normed
   [N, d] dL/d(norm output) before rmsnorm_bwd. */
static void utg__mlp_bwd(utg_model *m, const utg__layer_weights *w, const utg__layer_weights *g,
                         const float *nbias, float *gbias, const utg__mlp_acts *M, void *gm, void *gin) {
    utg_backend *be = m->be;
    int N = m->n_tok, d = m->d, F = m->F;
    const void *src = nbias ? M->nb : M->n;
    utg__model_mm(m, m->g_hidden, gm, w->mlp_proj, N, F, d, UTG_NO_TRANS, UTG_NO_TRANS, 1.0f, 0.0f);
    utg__model_mm(m, g->mlp_proj, gm, m->mlp3 ? M->ua2 : M->ua, d, F, N, UTG_TRANS, UTG_NO_TRANS, 1.0f, 1.0f);
    if (m->mlp3) {
        be->relu2_bwd(be, m->at, m->g_hidden_pre, m->g_hidden, M->u2, (size_t)N * F, m->slope);
        utg__model_mm(m, m->g_hidden, m->g_hidden_pre, w->mlp_mid, N, F, F, UTG_NO_TRANS, UTG_NO_TRANS, 1.0f,
                      0.0f);
        utg__model_mm(m, g->mlp_mid, m->g_hidden_pre, M->ua, F, F, N, UTG_TRANS, UTG_NO_TRANS, 1.0f, 1.0f);
    }
    be->relu2_bwd(be, m->at, m->g_hidden_pre, m->g_hidden, M->u, (size_t)N * F, m->slope);
    utg__model_mm(m, m->g_normed, m->g_hidden_pre, w->fc, N, d, F, UTG_NO_TRANS, UTG_NO_TRANS, w->ln_scale,
                  0.0f);
    utg__model_mm(m, g->fc, m->g_hidden_pre, src, F, d, N, UTG_TRANS, UTG_NO_TRANS, w->ln_scale, 1.0f);
    if (nbias) be->mix_bwd(be, m->at, NULL, NULL, NULL, gbias, m->g_normed, NULL, NULL, NULL, nbias, N, d, 0);
    be->rmsnorm_bwd(be, m->at, gin, m->g_normed, M->n, M->r, N, d);
}

#define UTG__SC (UTG_MIX_WX_SCALAR | UTG_MIX_WZ_SCALAR)
#define UTG__SET2 (UTG_MIX_DX_SET | UTG_MIX_DZ_SET)
#define UTG__NB(w, k) ((w)->norm_bias ? (w)->norm_bias + (size_t)(k) * m->d : NULL)

/* The U-Net skip into a lane: h + w*skip, or with skip gates lerp(w*skip, h, sigmoid(gate)). */
static void utg__skip_fwd(utg_model *m, void *out, const void *h, const void *skip, const float *w,
                          const float *gate, int N) {
    if (gate) m->be->lerp_fwd(m->be, m->at, out, h, skip, gate, w, N, m->d);
    else utg__add_scaled(m, out, h, skip, w, N, m->d);
}
/* Its backward: G (dL/dout on entry) becomes dL/dh in place; dL/dskip, dL/dw, dL/dgate are added. */
static void utg__skip_bwd(utg_model *m, void *G, void *gskip, float *gw, float *ggate, const void *out,
                          const void *skip, const float *w, const float *gate) {
    int N = m->n_tok;
    if (gate) m->be->lerp_bwd(m->be, m->at, G, gskip, ggate, gw, G, out, skip, gate, w, N, m->d);
    else
        m->be->mix_bwd(m->be, m->at, NULL, gskip, NULL, gw, G, NULL, NULL, skip, w, N, m->d,
                       0); /* dL/dh = G */
}

/* Forward of virtual layer l from input lanes (h0, h1; h1 NULL on one lane); x0 is the normed
   embedding every resid_mix reads, and mix(a, b) below is resid_mix[0] * a + resid_mix[1] * b
   per channel, as train_gpt.py's Block. One lane (train_gpt.py, GPT-J):
       xs  = h0, or the U-Net skip of the popped slot added into it (hs)
       xc  = xs after FiLM / iteration embedding / SHC alpha (hc), else xs
       hin = mix(xc, x0); for each attention k: hmid[k] = cur + attn_scale[k] * attn_k(norm(cur))
       out = last + mlp_scale * MLP(norm(last))   (GPT-J: both sublayers read norm(hin))
       ITER_SCALE / SHC (PR #1110): out = xs + beta * gamma * (that block output - xc)
   Two lanes (r = par_resid, P = par_post, scalars; sa, sm the scaled sublayer outputs):
       sa = attn_scale * attn(norm(mix(l0, x0)))
       TWO_LANE (PR #1204): l0a = r0 l0 + P0 sa, l1a = r0 l1 + P1 sa, sm from mix(l1a, x0),
                            out = r1 l0a + P2 sm, out1 = r1 l1a + P3 sm
       PARALLEL (PR #1530): sm from norm(l1), out = r0 l0 + P0 sa + P2 sm, out1 = r1 l1 + P1 sa + P3 sm
   Each residual add is fused with the next norm (mix_rmsnorm_fwd), which writes the norm straight
   into the sublayer's acts; a pushing layer leaves its output in slot_src. */
/* What the pieces of one virtual layer's forward and backward share. */
typedef struct utg__layer_run {
    const utg_plan_layer *pl;
    utg__acts *A;
    utg__layer_weights w;   /* the parameters this layer reads */
    int N, d, n_seqs;
    const float *skip_w;    /* the U-Net skip weights of the popped slot (NULL: no pop) */
    const float *skip_gate; /* its skip gates (NULL: none) */
} utg__layer_run;

static void utg__layer_run_init(utg_model *m, int l, int n_seqs, utg__layer_run *L) {
    const utg_plan_layer *pl = &m->plan->layers[l];
    size_t row = (size_t)pl->skip_index * m->d;
    L->pl = pl;
    L->A = &m->acts[l];
    L->N = n_seqs * m->Tc;
    L->d = m->d;
    L->n_seqs = n_seqs;
    L->skip_w = pl->pop_slot >= 0 ? UTG__W(m->t_skip) + row : NULL;
    L->skip_gate = L->skip_w && m->t_skip_gates >= 0 ? UTG__W(m->t_skip_gates) + row : NULL;
    utg__layer_ptrs(m, l, 0, &L->w);
}

/* Two lanes (TWO_LANE, PARALLEL): the skip, the attention on lane 0, then the lane updates. */
static void utg__layer_forward_lanes(utg_model *m, utg__layer_run *L, const void *h0, const void *h1) {
    utg_backend *be = m->be;
    utg__acts *A = L->A;
    const utg__layer_weights *w = &L->w;
    const void *l0 = h0, *l1 = h1 ? h1 : h0; /* lanes start as two copies of h */
    const float *r = w->par_resid, *P = w->par_post;
    int N = L->N, d = L->d, two = L->pl->lane == UTG_LANE_TWO;
    if (L->skip_w) {
        const void *skip = m->slot_src[L->pl->pop_slot];
        utg__skip_fwd(m, A->hs, l0, skip, L->skip_w, L->skip_gate, N);
        l0 = A->hs;
        if (two) { /* PR #1204: the skip enters both lanes; PR #1530: lane 0 only */
            utg__skip_fwd(m, A->hs1, l1, skip, L->skip_w, L->skip_gate, N);
            l1 = A->hs1;
        }
    }
    A->xs = l0; /* kept for the backward: the lane inputs after the skip */
    A->xs1 = l1;
    be->mix_rmsnorm_fwd(be, m->at, A->hin, A->at[0].n, A->at[0].r, l0, w->resid_mix, m->x0, w->resid_mix + d,
                        N, d, 0, m->eps);
    utg__attn_fwd(m, w, 0, UTG__NB(w, 0), &A->at[0], NULL, L->n_seqs);
    utg__scale(m, A->sa, A->at[0].a, w->attn_scale[0], N, d);
    if (two) {
        be->mix_fwd(be, m->at, A->l0a, l0, r + 0, A->sa, P + 0, N, d, UTG__SC);
        be->mix_fwd(be, m->at, A->l1a, l1, r + 0, A->sa, P + 1, N, d, UTG__SC);
        be->mix_rmsnorm_fwd(be, m->at, A->hin_m, A->ml.n, A->ml.r, A->l1a, w->resid_mix, m->x0,
                            w->resid_mix + d, N, d, 0, m->eps);
        utg__mlp_fwd(m, w, UTG__NB(w, 1), &A->ml, NULL, N);
        utg__scale(m, A->sm, A->ml.m, w->mlp_scale, N, d);
        be->mix_fwd(be, m->at, A->out, A->l0a, r + 1, A->sm, P + 2, N, d, UTG__SC);
        be->mix_fwd(be, m->at, A->out1, A->l1a, r + 1, A->sm, P + 3, N, d, UTG__SC);
        return;
    }
    utg__mlp_fwd(m, w, UTG__NB(w, 1), &A->ml, l1, N);
    utg__scale(m, A->sm, A->ml.m, w->mlp_scale, N, d);
    be->mix_fwd(be, m->at, A->out, l0, r + 0, A->sa, P + 0, N, d, UTG__SC);
    utg__add_scaled_by_scalar(m, A->out, A->out, A->sm, P + 2, N, d);
    be->mix_fwd(be, m->at, A->out1, l1, r + 1, A->sa, P + 1, N, d, UTG__SC);
    utg__add_scaled_by_scalar(m, A->out1, A->out1, A->sm, P + 3, N, d);
}

/* One lane's input: xs = h0 with the popped skip added, xc = xs after the depth conditioning. */
static const void *utg__layer_forward_input(utg_model *m, utg__layer_run *L, const void *h0) {
    utg_backend *be = m->be;
    utg__acts *A = L->A;
    const utg__layer_weights *w = &L->w;
    const void *x = h0;
    int N = L->N, d = L->d;
    if (L->skip_w) {
        utg__skip_fwd(m, A->hs, x, m->slot_src[L->pl->pop_slot], L->skip_w, L->skip_gate, N);
        x = A->hs;
    }
    A->xs = x;
    if (w->film_gamma) {
        be->mix_fwd(be, m->at, A->hc, x, w->film_gamma, NULL, w->film_beta, N, d, 0);
        x = A->hc;
    } else if (w->iter_embed || w->hc_alpha) {
        be->mix_fwd(be, m->at, A->hc, x, w->hc_alpha, NULL, w->iter_embed, N, d,
                    w->hc_alpha ? UTG_MIX_WX_SCALAR : 0);
        x = A->hc;
    }
    A->xc = x;
    return x;
}

/* One lane's sublayers from xc; returns the stream before the MLP's residual add. GPT-J: both
   sublayers read norm(hin). Otherwise each residual add is fused with the norm of the sublayer that
   reads it next. */
static const void *utg__layer_forward_sublayers(utg_model *m, utg__layer_run *L, const void *x) {
    utg_backend *be = m->be;
    utg__acts *A = L->A;
    const utg__layer_weights *w = &L->w;
    const void *cur = A->hin;
    int N = L->N, d = L->d, na = 0, k;
    if (L->pl->lane == UTG_LANE_GPTJ) { /* the attention's norm is fused; the MLP normalizes hin again */
        be->mix_rmsnorm_fwd(be, m->at, A->hin, A->at[0].n, A->at[0].r, x, w->resid_mix, m->x0,
                            w->resid_mix + d, N, d, 0, m->eps);
        utg__attn_fwd(m, w, 0, UTG__NB(w, 0), &A->at[0], NULL, L->n_seqs);
        utg__mlp_fwd(m, w, UTG__NB(w, 1), &A->ml, A->hin, N);
        utg__add_scaled(m, A->hmid[0], A->hin, A->at[0].a, w->attn_scale[0], N, d);
        return A->hmid[0];
    }
    while (na < m->n_attn && w->c_q[na]) na++; /* (DISABLE_LAYER0_ATTN: block 0 has no attention matrices) */
    be->mix_rmsnorm_fwd(be, m->at, A->hin, na ? A->at[0].n : A->ml.n, na ? A->at[0].r : A->ml.r, x,
                        w->resid_mix, m->x0, w->resid_mix + d, N, d, 0, m->eps);
    for (k = 0; k < na; k++) {
        void *next_n = k + 1 < na ? A->at[k + 1].n : A->ml.n;
        float *next_r = k + 1 < na ? A->at[k + 1].r : A->ml.r;
        utg__attn_fwd(m, w, k, UTG__NB(w, k), &A->at[k], NULL, L->n_seqs);
        be->mix_rmsnorm_fwd(be, m->at, A->hmid[k], next_n, next_r, cur, NULL, A->at[k].a, w->attn_scale[k], N,
                            d, 0, m->eps);
        cur = A->hmid[k];
    }
    utg__mlp_fwd(m, w, UTG__NB(w, m->n_attn), &A->ml, NULL, N);
    return cur;
}

/* One lane's output from the stream before the MLP's residual add. */
static void utg__layer_forward_output(utg_model *m, utg__layer_run *L, const void *last) {
    utg__acts *A = L->A;
    const utg__layer_weights *w = &L->w;
    int N = L->N, d = L->d;
    if (!m->iter_any) {
        utg__add_scaled(m, A->out, last, A->ml.m, w->mlp_scale, N, d);
        return;
    }
    /* PR #1110: out = h + beta * gamma * (block(hc) - hc), hc = alpha * h + iter_embed */
    utg__add_scaled(m, A->blk, last, A->ml.m, w->mlp_scale, N, d);
    utg__sub(m, A->delta, A->blk, A->xc, N);
    if (w->hc_beta) {
        if (w->iter_scale) utg__scale(m, A->dsc, A->delta, w->iter_scale, N, d);
        utg__add_scaled_by_scalar(m, A->out, A->xs, w->iter_scale ? A->dsc : A->delta, w->hc_beta, N, d);
    } else {
        utg__add_scaled(m, A->out, A->xs, A->delta, w->iter_scale, N, d);
    }
}

static void utg__layer_forward(utg_model *m, int l, const void *h0, const void *h1, int n_seqs) {
    utg__layer_run L;
    utg__layer_run_init(m, l, n_seqs, &L);
    if (L.pl->lane == UTG_LANE_TWO || L.pl->lane == UTG_LANE_PARALLEL) {
        utg__layer_forward_lanes(m, &L, h0, h1);
        return;
    }
    utg__layer_forward_output(m, &L, utg__layer_forward_sublayers(m, &L, utg__layer_forward_input(m, &L, h0)));
    if (L.pl->push_slot >= 0) m->slot_src[L.pl->push_slot] = L.A->out;
}

/* The losses of a forward, all summed on the backend: a training forward adds its mean loss to the
   step's sum (no wait); the caller's mean (loss) and per-position losses (token_losses) are
   downloaded only when asked for. */
static utg_result utg__forward_losses(utg_model *m, int N, int grad, float *token_losses, double *loss) {
    utg_backend *be = m->be;
    double *last = m->step_stats + UTG__STAT_LAST_LOSS;
    if (grad) {
        be->reduce_f64(be, m->step_stats + UTG__STAT_LOSS_SUM, m->row_loss, (size_t)N, 1.0 / N,
                       UTG_REDUCE_ADD);
        m->step_forwards++;
    }
    if (token_losses) be->download(be, token_losses, m->row_loss, (size_t)N * sizeof(float));
    if (!loss) return UTG_OK;
    be->reduce_f64(be, last, m->row_loss, (size_t)N, 1.0 / N, 0);
    be->download(be, loss, last, sizeof(double));
    if (!isfinite(*loss)) { utg__msgf(&m->msg, "loss is not finite"); return UTG_ERR_BACKEND; }
    return UTG_OK;
}

/* The forward pass over n_seqs rows of seq_len tokens. grad != 0 leaves d(mean loss)/dlogits in
   the logits buffer for backward; token_losses (host, may be NULL) receives each position's loss.
   Data flow, every buffer backend memory: ids, tgt [N] -> emb = tok_emb[ids] [N, d] (+ BigramHash,
   SmearGate) -> x0 = RMSNorm(emb) [N, d] (the static SmearGate mixes after the norm) -> the value
   embedding ve_scaled [N, kvd] once -> virtual layers 0..n-1, each reading the previous out (out1)
   -> the lanes merged (PARALLEL_FINAL_LANE) -> hf = RMSNorm [N, d] -> logits = hf head^T [N, V]
   -> row_loss [N] (summed on the backend: utg__forward_losses). */
static utg_result utg__forward(utg_model *m, const int32_t *inputs, const int32_t *targets, int n_seqs, int seq_len,
                               int grad, float *token_losses, double *loss) {
    utg_backend *be;
    const void *h0, *h1, *head, *emb;
    size_t N, i;
    utg_result r;
    if (!m || !m->be || !m->plan || !inputs || !targets)
        return UTG_ERR_INVALID; /* (no plan: a failed create) */
    m->have_forward = 0;
    if (n_seqs <= 0 || seq_len <= 0) { utg__msgf(&m->msg, "batch must hold at least one sequence"); return UTG_ERR_INVALID; }
    if (!utg__mul_ok((size_t)n_seqs, (size_t)seq_len, &N) || N > (size_t)INT32_MAX) {
        utg__msgf(&m->msg, "batch of %d sequences of %d tokens is too large", n_seqs, seq_len);
        return UTG_ERR_INVALID;
    }
    if ((r = utg__reserve_tokens(m, N)) != UTG_OK) return r;
    if (seq_len == m->T) {
        m->rope_cur = m->rope_cs;
    } else {
        if (seq_len != m->rope_eval_len) {
            if (m->rope_eval) m->be->buf_free(m->be, m->rope_eval);
            m->rope_eval = NULL;
            m->rope_eval_len = 0;
            if ((r = utg__rope_table(m, seq_len, &m->rope_eval)) != UTG_OK) return r;
            m->rope_eval_len = seq_len;
        }
        m->rope_cur = m->rope_eval;
    }
    m->Tc = seq_len;
    be = m->be;
    for (i = 0; i < N; i++) /* token ids come from files: check them before they index a table */
        if (inputs[i] < 0 || inputs[i] >= m->V || targets[i] < 0 || targets[i] >= m->V) {
            utg__msgf(&m->msg, "token id %d at position %zu is outside the vocabulary [0, %d)",
                      (inputs[i] < 0 || inputs[i] >= m->V) ? inputs[i] : targets[i], i, m->V);
            return UTG_ERR_MISMATCH;
        }
    be->upload(be, m->ids, inputs, N * sizeof(int32_t));
    be->upload(be, m->tgt, targets, N * sizeof(int32_t));
    be->embed_fwd(be, m->at, m->emb, UTG__W(m->t_tok_emb), m->ids, (int)N, m->d);
    if (m->t_bg_embed >= 0) utg__bigram_forward(m, inputs, (int)N);
    emb = m->t_smear_w >= 0 ? utg__smear_gate_forward(m, (int)N) : m->emb;
    if (m->t_smg >= 0) utg__static_smear_forward(m, emb, n_seqs);
    else be->rmsnorm_fwd(be, m->at, m->x0, m->r0, emb, (int)N, m->d, m->eps);
    if (m->t_ve_embed >= 0) utg__value_embed_forward(m, (int)N);
    h0 = m->x0;
    h1 = NULL;
    for (i = 0; i < (size_t)m->plan->n_layers; i++) {
        utg__layer_forward(m, (int)i, h0, h1, n_seqs);
        h0 = m->acts[i].out;
        h1 = m->plan->layers[i].lane == UTG_LANE_TWO || m->plan->layers[i].lane == UTG_LANE_PARALLEL ? m->acts[i].out1 : NULL;
    }
    if (h1) { /* two lanes reach the head: their mean (PARALLEL_FINAL_LANE=mean), or one of them */
        if (m->final_lane == 0) {
            utg__mean(m, m->hlast, h0, h1, (int)N);
            h0 = m->hlast;
        } else if (m->final_lane == 2) {
            h0 = h1;
        }
    }
    be->rmsnorm_fwd(be, m->at, m->hf, m->rf, h0, (int)N, m->d, m->eps);
    head = m->t_lm_head >= 0 ? UTG__W(m->t_lm_head) : UTG__W(m->t_tok_emb);
    utg__model_mm(m, m->logits, m->hf, head, (int)N, m->V, m->d, UTG_NO_TRANS, UTG_TRANS, 1.0f, 0.0f);
    /* the gradient of the mean loss is computed here, in place, while the logits are at hand */
    be->xent_fwd(be, m->at, m->logits, m->row_loss, m->tgt, (int)N, m->V, m->softcap,
                 grad ? 1.0f / (float)N : 0.0f);
    m->n_tok = (int)N;
    m->have_forward = grad ? 1 : 0;
    return utg__forward_losses(m, (int)N, grad, token_losses, loss);
}

UTGDEF utg_result utg_model_forward(utg_model *m, const int32_t *inputs, const int32_t *targets, int n_seqs,
                                    double *loss) {
    if (!m) return UTG_ERR_INVALID;
    return utg__forward(m, inputs, targets, n_seqs, m->T, 1, NULL, loss);
}

UTGDEF utg_result utg_model_eval(utg_model *m, const int32_t *inputs, const int32_t *targets, int n_seqs, int seq_len,
                                 float *token_losses, double *loss) {
    return utg__forward(m, inputs, targets, n_seqs, seq_len, 0, token_losses, loss);
}

/* The running gradients of the backward: lane 0 and lane 1 (current and spare buffers). */
typedef struct utg__gstate { void *lane0, *lane0_spare, *lane1, *lane1_spare; } utg__gstate;

/* What a layer's backward adds to the layer's forward state: the gradients of its weights and of
   the popped skip. */
typedef struct utg__layer_grads {
    utg__layer_weights g;   /* where the weight gradients go (added) */
    float *g_skip_w, *g_skip_gate; /* the skip weights' and gates' gradients (NULL: none) */
    void *g_slot;          /* dL/d(the popped slot's source), added (NULL: no pop) */
} utg__layer_grads;

static void utg__layer_grads_init(utg_model *m, int l, const utg__layer_run *L, utg__layer_grads *G) {
    const utg_plan_layer *pl = L->pl;
    size_t row = (size_t)pl->skip_index * m->d;
    G->g_skip_w = pl->pop_slot >= 0 ? UTG__G(m->t_skip) + row : NULL;
    G->g_skip_gate = L->skip_gate ? UTG__G(m->t_skip_gates) + row : NULL;
    G->g_slot = pl->pop_slot >= 0 ? utg__act_at(m, m->g_skip, (size_t)pl->pop_slot * L->N * L->d) : NULL;
    utg__layer_ptrs(m, l, 1, &G->g);
}

/* The popped skip's backward on one lane: dL/d(lane input) in place, the skip's gradients added. */
static void utg__layer_backward_skip(utg_model *m, const utg__layer_run *L, utg__layer_grads *G, void *g_lane,
                                     const void *out) {
    if (!L->skip_w) return;
    utg__skip_bwd(m, g_lane, G->g_slot, G->g_skip_w, G->g_skip_gate, out, m->slot_src[L->pl->pop_slot], L->skip_w,
                  L->skip_gate);
}

/* TWO_LANE (PR #1204), the forward in reverse. */
static void utg__layer_backward_two_lane(utg_model *m, const utg__layer_run *L, utg__layer_grads *G, utg__gstate *gs) {
    utg_backend *be = m->be;
    const utg__acts *A = L->A;
    const utg__layer_weights *w = &L->w, *g = &G->g;
    void *G0 = gs->lane0, *G1 = gs->lane1, *Ga = m->g_lane0_mid, *Gb = m->g_lane1_mid;
    int N = L->N, d = L->d;
    size_t Nd = (size_t)N * d;
    /* out = r1*l0a + P[1,0]*sm;  out1 = r1*l1a + P[1,1]*sm;  sm = mlp_scale * MLP(resid_mix(l1a, x0)) */
    be->mix_bwd(be, m->at, Ga, m->g_mlp_scaled, g->par_resid + 1, g->par_post + 2, G0, A->l0a,
                w->par_resid + 1, A->sm, w->par_post + 2, N, d, UTG__SC | UTG__SET2);
    be->mix_bwd(be, m->at, Gb, m->g_mlp_scaled, g->par_resid + 1, g->par_post + 3, G1, A->l1a,
                w->par_resid + 1, A->sm, w->par_post + 3, N, d, UTG__SC | UTG_MIX_DX_SET);
    be->mix_bwd(be, m->at, m->g_normed, NULL, g->mlp_scale, NULL, m->g_mlp_scaled, A->ml.m, w->mlp_scale,
                NULL, NULL, N, d, UTG_MIX_DX_SET);
    be->fill(be, m->g_mix_out, m->at, 0.0f, Nd);
    utg__mlp_bwd(m, w, g, UTG__NB(w, 1), UTG__NB(g, 1), &A->ml, m->g_normed, m->g_mix_out);
    be->mix_bwd(be, m->at, Gb, m->g_x0, g->resid_mix, g->resid_mix + d, m->g_mix_out, A->l1a, w->resid_mix,
                m->x0, w->resid_mix + d, N, d, 0);
    /* l0a = r0*xs + P[0,0]*sa;  l1a = r0*xs1 + P[0,1]*sa;  sa = attn_scale * Attn(resid_mix(xs, x0)) */
    be->mix_bwd(be, m->at, G0, m->g_attn_scaled, g->par_resid, g->par_post + 0, Ga, A->xs, w->par_resid,
                A->sa, w->par_post + 0, N, d, UTG__SC | UTG__SET2);
    be->mix_bwd(be, m->at, G1, m->g_attn_scaled, g->par_resid, g->par_post + 1, Gb, A->xs1, w->par_resid,
                A->sa, w->par_post + 1, N, d, UTG__SC | UTG_MIX_DX_SET);
    be->mix_bwd(be, m->at, m->g_attn_out, NULL, g->attn_scale[0], NULL, m->g_attn_scaled, A->at[0].a,
                w->attn_scale[0], NULL, NULL, N, d, UTG_MIX_DX_SET);
    be->fill(be, m->g_mix_out, m->at, 0.0f, Nd);
    utg__attn_bwd(m, w, g, 0, UTG__NB(w, 0), UTG__NB(g, 0), &A->at[0], m->g_attn_out, m->g_mix_out);
    be->mix_bwd(be, m->at, G0, m->g_x0, g->resid_mix, g->resid_mix + d, m->g_mix_out, A->xs, w->resid_mix,
                m->x0, w->resid_mix + d, N, d, 0);
    utg__layer_backward_skip(m, L, G, G0, A->hs);
    utg__layer_backward_skip(m, L, G, G1, A->hs1);
}

/* PARALLEL (PR #1530), the forward in reverse; the lanes' gradients end in the spare buffers,
   which then become the current ones. */
static void utg__layer_backward_parallel(utg_model *m, const utg__layer_run *L, utg__layer_grads *G, utg__gstate *gs) {
    utg_backend *be = m->be;
    const utg__acts *A = L->A;
    const utg__layer_weights *w = &L->w, *g = &G->g;
    void *G0 = gs->lane0, *G1 = gs->lane1, *Ga = gs->lane0_spare, *Gb = gs->lane1_spare;
    int N = L->N, d = L->d;
    /* out = r0*xs + P[0,0]*sa + P[1,0]*sm;  out1 = r1*xs1 + P[0,1]*sa + P[1,1]*sm */
    be->mix_bwd(be, m->at, Ga, m->g_attn_scaled, g->par_resid + 0, g->par_post + 0, G0, A->xs,
                w->par_resid + 0, A->sa, w->par_post + 0, N, d, UTG__SC | UTG__SET2);
    be->mix_bwd(be, m->at, NULL, m->g_mlp_scaled, NULL, g->par_post + 2, G0, NULL, NULL, A->sm,
                w->par_post + 2, N, d, UTG_MIX_WZ_SCALAR | UTG_MIX_DZ_SET);
    be->mix_bwd(be, m->at, Gb, m->g_attn_scaled, g->par_resid + 1, g->par_post + 1, G1, A->xs1,
                w->par_resid + 1, A->sa, w->par_post + 1, N, d, UTG__SC | UTG_MIX_DX_SET);
    be->mix_bwd(be, m->at, NULL, m->g_mlp_scaled, NULL, g->par_post + 3, G1, NULL, NULL, A->sm,
                w->par_post + 3, N, d, UTG_MIX_WZ_SCALAR);
    /* sm = mlp_scale * MLP(xs1): the MLP reads lane 1 directly */
    be->mix_bwd(be, m->at, m->g_normed, NULL, g->mlp_scale, NULL, m->g_mlp_scaled, A->ml.m, w->mlp_scale,
                NULL, NULL, N, d, UTG_MIX_DX_SET);
    utg__mlp_bwd(m, w, g, UTG__NB(w, 1), UTG__NB(g, 1), &A->ml, m->g_normed, Gb);
    /* sa = attn_scale * Attn(resid_mix(xs, x0)) */
    be->mix_bwd(be, m->at, m->g_attn_out, NULL, g->attn_scale[0], NULL, m->g_attn_scaled, A->at[0].a,
                w->attn_scale[0], NULL, NULL, N, d, UTG_MIX_DX_SET);
    be->fill(be, m->g_mix_out, m->at, 0.0f, (size_t)N * d);
    utg__attn_bwd(m, w, g, 0, UTG__NB(w, 0), UTG__NB(g, 0), &A->at[0], m->g_attn_out, m->g_mix_out);
    be->mix_bwd(be, m->at, Ga, m->g_x0, g->resid_mix, g->resid_mix + d, m->g_mix_out, A->xs, w->resid_mix,
                m->x0, w->resid_mix + d, N, d, 0);
    utg__layer_backward_skip(m, L, G, Ga, A->hs);
    gs->lane0 = Ga;
    gs->lane0_spare = G0;
    gs->lane1 = Gb;
    gs->lane1_spare = G1;
}

/* One lane, ITER_SCALE / SHC: out = xs + [beta *] gamma * delta, delta = blk - xc. G = dL/dout
   becomes dL/dblk; the identity path's share stays in g_depth_cond[0] and d(delta) in [1]. */
static void utg__layer_backward_iter_out(utg_model *m, const utg__layer_run *L, utg__layer_grads *G,
                                         void *Gout) {
    utg_backend *be = m->be;
    const utg__acts *A = L->A;
    const utg__layer_weights *w = &L->w, *g = &G->g;
    int N = L->N, d = L->d;
    size_t Nd = (size_t)N * d;
    void *ID = m->g_depth_cond, *DD = utg__act_at(m, m->g_depth_cond, Nd);
    be->copy(be, ID, Gout, Nd * m->at_size);
    if (w->hc_beta) { /* T1 = beta G (g_attn_out is free until the attention's backward) */
        void *T1 = w->iter_scale ? m->g_attn_out : DD;
        be->mix_bwd(be, m->at, NULL, T1, NULL, g->hc_beta, Gout, NULL, NULL,
                    w->iter_scale ? A->dsc : A->delta, w->hc_beta, N, d, UTG_MIX_WZ_SCALAR | UTG_MIX_DZ_SET);
        if (w->iter_scale)
            be->mix_bwd(be, m->at, NULL, DD, NULL, g->iter_scale, T1, NULL, NULL, A->delta, w->iter_scale, N,
                        d, UTG_MIX_DZ_SET);
    } else {
        be->mix_bwd(be, m->at, NULL, DD, NULL, g->iter_scale, Gout, NULL, NULL, A->delta, w->iter_scale, N, d,
                    UTG_MIX_DZ_SET);
    }
    be->copy(be, Gout, DD, Nd * m->at_size); /* dL/dblk */
}

/* One lane's sublayers in reverse, from G = dL/d(the MLP's residual sum), which becomes dL/dhin. */
static void utg__layer_backward_sublayers(utg_model *m, const utg__layer_run *L, utg__layer_grads *G,
                                          void *Gh) {
    utg_backend *be = m->be;
    const utg__acts *A = L->A;
    const utg__layer_weights *w = &L->w, *g = &G->g;
    int N = L->N, d = L->d, k;
    /* (blk or out) = last + mlp_scale * m: the identity path keeps G */
    be->mix_bwd(be, m->at, NULL, m->g_normed, NULL, g->mlp_scale, Gh, NULL, NULL, A->ml.m, w->mlp_scale, N, d,
                UTG_MIX_DZ_SET);
    if (L->pl->lane == UTG_LANE_GPTJ) { /* hmid = hin + attn_scale * a; the MLP read hin too */
        be->mix_bwd(be, m->at, NULL, m->g_attn_out, NULL, g->attn_scale[0], Gh, NULL, NULL, A->at[0].a,
                    w->attn_scale[0], N, d, UTG_MIX_DZ_SET);
        utg__mlp_bwd(m, w, g, UTG__NB(w, 1), UTG__NB(g, 1), &A->ml, m->g_normed, Gh);
        utg__attn_bwd(m, w, g, 0, UTG__NB(w, 0), UTG__NB(g, 0), &A->at[0], m->g_attn_out, Gh);
        return;
    }
    utg__mlp_bwd(m, w, g, UTG__NB(w, m->n_attn), UTG__NB(g, m->n_attn), &A->ml, m->g_normed, Gh);
    for (k = m->n_attn - 1; k >= 0; k--) { /* hmid[k] = (hmid[k-1] or hin) + attn_scale_k * a_k */
        if (!w->c_q[k]) continue;
        be->mix_bwd(be, m->at, NULL, m->g_attn_out, NULL, g->attn_scale[k], Gh, NULL, NULL, A->at[k].a,
                    w->attn_scale[k], N, d, UTG_MIX_DZ_SET);
        utg__attn_bwd(m, w, g, k, UTG__NB(w, k), UTG__NB(g, k), &A->at[k], m->g_attn_out, Gh);
    }
}

static void utg__gstate_swap0(utg__gstate *gs) {
    void *t = gs->lane0;
    gs->lane0 = gs->lane0_spare;
    gs->lane0_spare = t;
}

/* One lane's input in reverse: hin = resid_mix[0] * xc + resid_mix[1] * x0, then the depth
   conditioning and the popped skip; leaves dL/d(the layer input) in gs->lane0. */
static void utg__layer_backward_input(utg_model *m, const utg__layer_run *L, utg__layer_grads *G,
                                      utg__gstate *gs) {
    utg_backend *be = m->be;
    const utg__acts *A = L->A;
    const utg__layer_weights *w = &L->w, *g = &G->g;
    int N = L->N, d = L->d;
    size_t Nd = (size_t)N * d;
    be->mix_bwd(be, m->at, gs->lane0_spare, m->g_x0, g->resid_mix, g->resid_mix + d, gs->lane0, A->xc,
                w->resid_mix, m->x0, w->resid_mix + d, N, d, UTG_MIX_DX_SET);
    utg__gstate_swap0(gs);
    if (m->iter_any) { /* xc = [alpha *] xs [+ iter_embed]: dxc = (block path) - d(delta); dxs = [alpha *] dxc
                          + identity */
        void *ID = m->g_depth_cond, *DD = utg__act_at(m, m->g_depth_cond, Nd);
        utg__sub(m, gs->lane0, gs->lane0, DD, N);
        be->mix_bwd(be, m->at, ID, NULL, g->hc_alpha, g->iter_embed, gs->lane0, A->xs, w->hc_alpha, NULL,
                    w->iter_embed, N, d, w->hc_alpha ? UTG_MIX_WX_SCALAR : 0);
        be->copy(be, gs->lane0, ID, Nd * m->at_size);
    } else if (w->film_gamma) { /* xc = gamma * xs + beta */
        be->mix_bwd(be, m->at, gs->lane0_spare, NULL, g->film_gamma, g->film_beta, gs->lane0, A->xs,
                    w->film_gamma, NULL, w->film_beta, N, d, UTG_MIX_DX_SET);
        utg__gstate_swap0(gs);
    }
    utg__layer_backward_skip(m, L, G, gs->lane0, A->hs);
}

/* Backward of virtual layer l: on entry gs->lane0 (and lane1 on two lanes) hold dL/d(output lanes);
   on exit dL/d(input lanes). Every weight gradient is added, so shared weights sum their visits. */
static void utg__layer_backward(utg_model *m, int l, utg__gstate *gs) {
    utg__layer_run L;
    utg__layer_grads G;
    const utg_plan_layer *pl;
    utg__layer_run_init(m, l, m->n_tok / m->Tc, &L);
    utg__layer_grads_init(m, l, &L, &G);
    pl = L.pl;
    if (pl->lane == UTG_LANE_TWO) {
        utg__layer_backward_two_lane(m, &L, &G, gs);
        return;
    }
    if (pl->lane == UTG_LANE_PARALLEL) {
        utg__layer_backward_parallel(m, &L, &G, gs);
        return;
    }
    if (pl->push_slot >= 0) /* a later layer read this output through the skip stack */
        utg__add(m, gs->lane0, gs->lane0, utg__act_at(m, m->g_skip, (size_t)pl->push_slot * L.N * L.d), L.N,
                 L.d);
    if (m->iter_any) utg__layer_backward_iter_out(m, &L, &G, gs->lane0);
    utg__layer_backward_sublayers(m, &L, &G, gs->lane0);
    utg__layer_backward_input(m, &L, &G, gs);
}

UTGDEF utg_result utg_model_backward(utg_model *m, float loss_scale) {
    utg_backend *be;
    const void *head;
    void *dhead;
    utg__gstate gs;
    size_t Nd;
    int l, N, lanes_out;
    const void *gE;
    if (!m || !m->be) return UTG_ERR_INVALID;
    if (!m->have_forward) { utg__msgf(&m->msg, "backward needs a successful forward first"); return UTG_ERR_INVALID; }
    m->have_forward = 0; /* the logits now hold gradients: one backward per forward */
    be = m->be;
    N = m->n_tok;
    Nd = (size_t)N * m->d;
    be->fill(be, m->g_skip, m->at, 0.0f, (size_t)m->max_slots * Nd);
    be->fill(be, m->g_x0, m->at, 0.0f, Nd);
    if (m->g_ve_scaled) be->fill(be, m->g_ve_scaled, m->at, 0.0f, (size_t)N * m->kvd);
    if (m->g_v0) be->fill(be, m->g_v0, m->at, 0.0f, (size_t)N * m->kvd);
    /* head: logits = hf head^T, the logits buffer holds dloss/dlogits already */
    head = m->t_lm_head >= 0 ? UTG__W(m->t_lm_head) : UTG__W(m->t_tok_emb);
    dhead = m->t_lm_head >= 0 ? UTG__G(m->t_lm_head) : UTG__G(m->t_tok_emb);
    utg__model_mm(m, m->g_normed, m->logits, head, N, m->d, m->V, UTG_NO_TRANS, UTG_NO_TRANS, loss_scale,
                  0.0f);
    utg__model_mm(m, dhead, m->logits, m->hf, m->V, m->d, N, UTG_TRANS, UTG_NO_TRANS, loss_scale, 1.0f);
    gs.lane0 = m->g_lane0; gs.lane0_spare = m->g_lane0_spare; gs.lane1 = m->g_lane1; gs.lane1_spare = m->g_lane1_spare;
    be->fill(be, gs.lane0, m->at, 0.0f, Nd);
    be->rmsnorm_bwd(be, m->at, gs.lane0, m->g_normed, m->hf, m->rf, N, m->d);
    lanes_out = m->plan->lanes_from >= 0;
    if (lanes_out) { /* split the head's gradient over the lanes it read */
        if (m->final_lane == 0) {
            utg__halve(m, gs.lane1, gs.lane0, N);
            utg__halve(m, gs.lane0, gs.lane0, N);
        } else if (m->final_lane == 1) {
            be->fill(be, gs.lane1, m->at, 0.0f, Nd);
        } else {
            be->copy(be, gs.lane1, gs.lane0, Nd * m->at_size);
            be->fill(be, gs.lane0, m->at, 0.0f, Nd);
        }
    }
    for (l = m->plan->n_layers - 1; l >= 0; l--) {
        utg__layer_backward(m, l, &gs);
        if (l == m->plan->lanes_from) /* both lanes started as this layer's input */
            utg__add(m, gs.lane0, gs.lane0, gs.lane1, N, m->d);
    }
    /* x0 = RMSNorm(tok_emb[ids]): x0 fed the first layer and every resid_mix */
    utg__add(m, m->g_x0, m->g_x0, gs.lane0, N, m->d);
    if (m->t_ve_embed >= 0) utg__value_embed_backward(m, N);
    be->fill(be, m->g_normed, m->at, 0.0f, Nd);
    if (m->t_smg >= 0) utg__static_smear_backward(m, N);
    else be->rmsnorm_bwd(be, m->at, m->g_normed, m->g_x0, m->x0, m->r0, N, m->d);
    gE = m->g_normed; /* dL/d(the raw embedding) */
    if (m->t_smear_w >= 0) gE = utg__smear_gate_backward(m, gE, N);
    if (m->t_bg_embed >= 0) utg__bigram_backward(m, gE, N);
    be->embed_bwd(be, m->at, UTG__G(m->t_tok_emb), gE, m->ids, N, m->d);
    return UTG_OK;
}

/* ------------------------------------------------------------------------------------------------
// >>impl_optim
   The optimizer holds four arenas of the parameter arena's layout (backend memory): momentum,
   Adam's second moment, the EMA and the SWA sum, the last two allocated only when on. Each tensor
   falls into one group, as in train_gpt.py's optimizer setup: the blocks' 2-D matrices go to Muon
   (MATRIX_LR), the embeddings to Adam at EMBED_LR (TIED_EMBED_LR when tied), an untied head to Adam at
   HEAD_LR, and everything else (controls, gains, scales, embedding-side projections) to Adam at
   SCALAR_LR. One step: global gradient norm (deterministic sumsq) and clipping; Muon per tensor
   (momentum, optional MuonEq-R row normalization, Newton-Schulz, decoupled weight decay, shape
   scale sqrt(max(1, rows/cols))); then Adam(W) per tensor with one shared step counter.
   utg_optim_average updates EMA and SWA after the step; the schedules (LR warmdown, Muon
   momentum warmup) are plain functions of the step and the wall clock.
   ------------------------------------------------------------------------------------------------ */


/* The optimizer group of a tensor, which picks its update rule and learning rate. */
enum { UTG__GROUP_MUON = 0, UTG__GROUP_EMBED, UTG__GROUP_HEAD, UTG__GROUP_SCALAR };

/* The optimizer's state: the per-tensor groups, the four state arenas (NULL where unused), and
   per-slot Muon buffers so that concurrent threads never share scratch. */
struct utg_optim {
    utg_model *m;
    utg_backend *be;
    int *group;        /* per tensor */
    float *arena[UTG_OPTIM_ARENAS];
    float *upd;        /* Muon update [max numel], one per slot */
    float *ns_scratch; /* Newton-Schulz scratch [max ns], one per slot */
    size_t max_numel, max_ns;
    int n_slots;       /* threads that run Muon tensors at once (1 unless UTG_BACKEND_CONCURRENT) */
    int n_muon, *muon; /* the Muon tensors, largest first */
    int64_t adam_steps, swa_count;
    double last_loss;  /* the mean loss of the forwards of the last step (utg_optim_last_loss) */
};

UTGDEF double utg_optim_last_loss(const utg_optim *o) { return o ? o->last_loss : NAN; }

UTGDEF double utg_muon_momentum(const utg_config *c, int step) {
    int ws = UTG_OFF0(c->muon_momentum_warmup_steps);
    double start = UTG_OFF0(c->muon_momentum_warmup_start), f;
    f = ws > 0 ? (double)step / ws : 1.0;
    if (f > 1.0) f = 1.0;
    return (1.0 - f) * start + f * c->muon_momentum;
}

UTGDEF double utg_train_frac(const utg_config *c, int step, double elapsed_ms) {
    if (c->max_wallclock_seconds > 0) {
        double span = 1000.0 * (c->max_wallclock_seconds - c->gptq_reserve_seconds); /* the records: max(cap - reserve, 1e-9) */
        return elapsed_ms / (span > 1e-9 ? span : 1e-9);
    }
    return (double)step / c->iterations;
}

UTGDEF double utg_lr_scale(const utg_config *c, int step, double elapsed_ms) {
    return utg_lr_scale_phase(c, step, elapsed_ms, 0, 0.0);
}

/* Three regimes, as train_gpt.py's lr_mul and the records' variants: WARMDOWN_FRAC (a fraction of
   training by time or steps, floored at MIN_LR); WARMDOWN_ITERS without a cap (linear to 0 over
   the last iterations); WARMDOWN_ITERS under a cap (the warmdown is WARMDOWN_ITERS average steps
   long, measured in ms, so that it ends with the cap whatever the step time). The step time is
   re-measured from the last plan switch (phase_step, phase_ms) once the new plan has a step. */
UTGDEF double utg_lr_scale_phase(const utg_config *c, int step, double elapsed_ms, int phase_step,
                                 double phase_ms) {
    double cap_ms = c->max_wallclock_seconds > 0 ? 1000.0 * c->max_wallclock_seconds : 0.0;
    int wd_iters = UTG_OFF0(c->warmdown_iters);
    if (c->warmdown_frac > 0.0) {
        double w = c->warmdown_frac, frac = utg_train_frac(c, step, elapsed_ms);
        if (frac < 1.0 - w) return 1.0;
        frac = (1.0 - frac) / w;
        return frac > c->min_lr ? frac : c->min_lr;
    }
    if (wd_iters <= 0) return 1.0;
    if (cap_ms <= 0) {
        int start = c->iterations - wd_iters > 0 ? c->iterations - wd_iters : 0;
        double v;
        if (step < start || step >= c->iterations) return 1.0;
        v = (double)(c->iterations - step) / (wd_iters > 1 ? wd_iters : 1);
        return v > 0.0 ? v : 0.0;
    } else {
        /* the step time of the current depth plan once it has a step of its own (PR #1088) */
        double step_ms = step > phase_step && phase_step > 0 ? (elapsed_ms - phase_ms) / (step - phase_step)
                                                              : elapsed_ms / (step > 1 ? step : 1);
        double warmdown_ms = wd_iters * step_ms;
        double remaining = cap_ms - elapsed_ms > 0 ? cap_ms - elapsed_ms : 0.0;
        return remaining <= warmdown_ms ? remaining / (warmdown_ms > 1e-9 ? warmdown_ms : 1e-9) : 1.0;
    }
}

UTGDEF size_t utg_newton_schulz_scratch(int rows, int cols) {
    size_t mn = (size_t)(rows < cols ? rows : cols);
    return 2 * mn * mn + (size_t)rows * cols;
}

static const float utg__ns_base[3] = {3.4445f, -4.7750f, 2.0315f};
static const float utg__ns_polar[5][3] = {
    {8.156554524902461f, -22.48329292557795f, 15.878769915207462f},
    {4.042929935166739f, -2.808917465908714f, 0.5000178451051316f},
    {3.8916678022926607f, -2.772484153217685f, 0.5060648178503393f},
    {3.285753657755655f, -2.3681294933425376f, 0.46449024233003106f},
    {2.3465413258596377f, -1.7097828382687081f, 0.42323551169305323f}};

UTGDEF void utg_newton_schulz(utg_backend *be, float *X, int rows, int cols, int steps, int flags,
                              float *scratch) {
    int tall = rows > cols, mn = tall ? cols : rows, it, polar_express = (flags & UTG_NS_POLAR_EXPRESS) != 0;
    void (*mm)(utg_backend *, int, void *, const void *, const void *, int, int, int, utg_trans, utg_trans,
               float, float) = (flags & UTG_NS_BF16) && be->matmul_bf16 ? be->matmul_bf16 : be->matmul;
    size_t n = (size_t)rows * cols;
    float *A = scratch, *B = A + (size_t)mn * mn, *Y = B + (size_t)mn * mn;
    be->normalize_frob(be, X, n, 1e-7);
    for (it = 0; it < steps; it++) {
        const float *k = polar_express ? utg__ns_polar[it < 5 ? it : 4] : utg__ns_base;
        if (!tall) { /* A = X X^T; B = b A + c A A; X = a X + B X (A and A A are symmetric: _SYM) */
            mm(be, UTG_MM_F32, A, X, X, mn, mn, cols, UTG_NO_TRANS_SYM, UTG_TRANS, 1.0f, 0.0f);
            mm(be, UTG_MM_F32, B, A, A, mn, mn, mn, UTG_NO_TRANS_SYM, UTG_NO_TRANS, k[2], 0.0f);
            be->axpby(be, B, k[1], A, 1.0f, (size_t)mn * mn);
            mm(be, UTG_MM_F32, Y, B, X, rows, cols, mn, UTG_NO_TRANS, UTG_NO_TRANS, 1.0f, 0.0f);
        } else { /* the same on X^T: A = X^T X; X = a X + X B^T */
            mm(be, UTG_MM_F32, A, X, X, mn, mn, rows, UTG_TRANS_SYM, UTG_NO_TRANS, 1.0f, 0.0f);
            mm(be, UTG_MM_F32, B, A, A, mn, mn, mn, UTG_NO_TRANS_SYM, UTG_NO_TRANS, k[2], 0.0f);
            be->axpby(be, B, k[1], A, 1.0f, (size_t)mn * mn);
            mm(be, UTG_MM_F32, Y, X, B, rows, cols, mn, UTG_NO_TRANS, UTG_TRANS, 1.0f, 0.0f);
        }
        be->axpby(be, X, 1.0f, Y, k[0], n);
    }
}

/* Whether name contains any of the comma-separated substrings in patterns (train_gpt.py's
   CONTROL_TENSOR_NAME_PATTERNS test: `any(p in name for p in patterns)`); empty entries match nothing. */
static int utg__name_matches(const char *name, const char *patterns) {
    const char *p = patterns;
    while (p && *p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0) {
            const char *h;
            for (h = name; *h; h++)
                if (strncmp(h, p, len) == 0) return 1;
        }
        p = e ? e + 1 : NULL;
    }
    return 0;
}

UTGDEF void utg_optim_destroy(utg_optim *o) {
    int i;
    if (!o) return;
    for (i = 0; i < UTG_OPTIM_ARENAS; i++) if (o->arena[i]) o->be->buf_free(o->be, o->arena[i]);
    if (o->upd) o->be->buf_free(o->be, o->upd);
    if (o->ns_scratch) o->be->buf_free(o->be, o->ns_scratch);
    utg__free(&o->m->alloc, o->group);
    utg__free(&o->m->alloc, o->muon);
    utg__free(&o->m->alloc, o);
}

UTGDEF utg_result utg_optim_create(utg_model *m, utg_optim **out) {
    utg_optim *o;
    size_t max_numel = 1, max_ns = 1, bytes;
    int t, i, n_muon = 0;
    if (!m || !out) return UTG_ERR_INVALID;
    *out = NULL;
    o = (utg_optim *)utg__alloc(&m->alloc, sizeof *o);
    if (!o) return UTG_ERR_NOMEM;
    memset(o, 0, sizeof *o);
    o->last_loss = NAN; /* no step yet */
    o->m = m;
    o->be = m->be;
    o->group = (int *)utg__alloc(&m->alloc, sizeof(int) * (size_t)m->n_tensors);
    if (!o->group) { utg_optim_destroy(o); return UTG_ERR_NOMEM; }
    for (t = 0; t < m->n_tensors; t++) {
        const utg_tensor_info *ti = &m->tensors[t];
        int g = UTG__GROUP_SCALAR;
        /* Muon takes the blocks' matrices; the embedding-side projections (bigram.proj, ve_shared.proj)
           go with the scalars, as in the records' optimizer groups */
        if (ti->role == UTG_ROLE_MATRIX && ti->ndim == 2 && ti->block >= 0 &&
            !utg__name_matches(ti->name, m->cfg.control_tensor_name_patterns)) {
            size_t ns = utg_newton_schulz_scratch((int)ti->shape[0], (int)ti->shape[1]);
            g = UTG__GROUP_MUON;
            n_muon++;
            if (ti->numel > max_numel) max_numel = ti->numel;
            if (ns > max_ns) max_ns = ns;
        } else if (ti->role == UTG_ROLE_EMBED) {
            g = UTG__GROUP_EMBED;
        } else if (ti->role == UTG_ROLE_HEAD) {
            g = UTG__GROUP_HEAD;
        }
        o->group[t] = g;
    }
    if (!utg__mul_ok(m->arena_floats, sizeof(float), &bytes)) { utg_optim_destroy(o); return UTG_ERR_NOMEM; }
    for (i = 0; i < UTG_OPTIM_ARENAS; i++) {
        /* the SWA sum only when SWA is on, the EMA only when EMA is on */
        if ((i == 2 && m->cfg.ema_enabled <= 0) || (i == 3 && m->cfg.swa_enabled <= 0)) continue;
        o->arena[i] = (float *)o->be->buf_alloc(o->be, bytes);
        if (!o->arena[i]) { utg_optim_destroy(o); return UTG_ERR_NOMEM; }
    }
    o->n_slots = 1;
    if (o->be->flags & UTG_BACKEND_CONCURRENT) {
        o->n_slots = utg__max_threads();
        if (o->n_slots > UTG_BACKEND_MAX_CALLERS) o->n_slots = UTG_BACKEND_MAX_CALLERS;
        if (o->n_slots > n_muon) o->n_slots = n_muon; /* no more buffers than tensors */
        if (o->n_slots < 1) o->n_slots = 1;
    }
    o->max_numel = max_numel;
    o->max_ns = max_ns;
    if (!utg__mul_ok(max_numel + max_ns, sizeof(float) * (size_t)o->n_slots, &bytes)) { utg_optim_destroy(o); return UTG_ERR_NOMEM; }
    o->upd = (float *)o->be->buf_alloc(o->be, max_numel * sizeof(float) * (size_t)o->n_slots);
    o->ns_scratch = (float *)o->be->buf_alloc(o->be, max_ns * sizeof(float) * (size_t)o->n_slots);
    o->muon = (int *)utg__alloc(&m->alloc, sizeof(int) * (size_t)m->n_tensors);
    if (!o->upd || !o->ns_scratch || !o->muon) { utg_optim_destroy(o); return UTG_ERR_NOMEM; }
    for (t = 0; t < m->n_tensors; t++) { /* insertion by size, largest first (ties: tensor order) */
        int j;
        if (o->group[t] != UTG__GROUP_MUON) continue;
        for (j = o->n_muon; j > 0 && m->tensors[o->muon[j - 1]].numel < m->tensors[t].numel; j--) o->muon[j] = o->muon[j - 1];
        o->muon[j] = t;
        o->n_muon++;
    }
    utg_optim_reset(o);
    *out = o;
    return UTG_OK;
}

UTGDEF void utg_optim_reset(utg_optim *o) {
    utg_backend *be;
    if (!o) return;
    be = o->be;
    be->fill(be, o->arena[UTG_OPTIM_MOMENTUM], UTG_DT_F32, 0.0f, o->m->arena_floats);
    be->fill(be, o->arena[UTG_OPTIM_SECOND_MOMENT], UTG_DT_F32, 0.0f, o->m->arena_floats);
    if (o->arena[UTG_OPTIM_EMA])
        be->copy(be, o->arena[UTG_OPTIM_EMA], o->m->params, o->m->arena_floats * sizeof(float));
    if (o->arena[UTG_OPTIM_SWA]) be->fill(be, o->arena[UTG_OPTIM_SWA], UTG_DT_F32, 0.0f, o->m->arena_floats);
    o->adam_steps = 0;
    o->swa_count = 0;
}

/* The order matters for bit-exact resumes and for matching train_gpt.py: the norm is taken over the
   whole gradient arena (padding is zero) before clipping; clipping scales by
   GRAD_CLIP_NORM / (norm + 1e-6) only when that is below 1, as clip_grad_norm_; Muon runs before
   Adam, and the Adam step counter is shared by every Adam tensor (one torch.optim.Adam per group
   with the same step count). Muon's update per tensor, with B its momentum buffer:
       B = mu B + G;  U = G + mu B (nesterov) or B;  U = NS(U) (MuonEq-R first normalizes rows);
       W = (1 - lr * MUON_WD) W - lr * sqrt(max(1, rows / cols)) * U. */
/* The step's one wait: the gradient's sum of squares is reduced on the backend next to the loss sum
   of the step's forwards, and both come back in one download. A non-finite loss or norm is refused
   here, before anything changes. */
static utg_result utg__optim_read_step(utg_optim *o, double *norm) {
    utg_model *m = o->m;
    double stats[2];
    m->be->reduce_f64(m->be, m->step_stats + UTG__STAT_GRAD_SUMSQ, m->grads, m->arena_floats, 1.0,
                      UTG_REDUCE_SQUARES);
    m->be->download(m->be, stats, m->step_stats, sizeof stats);
    *norm = sqrt(stats[UTG__STAT_GRAD_SUMSQ]);
    o->last_loss = m->step_forwards ? stats[UTG__STAT_LOSS_SUM] / m->step_forwards : NAN;
    if (!isfinite(stats[UTG__STAT_LOSS_SUM])) {
        utg__msgf(&m->msg, "loss is not finite");
        return UTG_ERR_BACKEND;
    }
    if (!isfinite(*norm)) {
        utg__msgf(&m->msg, "gradient norm is not finite");
        return UTG_ERR_BACKEND;
    }
    return UTG_OK;
}

UTGDEF utg_result utg_optim_step(utg_optim *o, int step, double lr_scale, double *grad_norm) {
    utg_model *m;
    utg_backend *be;
    const utg_config *c;
    double norm, mu, b1, b2, bc1, bc2;
    utg_result r;
    int t;
    if (!o || step < 0 || !(lr_scale >= 0.0)) return UTG_ERR_INVALID;
    m = o->m;
    be = o->be;
    c = &m->cfg;
    if ((r = utg__optim_read_step(o, &norm)) != UTG_OK) {
        if (grad_norm) *grad_norm = norm;
        return r;
    }
    if (grad_norm) *grad_norm = norm;
    if (c->grad_clip_norm > 0.0) {
        double coef = c->grad_clip_norm / (norm + 1e-6);
        if (coef < 1.0) be->axpby(be, m->grads, 0.0f, NULL, (float)coef, m->arena_floats);
    }
    mu = utg_muon_momentum(c, step);
    b1 = UTG_OFF0(c->beta1);
    b2 = UTG_OFF0(c->beta2);
    o->adam_steps++;
    bc1 = 1.0 - pow(b1, (double)o->adam_steps);
    bc2 = 1.0 - pow(b2, (double)o->adam_steps);
    /* Muon: the tensors are independent, so with UTG_BACKEND_CONCURRENT each thread takes whole
       tensors (largest first) and the ops inside run on that thread alone. The bits do not depend on
       the thread count: each tensor's arithmetic is the same sequence either way. */
    {
        int i, n_muon = o->n_muon, team = utg__max_threads() < o->n_slots ? utg__max_threads() : o->n_slots;
        int ns_flags = (c->muon_polar_express > 0 ? UTG_NS_POLAR_EXPRESS : 0) | (c->muon_ns_bf16 > 0 ? UTG_NS_BF16 : 0);
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(team) if (team > 1)
#endif
        for (i = 0; i < n_muon; i++) {
            const utg_tensor_info *ti = &m->tensors[o->muon[i]];
            float *p = m->params + ti->offset, *g = m->grads + ti->offset, *m1 = o->arena[UTG_OPTIM_MOMENTUM] + ti->offset;
            int slot = team > 1 ? utg__thread_id() : 0, rows = (int)ti->shape[0], cols = (int)ti->shape[1];
            float *upd = o->upd + (size_t)slot * o->max_numel;
            double lr = c->matrix_lr * lr_scale, shape_scale = sqrt(rows > cols ? (double)rows / cols : 1.0);
            be->muon_momentum(be, upd, m1, g, (float)mu, c->muon_nesterov > 0, ti->numel); /* B = mu B + G; U = G + mu B, or B */
            if (c->muon_eq_r > 0) be->row_normalize(be, upd, rows, cols, 1e-7f);
            utg_newton_schulz(be, upd, rows, cols, c->muon_backend_steps, ns_flags, o->ns_scratch + (size_t)slot * o->max_ns);
            be->axpby(be, p, (float)(-lr * shape_scale), upd, (float)(1.0 - lr * c->muon_wd), ti->numel);
        }
    }
    for (t = 0; t < m->n_tensors; t++) {
        const utg_tensor_info *ti = &m->tensors[t];
        float *p = m->params + ti->offset, *g = m->grads + ti->offset, *m1 = o->arena[UTG_OPTIM_MOMENTUM] + ti->offset;
        if (o->group[t] == UTG__GROUP_MUON) {
            continue;
        } else {
            double lr, wd;
            switch (o->group[t]) {
            case UTG__GROUP_EMBED:
                lr = c->tie_embeddings > 0 ? c->tied_embed_lr : c->embed_lr;
                wd = c->embed_wd;
                break;
            case UTG__GROUP_HEAD: lr = c->head_lr; wd = c->adam_wd; break;
            default: lr = c->scalar_lr; wd = c->adam_wd; break;
            }
            lr *= lr_scale;
            be->adam_step(be, p, g, m1, o->arena[UTG_OPTIM_SECOND_MOMENT] + ti->offset, ti->numel, (float)lr, (float)b1, (float)b2,
                          (float)c->adam_eps, (float)wd, (float)bc1, (float)bc2);
        }
    }
    return UTG_OK;
}

UTGDEF void utg_optim_average(utg_optim *o, int step, double lr_scale) {
    utg_backend *be;
    const utg_config *c;
    if (!o) return;
    be = o->be;
    c = &o->m->cfg;
    if (o->arena[UTG_OPTIM_EMA])
        be->axpby(be, o->arena[UTG_OPTIM_EMA], (float)(1.0 - c->ema_decay), o->m->params, (float)c->ema_decay,
                  o->m->arena_floats);
    if (o->arena[UTG_OPTIM_SWA] && lr_scale < c->swa_start_lr_frac && step % c->swa_every == 0) {
        be->axpby(be, o->arena[UTG_OPTIM_SWA], 1.0f, o->m->params, 1.0f, o->m->arena_floats);
        o->swa_count++;
    }
}

UTGDEF utg_average utg_optim_apply_average(utg_optim *o) {
    utg_backend *be;
    float *ema, *swa_sum;
    if (!o) return UTG_AVERAGE_NONE;
    be = o->be;
    ema = o->arena[UTG_OPTIM_EMA];
    swa_sum = o->arena[UTG_OPTIM_SWA];
    if (ema) {
        be->copy(be, o->m->params, ema, o->m->arena_floats * sizeof(float));
        return UTG_AVERAGE_EMA;
    }
    if (swa_sum && o->swa_count > 0) {
        float inv_count = (float)(1.0 / (double)o->swa_count);
        be->axpby(be, o->m->params, inv_count, swa_sum, 0.0f, o->m->arena_floats);
        return UTG_AVERAGE_SWA;
    }
    return UTG_AVERAGE_NONE;
}

/* Checks that arena `which` exists and that n is its size in floats (get and set move whole arenas). */
static utg_result utg__optim_arena(utg_optim *o, utg_optim_arena which, size_t n) {
    if (!o || (int)which < 0 || (int)which >= UTG_OPTIM_ARENAS) return UTG_ERR_INVALID;
    if (!o->arena[which]) { utg__msgf(&o->m->msg, "optimizer arena %d is not in use", which); return UTG_ERR_INVALID; }
    if (n != o->m->arena_floats) { utg__msgf(&o->m->msg, "optimizer arena holds %zu floats, not %zu", o->m->arena_floats, n); return UTG_ERR_MISMATCH; }
    return UTG_OK;
}
UTGDEF utg_result utg_optim_get_arena(utg_optim *o, utg_optim_arena which, float *dst, size_t n) {
    utg_result r = utg__optim_arena(o, which, n);
    if (r == UTG_OK) o->be->download(o->be, dst, o->arena[which], n * sizeof(float));
    return r;
}
UTGDEF utg_result utg_optim_set_arena(utg_optim *o, utg_optim_arena which, const float *src, size_t n) {
    utg_result r = utg__optim_arena(o, which, n);
    if (r == UTG_OK) o->be->upload(o->be, o->arena[which], src, n * sizeof(float));
    return r;
}
UTGDEF void utg_optim_get_counters(const utg_optim *o, int64_t *adam_steps, int64_t *swa_count) {
    if (adam_steps) *adam_steps = o ? o->adam_steps : 0;
    if (swa_count) *swa_count = o ? o->swa_count : 0;
}
UTGDEF void utg_optim_set_counters(utg_optim *o, int64_t adam_steps, int64_t swa_count) {
    if (!o) return;
    o->adam_steps = adam_steps;
    o->swa_count = swa_count;
}

/* ------------------------------------------------------------------------------------------------
// >>impl_safetensors
   Layout: u64 little-endian header length n, n bytes of JSON, then the data buffer. The JSON maps
   tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data buffer)
   and may hold one "__metadata__" object of strings. The reader below accepts exactly that
   grammar, with caps on every length, and checks the byte ranges tile the buffer.
   ------------------------------------------------------------------------------------------------ */

#define UTG__ST_MAX_NAME 256
#define UTG__ST_MAX_DIMS 8

/* One tensor of a safetensors header: its name, dtype, shape and byte range in the data buffer. */
typedef struct utg__st_entry {
    char name[UTG__ST_MAX_NAME];
    int dtype; /* 0 F32, 1 F16, 2 BF16 */
    int ndim;
    uint64_t shape[UTG__ST_MAX_DIMS];
    uint64_t begin, end;
} utg__st_entry;

/* The JSON cursor: the unread header bytes [p, end) and where errors go. */
typedef struct utg__json {
    const char *p, *end;
    utg_msg *msg;
} utg__json;

/* JSON's whitespace skipped. The utg__js_* readers return 1 on success and 0 after writing a message. */
static void utg__js_ws(utg__json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}
/* A parse error at the cursor, with its offset from the header's start; returns 0 for `return` chains. */
static int utg__js_fail(utg__json *j, const char *what, const char *start) {
    utg__msgf(j->msg, "safetensors header: %s at JSON offset %ld", what, (long)(j->p - start));
    return 0;
}
static int utg__js_peek(utg__json *j, char c) { utg__js_ws(j); return j->p < j->end && *j->p == c; }
/* Consumes c (after whitespace) if it is next; 0 when it is not. */
static int utg__js_take(utg__json *j, char c) {
    if (!utg__js_peek(j, c)) return 0;
    j->p++;
    return 1;
}
/* The value of one hex digit, or -1. */
static int utg__hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}
/* A JSON string into out (NUL-terminated, UTF-8). *too_long is set when it did not fit. */
static int utg__js_string(utg__json *j, char *out, size_t cap, int *too_long) {
    size_t n = 0;
    *too_long = 0;
    if (!utg__js_take(j, '"')) return 0;
    while (j->p < j->end && *j->p != '"') {
        unsigned cp = (unsigned char)*j->p++;
        if (cp < 0x20) return 0;
        if (cp == '\\') {
            char e;
            if (j->p >= j->end) return 0;
            e = *j->p++;
            switch (e) {
            case '"': case '\\': case '/': cp = (unsigned char)e; break;
            case 'b': cp = 8; break;
            case 'f': cp = 12; break;
            case 'n': cp = 10; break;
            case 'r': cp = 13; break;
            case 't': cp = 9; break;
            case 'u': {
                int i, h;
                if (j->end - j->p < 4) return 0;
                for (cp = 0, i = 0; i < 4; i++) { if ((h = utg__hexval(j->p[i])) < 0) return 0; cp = cp * 16 + (unsigned)h; }
                j->p += 4;
                if (cp == 0) return 0; /* no NUL inside names */
                break;
            }
            default: return 0;
            }
            /* encode cp (<= 0xffff; surrogates kept as 3-byte units, names never need them) */
            if (cp >= 0x80) {
                char u[3];
                int k, len = cp < 0x800 ? 2 : 3;
                if (len == 2) { u[0] = (char)(0xc0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 63)); }
                else { u[0] = (char)(0xe0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 63)); u[2] = (char)(0x80 | (cp & 63)); }
                for (k = 0; k < len; k++) { if (n + 1 < cap) out[n++] = u[k]; else *too_long = 1; }
                continue;
            }
        }
        if (n + 1 < cap) out[n++] = (char)cp;
        else *too_long = 1;
    }
    if (j->p >= j->end) return 0;
    j->p++; /* closing quote */
    if (cap) out[n] = 0;
    return 1;
}
/* A non-negative integer no larger than 2^53 (JSON's exact-integer range). */
static int utg__js_uint(utg__json *j, uint64_t *out) {
    uint64_t v = 0;
    const char *s;
    utg__js_ws(j);
    s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        v = v * 10 + (uint64_t)(*j->p++ - '0');
        if (v > ((uint64_t)1 << 53)) return 0;
    }
    if (j->p == s || (j->p - s > 1 && *s == '0')) return 0;
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E')) return 0;
    *out = v;
    return 1;
}
/* A JSON array of at most cap unsigned integers (a shape or data_offsets) into vals. */
static int utg__js_uint_array(utg__json *j, uint64_t *vals, int cap, int *count) {
    int n = 0;
    if (!utg__js_take(j, '[')) return 0;
    if (!utg__js_take(j, ']')) {
        do {
            uint64_t v;
            if (n >= cap || !utg__js_uint(j, &v)) return 0;
            vals[n++] = v;
        } while (utg__js_take(j, ','));
        if (!utg__js_take(j, ']')) return 0;
    }
    *count = n;
    return 1;
}

/* dtype name -> 0 F32, 1 F16, 2 BF16; -2 for a valid safetensors dtype this reader does not
   load (a clear message), -1 for an unknown string. */
static int utg__st_dtype(const char *s) {
    static const char *other[] = {"F64", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL",
                                  "F8_E4M3", "F8_E5M2", "C64", "F4", "F6_E2M3", "F6_E3M2", "E8M0"};
    size_t i;
    if (strcmp(s, "F32") == 0) return 0;
    if (strcmp(s, "F16") == 0) return 1;
    if (strcmp(s, "BF16") == 0) return 2;
    for (i = 0; i < sizeof other / sizeof other[0]; i++) if (strcmp(s, other[i]) == 0) return -2;
    return -1;
}

/* One tensor object: {"dtype": .., "shape": [..], "data_offsets": [b, e]} in any key order. */
static int utg__st_tensor(utg__json *j, utg__st_entry *e, const char *start) {
    int seen = 0, too_long, n;
    char key[32], dt[32];
    if (!utg__js_take(j, '{')) return utg__js_fail(j, "expected '{' for a tensor entry", start);
    do {
        if (!utg__js_string(j, key, sizeof key, &too_long) || !utg__js_take(j, ':'))
            return utg__js_fail(j, "expected a key", start);
        if (strcmp(key, "dtype") == 0 && !(seen & 1)) {
            if (!utg__js_string(j, dt, sizeof dt, &too_long)) return utg__js_fail(j, "bad dtype string", start);
            e->dtype = too_long ? -1 : utg__st_dtype(dt);
            if (e->dtype == -1) { utg__msgf(j->msg, "safetensors: tensor '%s': unknown dtype '%s'", e->name, dt); return 0; }
            if (e->dtype == -2) {
                utg__msgf(j->msg, "safetensors: tensor '%s': dtype %s is not supported (F32, F16, BF16 are)", e->name, dt);
                return 0;
            }
            seen |= 1;
        } else if (strcmp(key, "shape") == 0 && !(seen & 2)) {
            if (!utg__js_uint_array(j, e->shape, UTG__ST_MAX_DIMS, &e->ndim))
                return utg__js_fail(j, "bad shape (at most 8 non-negative integers)", start);
            seen |= 2;
        } else if (strcmp(key, "data_offsets") == 0 && !(seen & 4)) {
            uint64_t off[2];
            if (!utg__js_uint_array(j, off, 2, &n) || n != 2)
                return utg__js_fail(j, "data_offsets must be two non-negative integers", start);
            e->begin = off[0];
            e->end = off[1];
            seen |= 4;
        } else {
            utg__msgf(j->msg, "safetensors: tensor '%s': unexpected or repeated key '%s'", e->name, key);
            return 0;
        }
    } while (utg__js_take(j, ','));
    if (!utg__js_take(j, '}')) return utg__js_fail(j, "expected '}' after a tensor entry", start);
    if (seen != 7) { utg__msgf(j->msg, "safetensors: tensor '%s': needs dtype, shape and data_offsets", e->name); return 0; }
    return 1;
}

/* Skips the "__metadata__" object, which must map strings to strings. */
static int utg__st_metadata(utg__json *j, const char *start) {
    char buf[8];
    int too_long;
    if (!utg__js_take(j, '{')) return utg__js_fail(j, "__metadata__ must be an object", start);
    if (utg__js_take(j, '}')) return 1;
    do {
        if (!utg__js_string(j, buf, sizeof buf, &too_long) || !utg__js_take(j, ':') ||
            !utg__js_string(j, buf, sizeof buf, &too_long))
            return utg__js_fail(j, "__metadata__ values must be strings", start);
    } while (utg__js_take(j, ','));
    if (!utg__js_take(j, '}')) return utg__js_fail(j, "expected '}' after __metadata__", start);
    return 1;
}

/* qsort order of entries by byte range, so that gaps and overlaps show between neighbours. */
static int utg__st_cmp_begin(const void *a, const void *b) {
    const utg__st_entry *x = *(const utg__st_entry *const *)a, *y = *(const utg__st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Parse and check the header; on success *entries (count *n) describe in-bounds, non-overlapping,
   gap-free ranges of the data buffer that starts at *data. */
static utg_result utg__st_parse(const utg_allocator *al, const uint8_t *bytes, size_t size, int max_entries,
                                utg__st_entry **entries, int *n, const uint8_t **data, size_t *data_size, utg_msg *msg) {
    utg__json j;
    uint64_t hlen;
    utg__st_entry *es = NULL, **order = NULL;
    int count = 0, i, have_meta = 0, too_long;
    const char *start;
    *entries = NULL;
    *n = 0;
    if (size < 8) { utg__msgf(msg, "safetensors: file of %zu bytes is too short for the 8-byte header length", size); return UTG_ERR_FORMAT; }
    hlen = utg__rd_u64le(bytes);
    if (hlen < 2 || hlen > UTG_SAFETENSORS_MAX_HEADER || hlen > (uint64_t)(size - 8)) {
        utg__msgf(msg, "safetensors: header length %llu does not fit a file of %zu bytes (max %u)",
                  (unsigned long long)hlen, size, UTG_SAFETENSORS_MAX_HEADER);
        return UTG_ERR_FORMAT;
    }
    *data = bytes + 8 + hlen;
    *data_size = size - 8 - (size_t)hlen;
    start = (const char *)bytes + 8;
    j.p = start;
    j.end = start + hlen;
    j.msg = msg;
    es = (utg__st_entry *)utg__alloc(al, sizeof(utg__st_entry) * (size_t)(max_entries + 1));
    if (!es) return UTG_ERR_NOMEM;
    if (!utg__js_take(&j, '{')) { utg__js_fail(&j, "expected '{'", start); goto fail; }
    if (!utg__js_take(&j, '}')) {
        do {
            utg__st_entry *e = &es[count];
            memset(e, 0, sizeof *e);
            if (!utg__js_string(&j, e->name, sizeof e->name, &too_long) || !utg__js_take(&j, ':')) {
                utg__js_fail(&j, "expected a quoted tensor name and ':'", start);
                goto fail;
            }
            if (strcmp(e->name, "__metadata__") == 0) {
                if (have_meta++) { utg__msgf(msg, "safetensors: two __metadata__ objects"); goto fail; }
                if (!utg__st_metadata(&j, start)) goto fail;
                continue;
            }
            if (too_long) { utg__msgf(msg, "safetensors: tensor name longer than %d bytes", UTG__ST_MAX_NAME - 1); goto fail; }
            if (!utg__st_tensor(&j, e, start)) goto fail;
            for (i = 0; i < count; i++)
                if (strcmp(es[i].name, e->name) == 0) { utg__msgf(msg, "safetensors: tensor '%s' appears twice", e->name); goto fail; }
            if (++count > max_entries) {
                utg__msgf(msg, "safetensors: more than %d tensors", max_entries);
                goto fail;
            }
        } while (utg__js_take(&j, ','));
        if (!utg__js_take(&j, '}')) { utg__js_fail(&j, "expected ',' or '}'", start); goto fail; }
    }
    utg__js_ws(&j);
    if (j.p != j.end) { utg__js_fail(&j, "trailing bytes after the JSON object", start); goto fail; }
    /* byte ranges: sizes, bounds, no overlap, no holes */
    for (i = 0; i < count; i++) {
        utg__st_entry *e = &es[i];
        size_t numel = 1, nbytes;
        int k;
        for (k = 0; k < e->ndim; k++)
            if (!utg__mul_ok(numel, (size_t)e->shape[k], &numel)) { utg__msgf(msg, "safetensors: tensor '%s': shape overflows", e->name); goto fail; }
        if (!utg__mul_ok(numel, e->dtype == 0 ? 4 : 2, &nbytes)) { utg__msgf(msg, "safetensors: tensor '%s': size overflows", e->name); goto fail; }
        if (e->begin > e->end || e->end > (uint64_t)*data_size) {
            utg__msgf(msg, "safetensors: tensor '%s': data_offsets [%llu, %llu] outside the %zu-byte data buffer", e->name,
                      (unsigned long long)e->begin, (unsigned long long)e->end, *data_size);
            goto fail;
        }
        if (e->end - e->begin != (uint64_t)nbytes) {
            utg__msgf(msg, "safetensors: tensor '%s': data_offsets span %llu bytes, its shape and dtype need %zu", e->name,
                      (unsigned long long)(e->end - e->begin), nbytes);
            goto fail;
        }
    }
    order = (utg__st_entry **)utg__alloc(al, sizeof(utg__st_entry *) * (size_t)(count + 1));
    if (!order) { utg__free(al, es); return UTG_ERR_NOMEM; }
    for (i = 0; i < count; i++) order[i] = &es[i];
    qsort(order, (size_t)count, sizeof *order, utg__st_cmp_begin);
    for (i = 0; i < count; i++) {
        uint64_t expect = i == 0 ? 0 : order[i - 1]->end;
        if (order[i]->begin < expect) {
            utg__msgf(msg, "safetensors: tensors '%s' and '%s' overlap", order[i - 1]->name, order[i]->name);
            goto fail;
        }
        if (order[i]->begin > expect) {
            utg__msgf(msg, "safetensors: %llu unused bytes before tensor '%s'", (unsigned long long)(order[i]->begin - expect), order[i]->name);
            goto fail;
        }
    }
    if ((count ? order[count - 1]->end : 0) != (uint64_t)*data_size) {
        utg__msgf(msg, "safetensors: %llu unused bytes at the end of the data buffer",
                  (unsigned long long)(*data_size - (count ? order[count - 1]->end : 0)));
        goto fail;
    }
    utg__free(al, order);
    *entries = es;
    *n = count;
    return UTG_OK;
fail:
    utg__free(al, order);
    utg__free(al, es);
    return UTG_ERR_FORMAT;
}

UTGDEF utg_result utg_model_load_safetensors(utg_model *m, const void *bytes, size_t size) {
    utg__st_entry *es;
    const uint8_t *data;
    size_t data_size, k;
    float *host;
    char *seen;
    int n, i, ti;
    utg_result r;
    if (!m || (!bytes && size)) return UTG_ERR_INVALID;
    /* room for extra tensors, so that the error can name them */
    r = utg__st_parse(&m->alloc, (const uint8_t *)bytes, size, m->n_tensors + 1024, &es, &n, &data, &data_size, &m->msg);
    if (r != UTG_OK) return r;
    host = (float *)utg__alloc(&m->alloc, m->arena_floats * sizeof(float));
    seen = (char *)utg__alloc(&m->alloc, (size_t)m->n_tensors);
    if (!host || !seen) { r = UTG_ERR_NOMEM; goto done; }
    memset(host, 0, m->arena_floats * sizeof(float));
    memset(seen, 0, (size_t)m->n_tensors);
    for (i = 0; i < n; i++) {
        const utg__st_entry *e = &es[i];
        const utg_tensor_info *t;
        const uint8_t *src = data + e->begin;
        int dims_ok;
        ti = utg_model_find_tensor(m, e->name);
        if (ti < 0) { utg__msgf(&m->msg, "safetensors: tensor '%s' is not part of this model", e->name); r = UTG_ERR_MISMATCH; goto done; }
        t = &m->tensors[ti];
        dims_ok = e->ndim == t->ndim;
        for (k = 0; dims_ok && k < (size_t)t->ndim; k++) dims_ok = e->shape[k] == (uint64_t)t->shape[k];
        if (!dims_ok) {
            utg__msgf(&m->msg, "safetensors: tensor '%s' has shape [%llu%s], the model needs [%lld%s]", e->name,
                      (unsigned long long)(e->ndim ? e->shape[0] : 0), e->ndim > 1 ? ",..." : "",
                      (long long)t->shape[0], t->ndim > 1 ? ",..." : "");
            r = UTG_ERR_MISMATCH;
            goto done;
        }
        seen[ti] = 1;
        for (k = 0; k < t->numel; k++) {
            float v;
            if (e->dtype == 0) { uint32_t b = utg__rd_u32le(src + 4 * k); memcpy(&v, &b, 4); }
            else {
                uint16_t h = (uint16_t)(src[2 * k] | (src[2 * k + 1] << 8));
                v = e->dtype == 1 ? utg__f16_to_f32(h) : utg__bf16_to_f32(h);
            }
            if (!isfinite(v)) {
                utg__msgf(&m->msg, "safetensors: tensor '%s' element %zu is not finite", e->name, k);
                r = UTG_ERR_FORMAT;
                goto done;
            }
            host[t->offset + k] = v;
        }
    }
    for (ti = 0; ti < m->n_tensors; ti++)
        if (!seen[ti]) { utg__msgf(&m->msg, "safetensors: tensor '%s' is missing", m->tensors[ti].name); r = UTG_ERR_MISMATCH; goto done; }
    /* all checks passed: only now does the model change */
    m->be->upload(m->be, m->params, host, m->arena_floats * sizeof(float));
done:
    utg__free(&m->alloc, seen);
    utg__free(&m->alloc, host);
    utg__free(&m->alloc, es);
    return r;
}

UTGDEF utg_result utg_model_save_safetensors(utg_model *m, utg_arena which, void **out, size_t *out_size) {
    size_t hcap, hlen = 0, data_bytes = (size_t)0, total, k;
    char *hdr;
    uint8_t *buf;
    float *host;
    int ti;
    if (!m || !out || !out_size || (int)which < 0 || (int)which > 1) return UTG_ERR_INVALID;
    *out = NULL;
    *out_size = 0;
    /* per tensor: a name (< UTG_MAX_NAME), about 60 bytes of fixed text and four numbers of at most 20
       digits; 256 + UTG_MAX_NAME bounds it with room to spare, so no snprintf below truncates */
    hcap = 64 + (size_t)m->n_tensors * (UTG_MAX_NAME + 256);
    hdr = (char *)utg__alloc(&m->alloc, hcap);
    host = (float *)utg__alloc(&m->alloc, m->arena_floats * sizeof(float));
    if (!hdr || !host) { utg__free(&m->alloc, hdr); utg__free(&m->alloc, host); return UTG_ERR_NOMEM; }
    m->be->download(m->be, host, which == UTG_ARENA_GRADS ? m->grads : m->params, m->arena_floats * sizeof(float));
    hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (ti = 0; ti < m->n_tensors; ti++) {
        const utg_tensor_info *t = &m->tensors[ti];
        hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld", t->name, (long long)t->shape[0]);
        for (k = 1; k < (size_t)t->ndim; k++) hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, ",%lld", (long long)t->shape[k]);
        hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, "],\"data_offsets\":[%zu,%zu]}", data_bytes, data_bytes + t->numel * 4);
        data_bytes += t->numel * 4;
    }
    hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, "}");
    while (hlen % 8) hdr[hlen++] = ' '; /* pad so the data buffer starts 8-byte aligned */
    total = 8 + hlen + data_bytes;
    buf = (uint8_t *)utg__alloc(&m->alloc, total);
    if (!buf) { utg__free(&m->alloc, hdr); utg__free(&m->alloc, host); return UTG_ERR_NOMEM; }
    utg__wr_u32le(buf, (uint32_t)hlen);
    utg__wr_u32le(buf + 4, (uint32_t)((uint64_t)hlen >> 32));
    memcpy(buf + 8, hdr, hlen);
    data_bytes = 8 + hlen;
    for (ti = 0; ti < m->n_tensors; ti++) {
        const utg_tensor_info *t = &m->tensors[ti];
        for (k = 0; k < t->numel; k++) {
            uint32_t b;
            memcpy(&b, &host[t->offset + k], 4);
            utg__wr_u32le(buf + data_bytes + 4 * k, b);
        }
        data_bytes += t->numel * 4;
    }
    utg__free(&m->alloc, hdr);
    utg__free(&m->alloc, host);
    *out = buf;
    *out_size = total;
    return UTG_OK;
}

UTGDEF const utg_allocator *utg_model_allocator(const utg_model *m) { return m ? &m->alloc : NULL; }

/* ------------------------------------------------------------------------------------------------
// >>impl_data
   A Parameter Golf shard (fineweb_*.bin, as train_gpt.py's load_data_shard reads it): a 256-entry
   int32 header (magic 20240520, version 1, token count) followed by that many uint16 tokens. The
   parser works on bytes already in memory; the dataset and loaders below read shards from disk.
   ------------------------------------------------------------------------------------------------ */

UTGDEF utg_result utg_shard_parse(const void *bytes, size_t size, const uint8_t **tokens, size_t *n_tokens,
                                  utg_msg *msg) {
    const uint8_t *b = (const uint8_t *)bytes;
    uint32_t magic, version, n;
    if (!bytes || !tokens || !n_tokens) return UTG_ERR_INVALID;
    if (size < UTG_SHARD_HEADER_BYTES) {
        utg__msgf(msg, "shard: %zu bytes is shorter than the %d-byte header", size, UTG_SHARD_HEADER_BYTES);
        return UTG_ERR_FORMAT;
    }
    magic = utg__rd_u32le(b);
    version = utg__rd_u32le(b + 4);
    n = utg__rd_u32le(b + 8);
    if (magic != UTG_SHARD_MAGIC) {
        utg__msgf(msg, "shard: magic %u is not %d", magic, UTG_SHARD_MAGIC);
        return UTG_ERR_FORMAT;
    }
    if (version != UTG_SHARD_VERSION) {
        utg__msgf(msg, "shard: version %u is not %d", version, UTG_SHARD_VERSION);
        return UTG_ERR_FORMAT;
    }
    if (n > (uint32_t)INT32_MAX || (size - UTG_SHARD_HEADER_BYTES) / 2 != (size_t)n ||
        (size - UTG_SHARD_HEADER_BYTES) % 2) {
        utg__msgf(msg, "shard: header says %u tokens (%llu bytes) but the file has %zu bytes", n,
                  (unsigned long long)UTG_SHARD_HEADER_BYTES + 2ull * n, size);
        return UTG_ERR_FORMAT;
    }
    *tokens = b + UTG_SHARD_HEADER_BYTES;
    *n_tokens = n;
    return UTG_OK;
}

UTGDEF uint16_t utg_shard_token(const uint8_t *tokens, size_t i) {
    return (uint16_t)(tokens[2 * i] | (tokens[2 * i + 1] << 8));
}

/* The 1024-byte shard header: magic, version, token count, zeros. */
static void utg__shard_header(uint8_t *out, size_t n) {
    memset(out, 0, UTG_SHARD_HEADER_BYTES);
    utg__wr_u32le(out, UTG_SHARD_MAGIC);
    utg__wr_u32le(out + 4, UTG_SHARD_VERSION);
    utg__wr_u32le(out + 8, (uint32_t)n);
}

UTGDEF utg_result utg_shard_write(const uint16_t *ids, size_t n, uint8_t *out, size_t out_size) {
    size_t i;
    if (!out || (!ids && n) || n > (size_t)INT32_MAX || out_size != UTG_SHARD_HEADER_BYTES + 2 * n) return UTG_ERR_INVALID;
    utg__shard_header(out, n);
    for (i = 0; i < n; i++) {
        out[UTG_SHARD_HEADER_BYTES + 2 * i] = (uint8_t)ids[i];
        out[UTG_SHARD_HEADER_BYTES + 2 * i + 1] = (uint8_t)(ids[i] >> 8);
    }
    return UTG_OK;
}

/* ------------------------------------------------------------------------------------------------
// >>impl_loader
   A dataset is a sorted list of shard paths (a glob), their token counts and one open FILE at a
   time. Two loaders sit on it, both returning inputs and targets shifted by one token:
     SEQUENTIAL  train_gpt.py's TokenStream / DistributedTokenLoader: the shards as one stream,
                 each step takes a chunk of world_size spans of local + 1 tokens and this rank
                 reads its span; the stream wraps at the end.
     SHUFFLED    the records' shuffled loader: each rank owns every world_size-th shard and draws
                 seq_len windows from a per-epoch random phase and permutation of each shard.
   The whole loader state fits a small record (save/restore) so that a resumed run reads exactly
   the batches the uninterrupted run would have read.
   ------------------------------------------------------------------------------------------------ */
#ifndef UTG_NO_STDIO

#include <limits.h>
#if defined(__unix__) || defined(__APPLE__)
#include <glob.h>
#define UTG__HAVE_GLOB 1
#endif

/* 64-bit file positions (see PORTABILITY at the top). */
#if defined(_WIN32)
#define UTG__FSEEK64(f, off, whence) _fseeki64((f), (long long)(off), (whence))
#define UTG__FTELL64(f) ((long long)_ftelli64(f))
#define UTG__FILE_OFF_MAX ((uint64_t)LLONG_MAX)
#elif (defined(__unix__) || defined(__APPLE__)) &&               \
    ((defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200112L) || \
     (defined(_XOPEN_SOURCE) && _XOPEN_SOURCE >= 500))
#include <sys/types.h>
#define UTG__FSEEK64(f, off, whence) fseeko((f), (off_t)(off), (whence))
#define UTG__FTELL64(f) ((long long)ftello(f))
#define UTG__FILE_OFF_MAX (sizeof(off_t) >= 8 ? (uint64_t)INT64_MAX : (uint64_t)INT32_MAX)
#else
#define UTG__FSEEK64(f, off, whence) fseek((f), (long)(off), (whence))
#define UTG__FTELL64(f) ((long long)ftell(f))
#define UTG__FILE_OFF_MAX ((uint64_t)LONG_MAX)
#endif

#define UTG__DS_BUF_TOKENS 32768 /* scratch for little-endian decoding: 64 KiB */

/* A dataset: host memory only. Shards are read on demand through the single open FILE, reopened
   when a read moves to another shard; buf decodes little-endian uint16 ids in chunks of
   UTG__DS_BUF_TOKENS. Token offsets are stream offsets: start[s] + the position inside shard s. */
struct utg_dataset {
    utg_allocator alloc;
    int n_shards;
    int vocab_size;    /* 0: no id check */
    char **paths;      /* n_shards pointers into the same block */
    uint64_t *n_tokens; /* per shard */
    uint64_t *start;   /* n_shards + 1 prefix sums: stream offset of each shard's first token */
    FILE *file;        /* the one open shard, or NULL */
    int file_shard;
    uint64_t file_pos; /* byte position of `file` */
    uint8_t *buf;      /* UTG__DS_BUF_TOKENS * 2 bytes */
};

/* ---- glob expansion: a sorted array of paths in one allocation ---- */

/* qsort order of the matched paths, bytewise, so that the shard order is the same on every system. */
static int utg__ds_path_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b); /* bytewise: unsigned char */
}

/* Copy n strings into one block: n pointers, then the bytes. */
static char **utg__ds_pack_paths(char *const *src, size_t n, const utg_allocator *a) {
    size_t i, bytes = 0, len;
    char **out, *p;
    if (!utg__mul_ok(n, sizeof(char *), &bytes)) return NULL;
    for (i = 0; i < n; i++)
        if (!utg__add_ok(bytes, strlen(src[i]) + 1, &bytes)) return NULL;
    out = (char **)utg__alloc(a, bytes);
    if (!out) return NULL;
    p = (char *)(out + n);
    for (i = 0; i < n; i++) {
        len = strlen(src[i]) + 1;
        memcpy(p, src[i], len);
        out[i] = p;
        p += len;
    }
    qsort(out, n, sizeof(char *), utg__ds_path_cmp);
    return out;
}

/* The sorted paths that match pattern, in one allocation (glob(3) where the platform has it; else
   the pattern names one file, and a wildcard is UTG_ERR_UNSUPPORTED). */
static utg_result utg__ds_expand(const char *pattern, const utg_allocator *a, char ***paths, int *n, utg_msg *msg) {
#ifdef UTG__HAVE_GLOB
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        if (rc == 0) globfree(&g);
        utg__msgf(msg, "no files match '%s'", pattern);
        return UTG_ERR_IO;
    }
    if (rc != 0) {
        utg__msgf(msg, rc == GLOB_NOSPACE ? "out of memory expanding '%s'" : "cannot read the directories of '%s'", pattern);
        return rc == GLOB_NOSPACE ? UTG_ERR_NOMEM : UTG_ERR_IO;
    }
    if (g.gl_pathc > (size_t)INT_MAX) {
        globfree(&g);
        utg__msgf(msg, "'%s' matches too many files", pattern);
        return UTG_ERR_INVALID;
    }
    *paths = utg__ds_pack_paths(g.gl_pathv, g.gl_pathc, a);
    *n = (int)g.gl_pathc;
    globfree(&g);
#else
    char *one[1];
    if (strpbrk(pattern, "*?[")) {
        utg__msgf(msg, "'%s': wildcards need POSIX glob(), not available on this platform", pattern);
        return UTG_ERR_UNSUPPORTED;
    }
    one[0] = (char *)pattern; /* only read */
    *paths = utg__ds_pack_paths(one, 1, a);
    *n = 1;
#endif
    if (!*paths) { utg__msgf(msg, "out of memory listing '%s'", pattern); return UTG_ERR_NOMEM; }
    return UTG_OK;
}

/* ---- shard headers ---- */

/* The size of an open file in bytes (64-bit seeks), left positioned at its start. */
static utg_result utg__ds_file_size(FILE *f, const char *path, uint64_t *size, utg_msg *msg) {
    long long end;
    if (UTG__FSEEK64(f, 0, SEEK_END) != 0 || (end = UTG__FTELL64(f)) < 0 || UTG__FSEEK64(f, 0, SEEK_SET) != 0) {
        utg__msgf(msg, "cannot size '%s' (not a regular file?)", path);
        return UTG_ERR_IO;
    }
    *size = (uint64_t)end;
    return UTG_OK;
}

/* Parameter Golf's load_data_shard checks: magic, version, file size == 1024 + 2 * num_tokens. */
static utg_result utg__ds_check_shard(const char *path, uint64_t *n_tokens, utg_msg *msg) {
    uint8_t h[UTG_SHARD_HEADER_BYTES];
    uint64_t size = 0;
    uint32_t magic, version, n;
    utg_result r;
    FILE *f = fopen(path, "rb");
    if (!f) { utg__msgf(msg, "cannot open '%s'", path); return UTG_ERR_IO; }
    r = utg__ds_file_size(f, path, &size, msg);
    if (r == UTG_OK && size < UTG_SHARD_HEADER_BYTES) {
        utg__msgf(msg, "'%s': %llu bytes is shorter than the %d-byte shard header", path,
                  (unsigned long long)size, UTG_SHARD_HEADER_BYTES);
        r = UTG_ERR_FORMAT;
    }
    if (r == UTG_OK && fread(h, 1, sizeof h, f) != sizeof h) {
        utg__msgf(msg, "cannot read the header of '%s'", path);
        r = UTG_ERR_IO;
    }
    fclose(f);
    if (r != UTG_OK) return r;
    magic = utg__rd_u32le(h);
    version = utg__rd_u32le(h + 4);
    n = utg__rd_u32le(h + 8);
    if (magic != UTG_SHARD_MAGIC) {
        utg__msgf(msg, "'%s': magic %u is not %d (not a token shard)", path, magic, UTG_SHARD_MAGIC);
        return UTG_ERR_FORMAT;
    }
    if (version != UTG_SHARD_VERSION) {
        utg__msgf(msg, "'%s': shard version %u is not %d", path, version, UTG_SHARD_VERSION);
        return UTG_ERR_FORMAT;
    }
    if (n > (uint32_t)INT32_MAX || size != UTG_SHARD_HEADER_BYTES + 2ull * n) {
        utg__msgf(msg, "'%s': header says %d tokens (%llu bytes) but the file has %llu bytes", path,
                  (int)(int32_t)n, (unsigned long long)UTG_SHARD_HEADER_BYTES + 2ull * n, (unsigned long long)size);
        return UTG_ERR_FORMAT;
    }
    *n_tokens = n;
    return UTG_OK;
}

/* ---- dataset ---- */

UTGDEF void utg_dataset_close(utg_dataset *ds) {
    utg_allocator a;
    if (!ds) return;
    a = ds->alloc;
    if (ds->file) fclose(ds->file);
    {
        void *owned[] = {ds->paths, ds->n_tokens, ds->start, ds->buf, ds};
        utg__free_all(&a, owned, 5);
    }
}

UTGDEF utg_result utg_dataset_open(const char *pattern, int vocab_size,
                                   const utg_allocator *alloc, utg_dataset **out, utg_msg *msg) {
    utg_dataset *ds;
    utg_result r;
    int i;
    if (!out || !pattern || vocab_size < 0) return UTG_ERR_INVALID;
    *out = NULL;
    ds = (utg_dataset *)utg__alloc(alloc, sizeof *ds);
    if (!ds) return UTG_ERR_NOMEM;
    memset(ds, 0, sizeof *ds);
    if (alloc) ds->alloc = *alloc;
    ds->vocab_size = vocab_size;
    ds->file_shard = -1;
    r = utg__ds_expand(pattern, &ds->alloc, &ds->paths, &ds->n_shards, msg);
    if (r != UTG_OK) { utg_dataset_close(ds); return r; }
    ds->n_tokens = (uint64_t *)utg__alloc(&ds->alloc, sizeof(uint64_t) * (size_t)ds->n_shards);
    ds->start = (uint64_t *)utg__alloc(&ds->alloc, sizeof(uint64_t) * ((size_t)ds->n_shards + 1));
    ds->buf = (uint8_t *)utg__alloc(&ds->alloc, 2 * UTG__DS_BUF_TOKENS);
    if (!ds->n_tokens || !ds->start || !ds->buf) {
        utg_dataset_close(ds);
        utg__msgf(msg, "out of memory opening '%s'", pattern);
        return UTG_ERR_NOMEM;
    }
    ds->start[0] = 0;
    for (i = 0; i < ds->n_shards; i++) {
        r = utg__ds_check_shard(ds->paths[i], &ds->n_tokens[i], msg);
        if (r != UTG_OK) { utg_dataset_close(ds); return r; }
        ds->start[i + 1] = ds->start[i] + ds->n_tokens[i]; /* < 2^31 per shard, < 2^62 in all */
    }
    *out = ds;
    return UTG_OK;
}

UTGDEF int utg_dataset_shard_count(const utg_dataset *ds) { return ds ? ds->n_shards : 0; }
UTGDEF uint64_t utg_dataset_tokens(const utg_dataset *ds) { return ds ? ds->start[ds->n_shards] : 0; }
UTGDEF uint64_t utg_dataset_shard_tokens(const utg_dataset *ds, int shard) {
    return ds && shard >= 0 && shard < ds->n_shards ? ds->n_tokens[shard] : 0;
}
UTGDEF const char *utg_dataset_shard_path(const utg_dataset *ds, int shard) {
    return ds && shard >= 0 && shard < ds->n_shards ? ds->paths[shard] : NULL;
}

/* The shard holding stream offset `offset` (< total): the last shard starting at or before it, which
   skips empty shards. */
static int utg__ds_find(const utg_dataset *ds, uint64_t offset) {
    int lo = 0, hi = ds->n_shards;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (ds->start[mid] <= offset) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* Closes the dataset's open shard, if any. */
static void utg__ds_drop_file(utg_dataset *ds) {
    if (ds->file) fclose(ds->file);
    ds->file = NULL;
    ds->file_shard = -1;
}

/* Position the one open FILE at byte `pos` of `shard`, reopening only on a shard change and seeking
   only when the position differs (sequential reads then cost no seek). */
static utg_result utg__ds_seek(utg_dataset *ds, int shard, uint64_t pos, utg_msg *msg) {
    const char *path = ds->paths[shard];
    if (ds->file_shard != shard) {
        utg__ds_drop_file(ds);
        ds->file = fopen(path, "rb");
        if (!ds->file) { utg__msgf(msg, "cannot open '%s'", path); return UTG_ERR_IO; }
        ds->file_shard = shard;
        ds->file_pos = 0;
    }
    if (ds->file_pos == pos) return UTG_OK;
    if (pos > UTG__FILE_OFF_MAX) {
        utg__ds_drop_file(ds);
        utg__msgf(msg, "'%s': byte offset %llu is beyond this build's fseek range (define _POSIX_C_SOURCE "
                  "200809L and _FILE_OFFSET_BITS 64)", path, (unsigned long long)pos);
        return UTG_ERR_UNSUPPORTED;
    }
    if (UTG__FSEEK64(ds->file, pos, SEEK_SET) != 0) {
        utg__ds_drop_file(ds);
        utg__msgf(msg, "cannot seek to byte %llu of '%s'", (unsigned long long)pos, path);
        return UTG_ERR_IO;
    }
    ds->file_pos = pos;
    return UTG_OK;
}

/* Read n ids of one shard from its token `first` (all inside the shard). */
static utg_result utg__ds_read_shard(utg_dataset *ds, int shard, uint64_t first, size_t n, int32_t *out,
                                     utg_msg *msg) {
    utg_result r = utg__ds_seek(ds, shard, UTG_SHARD_HEADER_BYTES + 2 * first, msg);
    size_t done = 0, i;
    if (r != UTG_OK) return r;
    while (done < n) {
        size_t k = n - done < UTG__DS_BUF_TOKENS ? n - done : UTG__DS_BUF_TOKENS;
        if (fread(ds->buf, 2, k, ds->file) != k) {
            utg__ds_drop_file(ds);
            utg__msgf(msg, "short read in '%s' at token %llu (did the file change?)", ds->paths[shard],
                      (unsigned long long)(first + done));
            return UTG_ERR_IO;
        }
        ds->file_pos += 2 * (uint64_t)k;
        for (i = 0; i < k; i++) {
            int32_t id = (int32_t)(ds->buf[2 * i] | (ds->buf[2 * i + 1] << 8));
            if (ds->vocab_size > 0 && id >= ds->vocab_size) {
                utg__msgf(msg,
                          "'%s': token %llu (stream offset %llu) is id %d, outside the vocabulary [0, %d)",
                          ds->paths[shard], (unsigned long long)(first + done + i),
                          (unsigned long long)(ds->start[shard] + first + done + i), (int)id, ds->vocab_size);
                return UTG_ERR_FORMAT;
            }
            out[done + i] = id;
        }
        done += k;
    }
    return UTG_OK;
}

UTGDEF utg_result utg_dataset_read(utg_dataset *ds, uint64_t offset, size_t n, int32_t *out, utg_msg *msg) {
    uint64_t total;
    int s;
    if (!ds || (!out && n)) return UTG_ERR_INVALID;
    total = ds->start[ds->n_shards];
    if (offset > total || (uint64_t)n > total - offset) {
        utg__msgf(msg, "read of %zu tokens at %llu is past the end of the %llu-token dataset", n,
                  (unsigned long long)offset, (unsigned long long)total);
        return UTG_ERR_INVALID;
    }
    if (n == 0) return UTG_OK;
    s = utg__ds_find(ds, offset);
    while (n > 0) {
        uint64_t avail = ds->start[s + 1] - offset;
        size_t k = (uint64_t)n < avail ? n : (size_t)avail;
        if (k > 0) {
            utg_result r = utg__ds_read_shard(ds, s, offset - ds->start[s], k, out, msg);
            if (r != UTG_OK) return r;
            out += k;
            n -= k;
            offset += k;
        }
        s++;
    }
    return UTG_OK;
}

/* Read n ids of the endless stream (the dataset repeated) from `pos`, as TokenStream.take does. */
static utg_result utg__ds_read_wrap(utg_dataset *ds, uint64_t pos, size_t n, int32_t *out, utg_msg *msg) {
    uint64_t total = ds->start[ds->n_shards];
    pos %= total;
    while (n > 0) {
        size_t k = (uint64_t)n < total - pos ? n : (size_t)(total - pos);
        utg_result r = utg_dataset_read(ds, pos, k, out, msg);
        if (r != UTG_OK) return r;
        out += k;
        n -= k;
        pos = 0;
    }
    return UTG_OK;
}

UTGDEF utg_result utg_dataset_read_val(utg_dataset *ds, int seq_len, int32_t **out, size_t *n_out,
                                       const utg_allocator *alloc, utg_msg *msg) {
    uint64_t total, keep;
    size_t bytes;
    int32_t *p;
    utg_result r;
    if (!ds || !out || !n_out || seq_len <= 0) return UTG_ERR_INVALID;
    *out = NULL;
    *n_out = 0;
    total = ds->start[ds->n_shards];
    if (total < (uint64_t)seq_len + 1) {
        utg__msgf(msg, "the validation split has %llu tokens, too short for seq_len %d (needs %d)",
                  (unsigned long long)total, seq_len, seq_len + 1);
        return UTG_ERR_INVALID;
    }
    keep = (total - 1) / (uint64_t)seq_len * (uint64_t)seq_len + 1;
    if ((uint64_t)(size_t)keep != keep || !utg__mul_ok((size_t)keep, sizeof(int32_t), &bytes) ||
        !(p = (int32_t *)utg__alloc(alloc, bytes))) {
        utg__msgf(msg, "out of memory for %llu validation tokens", (unsigned long long)keep);
        return UTG_ERR_NOMEM;
    }
    r = utg_dataset_read(ds, 0, (size_t)keep, p, msg);
    if (r != UTG_OK) { utg__free(alloc, p); return r; }
    *out = p;
    *n_out = (size_t)keep;
    return UTG_OK;
}


/* ---- loaders ---- */

/* The loader's state. What decides every future batch is small: SEQUENTIAL pos and wraps;
   SHUFFLED epoch, the choice RNG and taken[]. The rest of the SHUFFLED arrays (n_windows, phase,
   perm_off, perm) are a pure function of (seed, rank, epoch, shard), rebuilt by
   utg__ld_begin_epoch at each new epoch and on restore, which is why the saved record holds only
   the deciding fields. Host memory from `alloc`; the arrays are sized for n_owned shards once, at
   create. */
struct utg_loader {
    utg_allocator alloc;
    utg_dataset *ds;
    utg_loader_kind kind;
    int seq_len, rank, world_size;
    uint64_t seed;
    /* SEQUENTIAL */
    uint64_t pos;      /* stream offset of the next chunk, in [0, tokens) */
    uint64_t wraps;    /* times the chunk start wrapped past the end */
    /* SHUFFLED: owned shard i is dataset shard rank + i * world_size */
    int n_owned;
    uint64_t epoch;
    utg__rng rng;           /* shard choice; phases and orders: utg__ld_shard_epoch */
    uint64_t *taken;        /* windows taken this epoch, per owned shard */
    uint64_t *taken_snap;   /* copy for undoing a failed next */
    uint64_t *n_windows;    /* windows this epoch (depends on the phase) */
    uint64_t *phase;        /* first window's start within the shard */
    size_t *perm_off;       /* where each owned shard's order starts in perm */
    uint32_t *perm;         /* window order per owned shard, this epoch */
};

/* Seeds. The real loader draws from numpy's PCG64 seeded with the rank (some records: seed + rank);
   numpy's stream cannot be reproduced here and need not be: this one mixes (seed, rank, ...) through
   splitmix64 into utg__rng (xoshiro256**). Phases and orders come from a generator keyed by (seed,
   rank, epoch, shard), so a checkpoint stores only the choice RNG, the epoch and per-shard counts. */
static uint64_t utg__ld_key(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t x = seed;
    x = utg__splitmix64(&x) ^ a;
    x = utg__splitmix64(&x) ^ b;
    x = utg__splitmix64(&x) ^ c;
    return utg__splitmix64(&x);
}
#define UTG__LD_CHOICE_TAG 0xc401ce5eedull /* as the epoch and shard of the choice RNG's key */

/* Uniform in [0, n), n > 0, without modulo bias. */
static uint64_t utg__ld_below(utg__rng *r, uint64_t n) {
    uint64_t reject = (0 - n) % n, x; /* 2^64 mod n: draws below it would bias x % n */
    do x = utg__rng_next(r);
    while (x < reject);
    return x % n;
}

/* The dataset index of this rank's i-th owned shard (SHUFFLED). */
static int utg__ld_shard(const utg_loader *ld, int i) { return ld->rank + i * ld->world_size; }

/* Windows of a shard of n tokens at phase 0: the most any epoch can have. */
static uint64_t utg__ld_max_windows(uint64_t n, int seq_len) {
    return n >= (uint64_t)seq_len + 1 ? (n - 1) / (uint64_t)seq_len : 0;
}

/* One owned shard's epoch, as ShuffledSequenceLoader._reset_shard: phase uniform in
   [0, min(T - 1, n - T - 1)], windows starting at phase + k*T for k < (n - 1 - phase) / T, each
   T + 1 tokens long (inputs and shifted targets; consecutive windows share one token), in random
   order (Fisher-Yates). perm may be NULL to get the phase and count only. */
static void utg__ld_shard_epoch(const utg_loader *ld, int i, uint64_t epoch, uint64_t *phase,
                                uint64_t *n_windows, uint32_t *perm) {
    uint64_t n = ld->ds->n_tokens[utg__ld_shard(ld, i)], T = (uint64_t)ld->seq_len, max_phase, k;
    utg__rng r;
    *phase = 0;
    *n_windows = 0;
    if (n < T + 1) return; /* too short for one window: skipped, as remaining = 0 skips it there */
    utg__rng_seed(&r, utg__ld_key(ld->seed, (uint64_t)ld->rank, epoch, (uint64_t)utg__ld_shard(ld, i)));
    max_phase = T - 1 < n - T - 1 ? T - 1 : n - T - 1;
    *phase = max_phase > 0 ? utg__ld_below(&r, max_phase + 1) : 0;
    *n_windows = (n - 1 - *phase) / T;
    if (!perm) return;
    for (k = 0; k < *n_windows; k++) perm[k] = (uint32_t)k;
    for (k = *n_windows; k > 1; k--) {
        uint64_t j = utg__ld_below(&r, k);
        uint32_t t = perm[k - 1];
        perm[k - 1] = perm[j];
        perm[j] = t;
    }
}

/* Starts epoch `epoch` of the shuffled loader: each owned shard's phase, window count and window
   order for that epoch, all derived from (seed, rank, shard, epoch), and nothing taken yet. */
static void utg__ld_begin_epoch(utg_loader *ld, uint64_t epoch) {
    int i;
    ld->epoch = epoch;
    for (i = 0; i < ld->n_owned; i++) {
        utg__ld_shard_epoch(ld, i, epoch, &ld->phase[i], &ld->n_windows[i], ld->perm + ld->perm_off[i]);
        ld->taken[i] = 0;
    }
}

UTGDEF void utg_loader_reset(utg_loader *ld) {
    if (!ld) return;
    ld->pos = 0;
    ld->wraps = 0;
    if (ld->kind != UTG_LOADER_SHUFFLED) return;
    utg__rng_seed(&ld->rng, utg__ld_key(ld->seed, (uint64_t)ld->rank, UTG__LD_CHOICE_TAG, UTG__LD_CHOICE_TAG));
    utg__ld_begin_epoch(ld, 0);
}

UTGDEF void utg_loader_destroy(utg_loader *ld) {
    utg_allocator a;
    if (!ld) return;
    a = ld->alloc;
    {
        void *owned[] = {ld->taken, ld->taken_snap, ld->n_windows, ld->phase, ld->perm_off, ld->perm, ld};
        utg__free_all(&a, owned, 7);
    }
}

/* Owned shards and the order buffer (4 bytes per window of every owned shard). */
static utg_result utg__ld_setup_shuffled(utg_loader *ld, utg_msg *msg) {
    const utg_allocator *a = &ld->alloc;
    size_t n = (size_t)ld->n_owned, total = 0, bytes;
    int i;
    ld->taken = (uint64_t *)utg__alloc(a, n * sizeof(uint64_t));
    ld->taken_snap = (uint64_t *)utg__alloc(a, n * sizeof(uint64_t));
    ld->n_windows = (uint64_t *)utg__alloc(a, n * sizeof(uint64_t));
    ld->phase = (uint64_t *)utg__alloc(a, n * sizeof(uint64_t));
    ld->perm_off = (size_t *)utg__alloc(a, n * sizeof(size_t));
    if (!ld->taken || !ld->taken_snap || !ld->n_windows || !ld->phase || !ld->perm_off) {
        utg__msgf(msg, "out of memory for the loader");
        return UTG_ERR_NOMEM;
    }
    for (i = 0; i < ld->n_owned; i++) {
        uint64_t w = utg__ld_max_windows(ld->ds->n_tokens[utg__ld_shard(ld, i)], ld->seq_len);
        ld->perm_off[i] = total;
        total += (size_t)w; /* w < 2^31 per shard; the sum is checked below */
        if (total < (size_t)w) total = SIZE_MAX;
    }
    if (total == 0) {
        utg__msgf(msg, "rank %d owns no shard with at least seq_len + 1 = %d tokens", ld->rank,
                  ld->seq_len + 1);
        return UTG_ERR_INVALID;
    }
    if (!utg__mul_ok(total, sizeof(uint32_t), &bytes) || !(ld->perm = (uint32_t *)utg__alloc(a, bytes))) {
        utg__msgf(msg, "out of memory for the order of %zu windows", total);
        return UTG_ERR_NOMEM;
    }
    return UTG_OK;
}

UTGDEF utg_result utg_loader_create(utg_dataset *ds, utg_loader_kind kind, int seq_len,
                                    int rank, int world_size, uint64_t seed, const utg_allocator *alloc, utg_loader **out,
                                    utg_msg *msg) {
    utg_loader *ld;
    utg_result r = UTG_OK;
    if (!out) return UTG_ERR_INVALID;
    *out = NULL;
    if (!ds || (kind != UTG_LOADER_SEQUENTIAL && kind != UTG_LOADER_SHUFFLED) || seq_len <= 0 ||
        world_size <= 0 || rank < 0 || rank >= world_size) {
        utg__msgf(msg, "loader: need a dataset, a known kind, seq_len > 0 and 0 <= rank < world_size "
                  "(got kind %d, seq_len %d, rank %d, world %d)", (int)kind, seq_len, rank, world_size);
        return UTG_ERR_INVALID;
    }
    if (kind == UTG_LOADER_SEQUENTIAL && utg_dataset_tokens(ds) == 0) {
        utg__msgf(msg, "loader: the dataset has no tokens");
        return UTG_ERR_INVALID;
    }
    if (kind == UTG_LOADER_SHUFFLED && rank >= ds->n_shards) {
        utg__msgf(msg, "loader: rank %d of %d owns no shard (the dataset has %d)", rank, world_size, ds->n_shards);
        return UTG_ERR_INVALID;
    }
    ld = (utg_loader *)utg__alloc(alloc, sizeof *ld);
    if (!ld) return UTG_ERR_NOMEM;
    memset(ld, 0, sizeof *ld);
    if (alloc) ld->alloc = *alloc;
    ld->ds = ds;
    ld->kind = kind;
    ld->seq_len = seq_len;
    ld->rank = rank;
    ld->world_size = world_size;
    ld->seed = seed;
    if (kind == UTG_LOADER_SHUFFLED) {
        ld->n_owned = (ds->n_shards - rank + world_size - 1) / world_size;
        r = utg__ld_setup_shuffled(ld, msg);
    }
    if (r != UTG_OK) { utg_loader_destroy(ld); return r; }
    utg_loader_reset(ld);
    *out = ld;
    return UTG_OK;
}

UTGDEF uint64_t utg_loader_epoch(const utg_loader *ld) {
    if (!ld) return 0;
    return ld->kind == UTG_LOADER_SHUFFLED ? ld->epoch : ld->wraps;
}

/* n tokens from stream offset `start` into inputs, and the same shifted by one into targets. */
static utg_result utg__ld_read_pair(utg_dataset *ds, uint64_t start, size_t n, int32_t *inputs, int32_t *targets,
                                    utg_msg *msg) {
    utg_result r = utg__ds_read_wrap(ds, start, n, inputs, msg);
    if (r != UTG_OK) return r;
    memcpy(targets, inputs + 1, (n - 1) * sizeof(int32_t));
    return utg__ds_read_wrap(ds, (start % ds->start[ds->n_shards]) + (uint64_t)n, 1, targets + n - 1, msg);
}

/* SEQUENTIAL: this rank's span of local + 1 tokens from the next chunk; inputs are its first local
   tokens, targets the last local. */
static utg_result utg__ld_next_sequential(utg_loader *ld, int32_t *inputs, int32_t *targets, size_t local,
                                          utg_msg *msg) {
    uint64_t total = utg_dataset_tokens(ld->ds), span = (uint64_t)local + 1, chunk, start;
    utg_result r;
    if (span > UINT64_MAX / (uint64_t)ld->world_size) {
        utg__msgf(msg, "loader: a chunk of %d spans of %llu tokens is too large", ld->world_size,
                  (unsigned long long)span);
        return UTG_ERR_INVALID;
    }
    chunk = span * (uint64_t)ld->world_size;
    start = (ld->pos + span * (uint64_t)ld->rank % total) % total;
    r = utg__ld_read_pair(ld->ds, start, local, inputs, targets, msg);
    if (r != UTG_OK) return r;
    /* advance only on success, by the whole chunk (every rank's span) */
    ld->wraps += (ld->pos + chunk % total) / total + chunk / total;
    ld->pos = (ld->pos + chunk % total) % total;
    return UTG_OK;
}

/* Pick an owned shard with probability proportional to its remaining windows; begins a new epoch
   when all are used up (create guaranteed that an epoch has at least one window). */
static int utg__ld_pick(utg_loader *ld) {
    uint64_t left = 0, x;
    int i;
    for (i = 0; i < ld->n_owned; i++) left += ld->n_windows[i] - ld->taken[i];
    if (left == 0) {
        utg__ld_begin_epoch(ld, ld->epoch + 1);
        for (i = 0; i < ld->n_owned; i++) left += ld->n_windows[i];
    }
    x = utg__ld_below(&ld->rng, left);
    for (i = 0; i < ld->n_owned - 1; i++) {
        uint64_t rem = ld->n_windows[i] - ld->taken[i];
        if (x < rem) break;
        x -= rem;
    }
    return i;
}

/* SHUFFLED: n_seqs windows of seq_len + 1 tokens from the owned shards, chosen with the loader's
   RNG; a failure restores the RNG, the epoch and the taken counts, so a retry draws the same. */
static utg_result utg__ld_next_shuffled(utg_loader *ld, int32_t *inputs, int32_t *targets, int n_seqs,
                                        utg_msg *msg) {
    size_t T = (size_t)ld->seq_len;
    utg__rng rng0 = ld->rng;
    uint64_t epoch0 = ld->epoch;
    utg_result r = UTG_OK;
    int b;
    memcpy(ld->taken_snap, ld->taken, sizeof(uint64_t) * (size_t)ld->n_owned);
    for (b = 0; b < n_seqs && r == UTG_OK; b++) {
        int i = utg__ld_pick(ld), shard = utg__ld_shard(ld, i);
        uint64_t w = ld->perm[ld->perm_off[i] + ld->taken[i]++];
        uint64_t start = ld->ds->start[shard] + ld->phase[i] + w * (uint64_t)T;
        r = utg__ld_read_pair(ld->ds, start, T, inputs + (size_t)b * T, targets + (size_t)b * T, msg);
    }
    if (r != UTG_OK) { /* undo: the loader does not move on failure */
        if (ld->epoch != epoch0) utg__ld_begin_epoch(ld, epoch0);
        memcpy(ld->taken, ld->taken_snap, sizeof(uint64_t) * (size_t)ld->n_owned);
        ld->rng = rng0;
    }
    return r;
}

UTGDEF utg_result utg_loader_next(utg_loader *ld, int32_t *inputs, int32_t *targets, int n_seqs, utg_msg *msg) {
    size_t local;
    if (!ld || !inputs || !targets || n_seqs <= 0) return UTG_ERR_INVALID;
    if (!utg__mul_ok((size_t)n_seqs, (size_t)ld->seq_len, &local) || local == SIZE_MAX) {
        utg__msgf(msg, "loader: %d sequences of %d tokens overflow", n_seqs, ld->seq_len);
        return UTG_ERR_INVALID;
    }
    if (ld->kind == UTG_LOADER_SEQUENTIAL) return utg__ld_next_sequential(ld, inputs, targets, local, msg);
    return utg__ld_next_shuffled(ld, inputs, targets, n_seqs, msg);
}

/* ---- checkpoint state ----
   Little-endian, version 1:
       0   "UTGL"
       4   u32 version (1)
       8   u32 kind               12  u32 seq_len
       16  u32 rank               20  u32 world_size
       24  u32 shard count S      28  u32 owned shard count O (0 for SEQUENTIAL)
       32  u64 seed               40  u64 dataset tokens
       48  u64 SEQUENTIAL: stream offset of the next chunk; SHUFFLED: epoch
       56  u64 SEQUENTIAL: wraps so far; SHUFFLED: 0
       64  u64 tokens of each shard [S]
       then, SHUFFLED only: u64 choice RNG state [4], u64 windows taken this epoch per owned shard [O]
       end u64 FNV-1a 64 of every byte before it */
#define UTG__LD_STATE_VERSION 1u
#define UTG__LD_STATE_HEAD 64u

/* Little-endian u64 of the loader-state record. */
static void utg__ld_wr_u64le(uint8_t *p, uint64_t v) {
    utg__wr_u32le(p, (uint32_t)v);
    utg__wr_u32le(p + 4, (uint32_t)(v >> 32));
}

/* FNV-1a 64 of n bytes: the loader-state record's checksum. */
static uint64_t utg__ld_fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* In 64 bits so that a hostile record's counts cannot wrap on 32-bit hosts. */
static uint64_t utg__ld_state_bytes(int kind, uint64_t n_shards, uint64_t n_owned) {
    return UTG__LD_STATE_HEAD + 8 * n_shards + (kind == (int)UTG_LOADER_SHUFFLED ? 32 + 8 * n_owned : 0) + 8;
}

UTGDEF size_t utg_loader_state_size(const utg_loader *ld) {
    return ld ? (size_t)utg__ld_state_bytes((int)ld->kind, (uint64_t)ld->ds->n_shards, (uint64_t)ld->n_owned) : 0;
}

UTGDEF utg_result utg_loader_save(const utg_loader *ld, void *buf, size_t buf_size) {
    uint8_t *p = (uint8_t *)buf, *q;
    size_t size = utg_loader_state_size(ld);
    int i;
    if (!ld || !buf || buf_size < size) return UTG_ERR_INVALID;
    memcpy(p, "UTGL", 4);
    utg__wr_u32le(p + 4, UTG__LD_STATE_VERSION);
    utg__wr_u32le(p + 8, (uint32_t)ld->kind);
    utg__wr_u32le(p + 12, (uint32_t)ld->seq_len);
    utg__wr_u32le(p + 16, (uint32_t)ld->rank);
    utg__wr_u32le(p + 20, (uint32_t)ld->world_size);
    utg__wr_u32le(p + 24, (uint32_t)ld->ds->n_shards);
    utg__wr_u32le(p + 28, (uint32_t)ld->n_owned);
    utg__ld_wr_u64le(p + 32, ld->seed);
    utg__ld_wr_u64le(p + 40, utg_dataset_tokens(ld->ds));
    utg__ld_wr_u64le(p + 48, ld->kind == UTG_LOADER_SHUFFLED ? ld->epoch : ld->pos);
    utg__ld_wr_u64le(p + 56, ld->kind == UTG_LOADER_SHUFFLED ? 0 : ld->wraps);
    q = p + UTG__LD_STATE_HEAD;
    for (i = 0; i < ld->ds->n_shards; i++, q += 8) utg__ld_wr_u64le(q, ld->ds->n_tokens[i]);
    if (ld->kind == UTG_LOADER_SHUFFLED) {
        for (i = 0; i < 4; i++, q += 8) utg__ld_wr_u64le(q, ld->rng.s[i]);
        for (i = 0; i < ld->n_owned; i++, q += 8) utg__ld_wr_u64le(q, ld->taken[i]);
    }
    utg__ld_wr_u64le(q, utg__ld_fnv1a(p, size - 8));
    return UTG_OK;
}

/* The record's framing: size, magic, version, length, checksum. */
static utg_result utg__ld_check_frame(const uint8_t *p, size_t size, utg_msg *msg) {
    uint32_t version, kind;
    if (size < UTG__LD_STATE_HEAD + 8 || memcmp(p, "UTGL", 4) != 0) {
        utg__msgf(msg, "loader state: not a loader state record (%zu bytes)", size);
        return UTG_ERR_FORMAT;
    }
    version = utg__rd_u32le(p + 4);
    if (version != UTG__LD_STATE_VERSION) {
        utg__msgf(msg, "loader state: version %u, this build reads version %u", version,
                  UTG__LD_STATE_VERSION);
        return UTG_ERR_FORMAT;
    }
    kind = utg__rd_u32le(p + 8);
    if (kind > (uint32_t)UTG_LOADER_SHUFFLED ||
        (uint64_t)size != utg__ld_state_bytes((int)kind, utg__rd_u32le(p + 24), utg__rd_u32le(p + 28))) {
        utg__msgf(msg, "loader state: %zu bytes do not match the record's own counts (truncated?)", size);
        return UTG_ERR_FORMAT;
    }
    if (utg__rd_u64le(p + size - 8) != utg__ld_fnv1a(p, size - 8)) {
        utg__msgf(msg, "loader state: checksum mismatch (corrupt record)");
        return UTG_ERR_FORMAT;
    }
    return UTG_OK;
}

/* The record must come from a loader set up like this one, on the same data. */
static utg_result utg__ld_check_setup(const utg_loader *ld, const uint8_t *p, utg_msg *msg) {
    uint32_t kind = utg__rd_u32le(p + 8), T = utg__rd_u32le(p + 12), rank = utg__rd_u32le(p + 16);
    uint32_t world = utg__rd_u32le(p + 20), n_shards = utg__rd_u32le(p + 24);
    uint64_t seed = utg__rd_u64le(p + 32), tokens = utg__rd_u64le(p + 40);
    int i;
    if (kind != (uint32_t)ld->kind || T != (uint32_t)ld->seq_len || rank != (uint32_t)ld->rank ||
        world != (uint32_t)ld->world_size) {
        utg__msgf(msg, "loader state is for kind %u, seq_len %u, rank %u of %u; this loader is kind %d, seq_len %d, rank %d of %d",
                  kind, T, rank, world, (int)ld->kind, ld->seq_len, ld->rank, ld->world_size);
        return UTG_ERR_MISMATCH;
    }
    if (ld->kind == UTG_LOADER_SHUFFLED && seed != ld->seed) {
        utg__msgf(msg, "loader state has seed %llu, this loader %llu", (unsigned long long)seed, (unsigned long long)ld->seed);
        return UTG_ERR_MISMATCH;
    }
    if (n_shards != (uint32_t)ld->ds->n_shards || tokens != utg_dataset_tokens(ld->ds)) {
        utg__msgf(msg, "loader state is for %u shards of %llu tokens; the dataset has %d shards of %llu", n_shards,
                  (unsigned long long)tokens, ld->ds->n_shards, (unsigned long long)utg_dataset_tokens(ld->ds));
        return UTG_ERR_MISMATCH;
    }
    for (i = 0; i < ld->ds->n_shards; i++) {
        uint64_t n = utg__rd_u64le(p + UTG__LD_STATE_HEAD + 8 * (size_t)i);
        if (n != ld->ds->n_tokens[i]) {
            utg__msgf(msg, "loader state: shard %d had %llu tokens, '%s' has %llu", i, (unsigned long long)n,
                      ld->ds->paths[i], (unsigned long long)ld->ds->n_tokens[i]);
            return UTG_ERR_MISMATCH;
        }
    }
    if (utg__rd_u32le(p + 28) != (uint32_t)ld->n_owned) { /* implied by the above; checked anyway */
        utg__msgf(msg, "loader state: %u owned shards, expected %d", utg__rd_u32le(p + 28), ld->n_owned);
        return UTG_ERR_FORMAT;
    }
    return UTG_OK;
}

/* SHUFFLED: RNG state not all zero and counts within the windows of the saved epoch. */
static utg_result utg__ld_check_shuffled(const utg_loader *ld, const uint8_t *p, utg_msg *msg) {
    const uint8_t *q = p + UTG__LD_STATE_HEAD + 8 * (size_t)ld->ds->n_shards;
    uint64_t epoch = utg__rd_u64le(p + 48), phase, windows, any = 0;
    int i;
    for (i = 0; i < 4; i++) any |= utg__rd_u64le(q + 8 * i);
    if (!any) { utg__msgf(msg, "loader state: the RNG state is all zero"); return UTG_ERR_FORMAT; }
    for (i = 0; i < ld->n_owned; i++) {
        uint64_t taken = utg__rd_u64le(q + 32 + 8 * (size_t)i);
        utg__ld_shard_epoch(ld, i, epoch, &phase, &windows, NULL);
        if (taken > windows) {
            utg__msgf(msg, "loader state: %llu windows taken from shard %d, which has %llu in epoch %llu",
                      (unsigned long long)taken, utg__ld_shard(ld, i), (unsigned long long)windows,
                      (unsigned long long)epoch);
            return UTG_ERR_FORMAT;
        }
    }
    return UTG_OK;
}

UTGDEF utg_result utg_loader_restore(utg_loader *ld, const void *buf, size_t size, utg_msg *msg) {
    const uint8_t *p = (const uint8_t *)buf, *q;
    utg_result r;
    int i;
    if (!ld || !buf) return UTG_ERR_INVALID;
    if ((r = utg__ld_check_frame(p, size, msg)) != UTG_OK) return r;
    if ((r = utg__ld_check_setup(ld, p, msg)) != UTG_OK) return r;
    if (ld->kind == UTG_LOADER_SEQUENTIAL) {
        uint64_t pos = utg__rd_u64le(p + 48);
        if (pos >= utg_dataset_tokens(ld->ds)) {
            utg__msgf(msg, "loader state: stream offset %llu is past the dataset", (unsigned long long)pos);
            return UTG_ERR_FORMAT;
        }
        ld->pos = pos;
        ld->wraps = utg__rd_u64le(p + 56);
        return UTG_OK;
    }
    if ((r = utg__ld_check_shuffled(ld, p, msg)) != UTG_OK) return r;
    /* valid: nothing below can fail */
    q = p + UTG__LD_STATE_HEAD + 8 * (size_t)ld->ds->n_shards;
    utg__ld_begin_epoch(ld, utg__rd_u64le(p + 48));
    for (i = 0; i < 4; i++) ld->rng.s[i] = utg__rd_u64le(q + 8 * i);
    for (i = 0; i < ld->n_owned; i++) ld->taken[i] = utg__rd_u64le(q + 32 + 8 * (size_t)i);
    return UTG_OK;
}

#endif /* UTG_NO_STDIO */

/* ------------------------------------------------------------------------------------------------
// >>impl_checkpoint
   The checkpoint is a sequence of tagged sections (see >>checkpoint for the byte layout) written
   from host copies of backend memory: CONF (the resolved config as text, compared knob by knob on
   load), STAT (step, time, tokens, optimizer counters, plan phase), PARM and OPT0..OPT3 (the
   parameter and optimizer arenas), LOAD (the loader's own record). utg_checkpoint_load parses and
   checks every section against the running model before it uploads anything.
   ------------------------------------------------------------------------------------------------ */

/* loaders read files: without stdio there are none, and checkpoints hold no loader state */
#ifndef UTG_NO_STDIO
static size_t utg__ld_size(const utg_loader *ld) { return utg_loader_state_size(ld); }
static utg_result utg__ld_save(const utg_loader *ld, void *p, size_t n) { return utg_loader_save(ld, p, n); }
static utg_result utg__ld_restore(utg_loader *ld, const void *p, size_t n, utg_msg *msg) { return utg_loader_restore(ld, p, n, msg); }
#else
static size_t utg__ld_size(const utg_loader *ld) { (void)ld; return 0; }
static utg_result utg__ld_save(const utg_loader *ld, void *p, size_t n) { (void)ld; (void)p; (void)n; return UTG_ERR_UNSUPPORTED; }
static utg_result utg__ld_restore(utg_loader *ld, const void *p, size_t n, utg_msg *msg) {
    (void)ld; (void)p; (void)n; (void)msg;
    return UTG_ERR_UNSUPPORTED;
}
#endif

UTGDEF uint32_t utg_crc32(uint32_t crc, const void *data, size_t n) {
    uint32_t table[256], c;
    const uint8_t *p = (const uint8_t *)data;
    int i, k;
    for (i = 0; i < 256; i++) {
        c = (uint32_t)i;
        for (k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    crc = ~crc;
    while (n--) crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}


/* The header: "UTGCKPT1", u32 version, u32 section count, u64 file size. */
#define UTG__CKPT_HDR 24
/* The STAT payload: seven little-endian u64, at byte 8i: 0 step, 1 train_ms (the bits of the fp64),
   2 tokens_seen, 3 Adam steps, 4 SWA samples, 5 arena floats (checked against the model), 6 the
   depth-plan phase. A version-1 STAT is the first six (48 bytes). */
#define UTG__CKPT_STAT 56

/* Little-endian u64 of the checkpoint header and section headers. */
static void utg__wr_u64le(uint8_t *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Host copy of the config text: "KEY=VALUE\n" for every knob. Returns the length; buf may be NULL. */
static size_t utg__ckpt_conf(const utg_config *c, char *buf) {
    size_t len = 0;
    int i;
    for (i = 0; i < utg_config_knob_count(); i++) {
        char v[1024];
        const char *name = utg_config_knob(i)->env_name;
        size_t a = strlen(name), b;
        utg_config_format(c, i, v, sizeof v);
        b = strlen(v);
        if (buf) {
            memcpy(buf + len, name, a);
            buf[len + a] = '=';
            memcpy(buf + len + a + 1, v, b);
            buf[len + a + 1 + b] = '\n';
        }
        len += a + b + 2;
    }
    return len;
}

UTGDEF utg_result utg_checkpoint_save(utg_model *m, utg_optim *o, const utg_loader *ld, const utg_train_state *ts,
                                      void **out, size_t *out_size) {
    size_t arena_bytes, conf_len, load_len = 0, total = UTG__CKPT_HDR, pos, sizes[8];
    uint32_t tags[8], n_sec = 0, s;
    uint8_t *b;
    int64_t adam_steps, swa_count;
    int i;
    if (!m || !o || !ts || !out || !out_size) return UTG_ERR_INVALID;
    *out = NULL;
    *out_size = 0;
    if (!utg__mul_ok(m->arena_floats, sizeof(float), &arena_bytes)) return UTG_ERR_NOMEM;
    conf_len = utg__ckpt_conf(&m->cfg, NULL);
    if (ld) load_len = utg__ld_size(ld);
#define UTG__SEC(tag, size) (tags[n_sec] = (tag), sizes[n_sec] = (size), n_sec++)
    UTG__SEC(0x464E4F43u, conf_len);            /* "CONF" */
    UTG__SEC(0x54415453u, (size_t)UTG__CKPT_STAT); /* "STAT" */
    UTG__SEC(0x4D524150u, arena_bytes);          /* "PARM" */
    for (i = 0; i < UTG_OPTIM_ARENAS; i++)
        if (o->arena[i]) UTG__SEC(0x3054504Fu + ((uint32_t)i << 24), arena_bytes); /* "OPT0".."OPT3" */
    if (ld) UTG__SEC(0x44414F4Cu, load_len);     /* "LOAD" */
#undef UTG__SEC
    for (s = 0; s < n_sec; s++) {
        size_t padded = (sizes[s] + 7) & ~(size_t)7;
        if (padded < sizes[s] || !utg__add_ok(total, 16 + padded, &total)) return UTG_ERR_NOMEM;
    }
    if (!utg__add_ok(total, 8, &total)) return UTG_ERR_NOMEM;
    b = (uint8_t *)utg__alloc(&m->alloc, total);
    if (!b) { utg__msgf(&m->msg, "out of memory for a %zu-byte checkpoint", total); return UTG_ERR_NOMEM; }
    memset(b, 0, total);
    memcpy(b, "UTGCKPT1", 8);
    utg__wr_u32le(b + 8, UTG_CHECKPOINT_VERSION);
    utg__wr_u32le(b + 12, n_sec);
    utg__wr_u64le(b + 16, (uint64_t)total);
    utg_optim_get_counters(o, &adam_steps, &swa_count);
    pos = UTG__CKPT_HDR;
    for (s = 0; s < n_sec; s++) {
        uint8_t *p = b + pos + 16;
        utg__wr_u32le(b + pos, tags[s]);
        utg__wr_u64le(b + pos + 8, (uint64_t)sizes[s]);
        switch (tags[s]) {
        case 0x464E4F43u: utg__ckpt_conf(&m->cfg, (char *)p); break;
        case 0x54415453u: {
            uint64_t d;
            utg__wr_u64le(p, (uint64_t)ts->step);
            memcpy(&d, &ts->train_ms, 8);
            utg__wr_u64le(p + 8, d);
            utg__wr_u64le(p + 16, (uint64_t)ts->tokens_seen);
            utg__wr_u64le(p + 24, (uint64_t)adam_steps);
            utg__wr_u64le(p + 32, (uint64_t)swa_count);
            utg__wr_u64le(p + 40, (uint64_t)m->arena_floats);
            utg__wr_u64le(p + 48, (uint64_t)m->phase);
            break;
        }
        case 0x4D524150u: m->be->download(m->be, p, m->params, arena_bytes); break;
        case 0x44414F4Cu:
            if (utg__ld_save(ld, p, load_len) != UTG_OK) {
                utg__free(&m->alloc, b);
                utg__msgf(&m->msg, "the loader state could not be saved");
                return UTG_ERR_INVALID;
            }
            break;
        default: m->be->download(m->be, p, o->arena[(int)(tags[s] >> 24) - '0'], arena_bytes); break;
        }
        pos += 16 + ((sizes[s] + 7) & ~(size_t)7);
    }
    utg__wr_u32le(b + pos, utg_crc32(0, b, pos));
    *out = b;
    *out_size = total;
    return UTG_OK;
}

/* the value of KEY in a CONF section, copied into v; 0 if absent */
static int utg__ckpt_conf_get(const uint8_t *conf, size_t n, const char *key, char *v, size_t cap) {
    size_t kl = strlen(key), i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && conf[e] != '\n') e++;
        if (e - i > kl && conf[i + kl] == '=' && memcmp(conf + i, key, kl) == 0) {
            size_t vl = e - i - kl - 1;
            if (vl >= cap) vl = cap - 1;
            memcpy(v, conf + i + kl + 1, vl);
            v[vl] = 0;
            return 1;
        }
        i = e + 1;
    }
    return 0;
}

/* Checkpoints written before REAL knobs were printed exactly hold them with 9 significant digits
   (%.9g): such a value matches when the running value prints the same way. */
static int utg__ckpt_real_9g(const utg_config *cfg, int k, const char *have) {
    double v;
    char old[64];
    if (utg__knobs[k].info.kind != UTG_KNOB_REAL) return 0;
    memcpy(&v, (const char *)cfg + utg__knobs[k].offset, sizeof v);
    snprintf(old, sizeof old, "%.9g", v == UTG_OFF ? 0.0 : v);
    return strcmp(have, old) == 0;
}

/* Every float of a checkpoint arena's tensors is finite (a diverged state is refused, not resumed). */
static utg_result utg__ckpt_check_finite(utg_model *m, const uint8_t *arena, const char *what) {
    int i;
    size_t e;
    for (i = 0; i < m->n_tensors; i++) {
        const utg_tensor_info *t = &m->tensors[i];
        for (e = 0; e < t->numel; e++) {
            float v;
            memcpy(&v, arena + 4 * (t->offset + e), 4);
            if (!isfinite(v)) {
                utg__msgf(&m->msg,
                          "checkpoint %s %s[%zu] is not finite (%g): the state it holds had diverged", what,
                          t->name, e, (double)v);
                return UTG_ERR_FORMAT;
            }
        }
    }
    return UTG_OK;
}

UTGDEF utg_result utg_checkpoint_load(utg_model *m, utg_optim *o, utg_loader *ld, utg_train_state *ts,
                                      const void *bytes, size_t size) {
    const uint8_t *b = (const uint8_t *)bytes, *sec[8] = {0}, *conf = NULL, *stat = NULL, *parm = NULL, *load = NULL;
    size_t arena_bytes, pos = UTG__CKPT_HDR, conf_len = 0, load_len = 0;
    uint32_t n_sec, s, version;
    uint64_t total, u, arena_len = (uint64_t)-1, stat_len;
    int64_t phase;
    int i, k;
    utg_result r;
    if (!m || !o || !ts || (!bytes && size)) return UTG_ERR_INVALID;
    arena_bytes = m->arena_floats * sizeof(float);
#define UTG__BAD(...) do { utg__msgf(&m->msg, __VA_ARGS__); return UTG_ERR_FORMAT; } while (0)
    if (size < UTG__CKPT_HDR + 8 || memcmp(b, "UTGCKPT1", 8) != 0) UTG__BAD("not a utgolf checkpoint (bad magic or too short)");
    version = utg__rd_u32le(b + 8);
    if (version < 1 || version > UTG_CHECKPOINT_VERSION) UTG__BAD("checkpoint version %u is not 1..%u", version, UTG_CHECKPOINT_VERSION);
    stat_len = version == 1 ? 48 : UTG__CKPT_STAT;
    n_sec = utg__rd_u32le(b + 12);
    total = utg__rd_u64le(b + 16);
    if (total != (uint64_t)size) UTG__BAD("checkpoint says %llu bytes but has %zu (truncated?)", (unsigned long long)total, size);
    if (utg__rd_u32le(b + size - 8) != utg_crc32(0, b, size - 8) || utg__rd_u32le(b + size - 4) != 0)
        UTG__BAD("checkpoint CRC mismatch: the file is corrupt");
    if (n_sec > 8) UTG__BAD("checkpoint has %u sections (at most 8)", n_sec);
    for (s = 0; s < n_sec; s++) {
        uint32_t tag;
        uint64_t len, padded;
        if (size - 8 - pos < 16) UTG__BAD("checkpoint section %u header runs past the end", s);
        tag = utg__rd_u32le(b + pos);
        len = utg__rd_u64le(b + pos + 8);
        padded = (len + 7) & ~(uint64_t)7;
        if (len > (uint64_t)(size - 8 - pos - 16) || padded > (uint64_t)(size - 8 - pos - 16))
            UTG__BAD("checkpoint section %u (%llu bytes) runs past the end", s, (unsigned long long)len);
        if (tag == 0x464E4F43u) { conf = b + pos + 16; conf_len = (size_t)len; }
        else if (tag == 0x54415453u) { if (len != stat_len) UTG__BAD("checkpoint STAT section has %llu bytes", (unsigned long long)len); stat = b + pos + 16; }
        else if (tag == 0x4D524150u || (tag & 0x00FFFFFFu) == 0x0054504Fu) {
            if (len != arena_len && arena_len != (uint64_t)-1) UTG__BAD("checkpoint arenas differ in size from each other");
            arena_len = len; /* checked against this model after the knobs, which name the difference */
            if (tag == 0x4D524150u) parm = b + pos + 16;
            else {
                int w = (int)(tag >> 24) - '0';
                if (w < 0 || w >= UTG_OPTIM_ARENAS) UTG__BAD("checkpoint has an unknown section");
                sec[w] = b + pos + 16;
            }
        } else if (tag == 0x44414F4Cu) { load = b + pos + 16; load_len = (size_t)len; }
        else UTG__BAD("checkpoint has an unknown section tag 0x%08x", tag);
        pos += 16 + (size_t)padded;
    }
    if (pos != size - 8) UTG__BAD("checkpoint has %zu stray bytes after its sections", size - 8 - pos);
    if (!conf || !stat || !parm) UTG__BAD("checkpoint lacks its CONF, STAT or PARM section");
#undef UTG__BAD
    /* the same model and optimizer setup */
    for (k = 0; k < UTG__N_KNOBS; k++) { /* the knobs that shape the arena or the optimizer state */
        char have[1024], want[1024];
        const char *name = utg__knobs[k].info.env_name;
        if (!(utg__knobs[k].info.flags & (UTG_KF_ARENA | UTG_KF_STATE))) continue;
        utg_config_format(&m->cfg, k, want, sizeof want);
        if (!utg__ckpt_conf_get(conf, conf_len, name, have, sizeof have)) {
            utg_config zero;
            memset(&zero, 0, sizeof zero);
            zero = utg_config_resolve(&zero);
            if (version > 1) { utg__msgf(&m->msg, "checkpoint config lacks %s", name); return UTG_ERR_FORMAT; }
            utg_config_format(&zero, k, have, sizeof have); /* older files: the knob did not exist yet */
        }
        if (strcmp(have, want) != 0 && !utg__ckpt_real_9g(&m->cfg, k, have)) {
            utg__msgf(&m->msg, "checkpoint was made with %s=%s, this run has %s=%s", name, have, name, want);
            return UTG_ERR_MISMATCH;
        }
    }
    if (arena_len != (uint64_t)arena_bytes) {
        utg__msgf(&m->msg, "checkpoint arenas hold %llu bytes, this model's %zu: another model", (unsigned long long)arena_len, arena_bytes);
        return UTG_ERR_MISMATCH;
    }
    u = utg__rd_u64le(stat + 40);
    if (u != (uint64_t)m->arena_floats) { utg__msgf(&m->msg, "checkpoint arena has %llu floats, this model %zu", (unsigned long long)u, m->arena_floats); return UTG_ERR_MISMATCH; }
    for (i = 0; i < UTG_OPTIM_ARENAS; i++)
        if (!o->arena[i] != !sec[i]) {
            utg__msgf(&m->msg, "checkpoint %s optimizer arena %d (EMA/SWA settings differ)", sec[i] ? "has" : "lacks", i);
            return UTG_ERR_MISMATCH;
        }
    if (ld && !load) { utg__msgf(&m->msg, "checkpoint holds no loader state"); return UTG_ERR_MISMATCH; }
    if ((int64_t)utg__rd_u64le(stat) < 0 || (int64_t)utg__rd_u64le(stat + 24) < 0 || (int64_t)utg__rd_u64le(stat + 32) < 0) {
        utg__msgf(&m->msg, "checkpoint counters are negative");
        return UTG_ERR_FORMAT;
    }
    u = utg__rd_u64le(stat + 8);
    {
        double tm;
        memcpy(&tm, &u, 8);
        if (!(tm >= 0.0) || !isfinite(tm)) { utg__msgf(&m->msg, "checkpoint training time is not a finite time"); return UTG_ERR_FORMAT; }
    }
    phase = stat_len > 48 ? (int64_t)utg__rd_u64le(stat + 48) : 0;
    if (phase < 0 || phase >= m->n_plans) {
        utg__msgf(&m->msg, "checkpoint depth-plan phase %lld is outside this model's 0..%d", (long long)phase, m->n_plans - 1);
        return UTG_ERR_MISMATCH;
    }
    if ((r = utg__ckpt_check_finite(m, parm, "parameter")) != UTG_OK) return r;
    for (i = 0; i < UTG_OPTIM_ARENAS; i++)
        if (sec[i] && (r = utg__ckpt_check_finite(m, sec[i], "optimizer state")) != UTG_OK) return r;
    /* the loader checks its own state and changes nothing on failure: it goes first */
    if (ld) {
        utg_msg lm;
        memset(&lm, 0, sizeof lm);
        if ((r = utg__ld_restore(ld, load, load_len, &lm)) != UTG_OK) {
            utg__msgf(&m->msg, "checkpoint loader state: %s", lm.text);
            return r;
        }
    }
    m->be->upload(m->be, m->params, parm, arena_bytes);
    for (i = 0; i < UTG_OPTIM_ARENAS; i++)
        if (sec[i]) m->be->upload(m->be, o->arena[i], sec[i], arena_bytes);
    ts->step = (int64_t)utg__rd_u64le(stat);
    u = utg__rd_u64le(stat + 8);
    memcpy(&ts->train_ms, &u, 8);
    ts->tokens_seen = (int64_t)utg__rd_u64le(stat + 16);
    utg_optim_set_counters(o, (int64_t)utg__rd_u64le(stat + 24), (int64_t)utg__rd_u64le(stat + 32));
    m->be->fill(m->be, m->grads, UTG_DT_F32, 0.0f, m->arena_floats);
    utg_model_set_phase(m, (int)phase, 0);
    return UTG_OK;
}

/* ------------------------------------------------------------------------------------------------
// >>impl_tokenizer
   A strict protobuf reader for sentencepiece_model.proto, two passes over the bytes: the first
   validates everything and counts pieces and text, the second (which cannot fail) fills the
   tables. Field numbers used (SentencePiece 0.1.97):
       ModelProto      1 pieces (SentencePiece, repeated), 2 trainer_spec, 3 normalizer_spec,
                       4 self_test_data, 5 denormalizer_spec (messages; only 1 and 2 are read)
       SentencePiece   1 piece (string), 2 score (float), 3 type (enum, default NORMAL)
       TrainerSpec     3 model_type, 4 vocab_size, 35 byte_fallback, 40..43 unk/bos/eos/pad_id,
                       45..48 unk/bos/eos/pad_piece
   Offsets in messages count from the start of the file.
   ------------------------------------------------------------------------------------------------ */

#define UTG__SPM_SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's whitespace mark */
#define UTG__LN2 0.69314718055994530942 /* == math.log(2.0) as a double */

/* A protobuf cursor: the message being read is b[pos, end). The utg__pb_* readers return 1 on
   success, 0 after writing a message that names the byte offset. */
typedef struct utg__pb {
    const uint8_t *b; /* the whole file */
    size_t pos, end;  /* the message being read is b[pos, end) */
    utg_msg *msg;
} utg__pb;

/* A base-128 varint of at most 10 bytes, refused when cut off or longer. */
static int utg__pb_varint(utg__pb *c, uint64_t *out) {
    size_t at = c->pos;
    uint64_t v = 0;
    int i;
    for (i = 0; i < 10; i++) {
        uint8_t byte;
        if (c->pos >= c->end) {
            utg__msgf(c->msg, "spm model: byte %zu: varint cut off by the end of its message at byte %zu", at,
                      c->end);
            return 0;
        }
        byte = c->b[c->pos++];
        if (i == 9 && byte > 1) break; /* a 10th byte may only carry bit 63 */
        v |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            *out = v;
            return 1;
        }
    }
    utg__msgf(c->msg, "spm model: byte %zu: varint longer than 10 bytes or above 2^64", at);
    return 0;
}

/* A field key: field number (1..2^29-1) and wire type (0 varint, 1 fixed64, 2 length-delimited,
   5 fixed32). Groups (3, 4) are refused: sentencepiece_model.proto has none, so one means the
   bytes are not a model. */
static int utg__pb_key(utg__pb *c, uint32_t *field, int *wire) {
    size_t at = c->pos;
    uint64_t k;
    if (!utg__pb_varint(c, &k)) return 0;
    *wire = (int)(k & 7);
    if ((k >> 3) == 0 || (k >> 3) > 0x1fffffffu) {
        utg__msgf(c->msg, "spm model: byte %zu: field number %llu is outside 1..2^29-1", at,
                  (unsigned long long)(k >> 3));
        return 0;
    }
    *field = (uint32_t)(k >> 3);
    if (*wire == 3 || *wire == 4) {
        utg__msgf(c->msg,
                  "spm model: byte %zu: field %u is a group (wire type %d), which this reader refuses", at,
                  *field, *wire);
        return 0;
    }
    if (*wire > 5) {
        utg__msgf(c->msg, "spm model: byte %zu: field %u has wire type %d, which does not exist", at, *field,
                  *wire);
        return 0;
    }
    return 1;
}

/* A length-delimited field: *sub covers its bytes and c moves past them. */
static int utg__pb_sub(utg__pb *c, utg__pb *sub) {
    size_t at = c->pos;
    uint64_t n;
    if (!utg__pb_varint(c, &n)) return 0;
    if (n > (uint64_t)(c->end - c->pos)) {
        utg__msgf(c->msg, "spm model: byte %zu: length %llu runs past the end of its message at byte %zu", at,
                  (unsigned long long)n, c->end);
        return 0;
    }
    *sub = *c;
    sub->end = c->pos + (size_t)n;
    c->pos += (size_t)n;
    return 1;
}

/* A little-endian fixed32 or fixed64 (n_bytes 4 or 8). */
static int utg__pb_fixed(utg__pb *c, size_t n_bytes, uint64_t *out) {
    size_t i;
    uint64_t v = 0;
    if (c->end - c->pos < n_bytes) {
        utg__msgf(c->msg,
                  "spm model: byte %zu: %zu-byte fixed field cut off by the end of its message at byte %zu",
                  c->pos, n_bytes, c->end);
        return 0;
    }
    for (i = 0; i < n_bytes; i++) v |= (uint64_t)c->b[c->pos + i] << (8 * i);
    c->pos += n_bytes;
    *out = v;
    return 1;
}

/* Skips the value of a field this reader does not use, by its wire type. */
static int utg__pb_skip(utg__pb *c, int wire) {
    uint64_t v;
    utg__pb sub;
    switch (wire) {
    case 0: return utg__pb_varint(c, &v);
    case 1: return utg__pb_fixed(c, 8, &v);
    case 2: return utg__pb_sub(c, &sub);
    default: return utg__pb_fixed(c, 4, &v); /* 5; utg__pb_key refused the rest */
    }
}

/* Whether a known field came with the wire type the schema gives it; a message if not. */
static int utg__pb_want(utg__pb *c, size_t at, const char *name, int wire, int want) {
    if (wire == want) return 1;
    utg__msgf(c->msg, "spm model: byte %zu: %s has wire type %d, expected %d", at, name, wire, want);
    return 0;
}

/* An int32 (or enum) varint: negative values are sign-extended to 10 bytes; anything else outside
   the int32 range is refused rather than truncated. */
static int utg__pb_int32(utg__pb *c, size_t at, const char *name, int wire, int32_t *out) {
    uint64_t v;
    if (!utg__pb_want(c, at, name, wire, 0) || !utg__pb_varint(c, &v)) return 0;
    if (v <= 0x7fffffffu) {
        *out = (int32_t)v;
    } else if (v >= 0xffffffff80000000ull) {
        *out = (int32_t)(-(int64_t)(~v) - 1);
    } else {
        utg__msgf(c->msg, "spm model: byte %zu: %s = %llu is not an int32", at, name, (unsigned long long)v);
        return 0;
    }
    return 1;
}

/* Index of the first byte that breaks UTF-8 (overlongs, surrogates and values past U+10FFFF
   included), or n if s[0, n) is valid. */
static size_t utg__utf8_bad_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len, k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) len = 2;
        else if (c >= 0xe0 && c <= 0xef) len = 3;
        else if (c >= 0xf0 && c <= 0xf4) len = 4;
        else return i;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
        if (n - i < len) return i;
        for (k = 1; k < len; k++) {
            uint8_t t = s[i + k];
            if (t < (k == 1 ? lo : 0x80) || t > (k == 1 ? hi : 0xbf)) return i;
        }
        i += len;
    }
    return n;
}

/* The byte of a byte piece, spelled exactly as SentencePiece's ByteToPiece ("<0x%02X>"), else -1. */
static int utg__spm_byte_value(const uint8_t *s, size_t n) {
    int v = 0, k;
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    for (k = 3; k < 5; k++) {
        int d = s[k] >= '0' && s[k] <= '9' ? s[k] - '0' : s[k] >= 'A' && s[k] <= 'F' ? s[k] - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* SentencePiece keeps two name spaces: CONTROL, UNKNOWN and BYTE pieces are "reserved". */
static int utg__spm_reserved(int type) {
    return type == UTG_PIECE_CONTROL || type == UTG_PIECE_UNKNOWN || type == UTG_PIECE_BYTE;
}

/* One SentencePiece piece as read: its text (a view into the file), score and type. */
typedef struct utg__spm_piece {
    const uint8_t *text;
    size_t text_len;
    float score;
    int32_t type;
} utg__spm_piece;

/* The per-piece rules SentencePiece's model loader enforces (a known type, non-empty text of valid
   UTF-8 without NUL, a BYTE piece spelled <0xNN>) plus the library's length cap, so that a model
   this reader accepts is one SentencePieceProcessor would load. at: the piece's byte offset;
   text_at: its text's, for the UTF-8 message. */
static int utg__spm_check_piece(utg_msg *msg, size_t index, size_t at, size_t text_at, const utg__spm_piece *p) {
    size_t bad;
    if (p->type < UTG_PIECE_NORMAL || p->type > UTG_PIECE_BYTE) {
        utg__msgf(msg, "spm model: piece %zu (byte %zu): type %d is not a SentencePiece type (1..6)", index, at, (int)p->type);
        return 0;
    }
    if (p->text_len == 0) {
        utg__msgf(msg, "spm model: piece %zu (byte %zu) is empty", index, at);
        return 0;
    }
    if (p->text_len > UTG_MAX_PIECE_BYTES) {
        utg__msgf(msg, "spm model: piece %zu (byte %zu) is %zu bytes long, more than %d", index, at, p->text_len,
                  UTG_MAX_PIECE_BYTES);
        return 0;
    }
    if (memchr(p->text, 0, p->text_len)) {
        utg__msgf(msg, "spm model: piece %zu (byte %zu) contains a NUL byte", index, at);
        return 0;
    }
    bad = utg__utf8_bad_at(p->text, p->text_len);
    if (bad < p->text_len) {
        utg__msgf(msg, "spm model: piece %zu (byte %zu) is not valid UTF-8 (at byte %zu)", index, at, text_at + bad);
        return 0;
    }
    if (p->type == UTG_PIECE_BYTE && utg__spm_byte_value(p->text, p->text_len) < 0) {
        utg__msgf(msg, "spm model: piece %zu (byte %zu) has type BYTE but is not spelled <0xNN>", index, at);
        return 0;
    }
    return 1;
}

/* One SentencePiece message; m covers exactly its bytes, `start` is where its field begins. */
static int utg__spm_read_piece(utg__pb *m, size_t index, size_t start, utg__spm_piece *p) {
    p->text = NULL;
    p->text_len = 0;
    p->score = 0.0f;
    p->type = UTG_PIECE_NORMAL;
    while (m->pos < m->end) {
        size_t at = m->pos;
        uint32_t field;
        int wire;
        utg__pb s;
        uint64_t bits;
        if (!utg__pb_key(m, &field, &wire)) return 0;
        if (field == 1) {
            if (!utg__pb_want(m, at, "piece text (SentencePiece field 1)", wire, 2) || !utg__pb_sub(m, &s))
                return 0;
            p->text = s.b + s.pos;
            p->text_len = s.end - s.pos;
        } else if (field == 2) {
            uint32_t u;
            if (!utg__pb_want(m, at, "piece score (SentencePiece field 2)", wire, 5) ||
                !utg__pb_fixed(m, 4, &bits))
                return 0;
            u = (uint32_t)bits;
            memcpy(&p->score, &u, sizeof p->score);
        } else if (field == 3) {
            if (!utg__pb_int32(m, at, "piece type (SentencePiece field 3)", wire, &p->type)) return 0;
        } else if (!utg__pb_skip(m, wire)) {
            return 0;
        }
    }
    return utg__spm_check_piece(m->msg, index, start, p->text ? (size_t)(p->text - m->b) : start, p);
}

/* What the first pass learns: the sizes pass 2 allocates (pieces, text bytes with NULs), the
   unknown piece's index, which of the 256 byte pieces exist (byte_fallback needs all of them), the
   trainer_spec fields kept, and the special piece names (views into the file). */
typedef struct utg__spm_scan {
    size_t n_pieces, text_bytes;
    int unk_index, n_byte_values;
    int has_byte_pieces;
    uint8_t byte_seen[256];
    int32_t model_type, byte_fallback;
    const uint8_t *name[4]; /* trainer_spec unk/bos/eos/pad_piece; NULL or empty: the default */
    size_t name_len[4];
} utg__spm_scan;

/* The fields of trainer_spec the tokenizer keeps (the special ids among them); the rest is skipped. */
static int utg__spm_read_trainer(utg__pb *t, utg__spm_scan *s) {
    static const char *const id_names[4] = {"trainer_spec.unk_id", "trainer_spec.bos_id", "trainer_spec.eos_id",
                                            "trainer_spec.pad_id"};
    while (t->pos < t->end) {
        size_t at = t->pos;
        uint32_t field;
        int wire;
        int32_t ignored;
        uint64_t v;
        utg__pb sub;
        if (!utg__pb_key(t, &field, &wire)) return 0;
        if (field == 3) {
            if (!utg__pb_int32(t, at, "trainer_spec.model_type", wire, &s->model_type)) return 0;
        } else if (field == 4) {
            /* vocab_size is what was asked of the trainer; the pieces are what it produced */
            if (!utg__pb_int32(t, at, "trainer_spec.vocab_size", wire, &ignored)) return 0;
        } else if (field == 35) {
            if (!utg__pb_want(t, at, "trainer_spec.byte_fallback", wire, 0) || !utg__pb_varint(t, &v)) return 0;
            s->byte_fallback = v != 0;
        } else if (field >= 40 && field <= 43) {
            /* checked for type only: SentencePieceProcessor resolves special ids by piece name */
            if (!utg__pb_int32(t, at, id_names[field - 40], wire, &ignored)) return 0;
        } else if (field >= 45 && field <= 48) {
            if (!utg__pb_want(t, at, "trainer_spec special piece name", wire, 2) || !utg__pb_sub(t, &sub)) return 0;
            s->name[field - 45] = sub.b + sub.pos;
            s->name_len[field - 45] = sub.end - sub.pos;
        } else if (!utg__pb_skip(t, wire)) {
            return 0;
        }
    }
    return 1;
}

/* Pass 1 over one `pieces` entry: reads and checks it, counting the pieces and their text bytes. */
static int utg__spm_scan_piece(utg__pb *c, size_t at, utg__spm_scan *s) {
    utg__spm_piece p;
    utg__pb sub;
    if (!utg__pb_sub(c, &sub)) return 0;
    if (s->n_pieces >= (size_t)UTG_MAX_TOKENIZER_PIECES) {
        utg__msgf(c->msg, "spm model: byte %zu: more than %d pieces", at, UTG_MAX_TOKENIZER_PIECES);
        return 0;
    }
    if (!utg__spm_read_piece(&sub, s->n_pieces, at, &p)) return 0;
    if (!utg__add_ok(s->text_bytes, p.text_len + 1, &s->text_bytes) || s->text_bytes > (size_t)UTG_MAX_TOKENIZER_TEXT) {
        utg__msgf(c->msg, "spm model: byte %zu: piece text exceeds %u bytes in total", at, (unsigned)UTG_MAX_TOKENIZER_TEXT);
        return 0;
    }
    if (p.type == UTG_PIECE_UNKNOWN) {
        if (s->unk_index >= 0) {
            utg__msgf(c->msg, "spm model: piece %zu (byte %zu) is a second unknown piece (the first is %d)", s->n_pieces, at,
                      s->unk_index);
            return 0;
        }
        s->unk_index = (int)s->n_pieces;
    }
    if (p.type == UTG_PIECE_BYTE) {
        int b = utg__spm_byte_value(p.text, p.text_len);
        s->has_byte_pieces = 1;
        if (!s->byte_seen[b]) s->n_byte_values++;
        s->byte_seen[b] = 1;
    }
    s->n_pieces++;
    return 1;
}

/* Pass 1: the wire format and every per-piece rule, then the rules that need the whole model. */
static int utg__spm_scan_model(const uint8_t *b, size_t size, utg__spm_scan *s, utg_msg *msg) {
    static const char *const names[6] = {"", "pieces (field 1)", "trainer_spec (field 2)", "normalizer_spec (field 3)",
                                         "self_test_data (field 4)", "denormalizer_spec (field 5)"};
    utg__pb c;
    c.b = b;
    c.pos = 0;
    c.end = size;
    c.msg = msg;
    memset(s, 0, sizeof *s);
    s->unk_index = -1;
    s->model_type = 1; /* proto default UNIGRAM */
    while (c.pos < c.end) {
        size_t at = c.pos;
        uint32_t field;
        int wire;
        utg__pb sub;
        if (!utg__pb_key(&c, &field, &wire)) return 0;
        if (field >= 1 && field <= 5) {
            if (!utg__pb_want(&c, at, names[field], wire, 2)) return 0;
            if (field == 1) {
                if (!utg__spm_scan_piece(&c, at, s)) return 0;
            } else {
                if (!utg__pb_sub(&c, &sub)) return 0;
                if (field == 2 && !utg__spm_read_trainer(&sub, s)) return 0; /* a repeat merges, as in protobuf */
            }
        } else if (!utg__pb_skip(&c, wire)) {
            return 0;
        }
    }
    if (s->unk_index < 0) {
        utg__msgf(msg, "spm model: no piece of type UNKNOWN (SentencePiece requires one)");
        return 0;
    }
    if (s->has_byte_pieces && !s->byte_fallback) {
        utg__msgf(msg, "spm model: byte pieces present but trainer_spec.byte_fallback is false");
        return 0;
    }
    if (s->byte_fallback && s->n_byte_values != 256) {
        utg__msgf(msg, "spm model: byte_fallback is set but only %d of the 256 byte pieces exist", s->n_byte_values);
        return 0;
    }
    return 1;
}

/* Store piece `id` and apply build_sentencepiece_luts to it. */
static void utg__tok_set_piece(utg_tokenizer *t, int id, const uint8_t *text, size_t len, float score,
                               int type, size_t *text_pos) {
    t->piece_offset[id] = (uint32_t)*text_pos;
    memcpy(t->piece_text + *text_pos, text, len);
    t->piece_text[*text_pos + len] = 0;
    *text_pos += len + 1;
    t->piece_score[id] = score;
    t->piece_type[id] = (uint8_t)type;
    if (type == UTG_PIECE_CONTROL || type == UTG_PIECE_UNKNOWN || type == UTG_PIECE_UNUSED)
        return; /* boundary, 0 bytes */
    t->is_boundary[id] = 0;
    if (type == UTG_PIECE_BYTE) {
        t->base_bytes[id] = 1;
        return;
    }
    if (len >= 3 && memcmp(text, UTG__SPM_SPACE, 3) == 0) { /* one ▁ = the space before the piece */
        t->has_leading_space[id] = 1;
        len -= 3;
    }
    t->base_bytes[id] = (uint16_t)len;
}

/* The tokenizer's tables: a uint16 byte-table entry per id ([table_size]), per piece its text
   offset and score, and the text itself; sizes overflow-checked. */
static utg_result utg__tok_alloc(utg_tokenizer *t, int n_pieces, int table_size, size_t text_bytes,
                                 const utg_allocator *alloc, utg_msg *msg) {
    size_t nt = (size_t)table_size, np = (size_t)n_pieces, base_size, offset_size, score_size;
    if (alloc) t->allocator = *alloc;
    t->n_pieces = n_pieces;
    t->table_size = table_size;
    if (!utg__mul_ok(nt, sizeof(uint16_t), &base_size) || !utg__mul_ok(np, sizeof(uint32_t), &offset_size) ||
        !utg__mul_ok(np, sizeof(float), &score_size)) {
        utg__msgf(msg, "tokenizer: table sizes overflow");
        return UTG_ERR_NOMEM;
    }
    t->is_boundary = (uint8_t *)utg__alloc(&t->allocator, nt);
    t->has_leading_space = (uint8_t *)utg__alloc(&t->allocator, nt);
    t->base_bytes = (uint16_t *)utg__alloc(&t->allocator, base_size);
    t->piece_text = (char *)utg__alloc(&t->allocator, text_bytes);
    t->piece_offset = (uint32_t *)utg__alloc(&t->allocator, offset_size);
    t->piece_score = (float *)utg__alloc(&t->allocator, score_size);
    t->piece_type = (uint8_t *)utg__alloc(&t->allocator, np);
    if (!t->is_boundary || !t->has_leading_space || !t->base_bytes || !t->piece_text || !t->piece_offset ||
        !t->piece_score || !t->piece_type) {
        utg__msgf(msg, "tokenizer: out of memory (%d pieces, table of %d)", n_pieces, table_size);
        return UTG_ERR_NOMEM;
    }
    memset(t->is_boundary, 1, nt); /* ids past the model: boundary, 0 bytes, no leading space */
    memset(t->has_leading_space, 0, nt);
    memset(t->base_bytes, 0, base_size);
    return UTG_OK;
}

/* Pass 2 over already validated bytes. */
static int utg__spm_fill(utg_tokenizer *t, const uint8_t *b, size_t size) {
    utg__pb c, sub;
    size_t text_pos = 0;
    int id = 0;
    c.b = b;
    c.pos = 0;
    c.end = size;
    c.msg = NULL;
    while (c.pos < c.end) {
        uint32_t field;
        int wire;
        utg__spm_piece p;
        if (!utg__pb_key(&c, &field, &wire)) return 0;
        if (field != 1) {
            if (!utg__pb_skip(&c, wire)) return 0;
            continue;
        }
        if (id >= t->n_pieces || !utg__pb_sub(&c, &sub) || !utg__spm_read_piece(&sub, (size_t)id, 0, &p))
            return 0;
        utg__tok_set_piece(t, id++, p.text, p.text_len, p.score, (int)p.type, &text_pos);
    }
    return id == t->n_pieces;
}

/* 32-bit FNV-1a of a NUL-terminated string, the seed mixed into the offset basis (the duplicate
   check seeds it with the name space, so a CONTROL and a NORMAL piece of one text hash apart). */
static uint32_t utg__fnv1a(const char *s, uint32_t seed) {
    uint32_t h = 2166136261u ^ seed;
    while (*s) h = (uint32_t)(((uint64_t)(h ^ (uint8_t)*s++) * 16777619u) & 0xffffffffu); /* no wrap: -fsanitize=integer */
    return h;
}

/* SentencePiece refuses a model in which two pieces of the same name space share a text. */
static utg_result utg__tok_check_unique(utg_tokenizer *t, utg_msg *msg) {
    size_t cap = 16, bytes, j;
    int32_t *slot;
    int id;
    while (cap < 2 * (size_t)t->n_pieces) cap <<= 1;
    if (!utg__mul_ok(cap, sizeof *slot, &bytes) || !(slot = (int32_t *)utg__alloc(&t->allocator, bytes))) {
        utg__msgf(msg, "tokenizer: out of memory checking %d pieces for duplicates", t->n_pieces);
        return UTG_ERR_NOMEM;
    }
    for (j = 0; j < cap; j++) slot[j] = -1;
    for (id = 0; id < t->n_pieces; id++) {
        const char *text = t->piece_text + t->piece_offset[id];
        int cls = utg__spm_reserved(t->piece_type[id]);
        for (j = utg__fnv1a(text, (uint32_t)cls) & (cap - 1); slot[j] >= 0; j = (j + 1) & (cap - 1)) {
            int other = slot[j];
            if (utg__spm_reserved(t->piece_type[other]) == cls &&
                strcmp(t->piece_text + t->piece_offset[other], text) == 0) {
                utg__msgf(msg, "spm model: pieces %d and %d have the same text", other, id);
                utg__free(&t->allocator, slot);
                return UTG_ERR_FORMAT;
            }
        }
        slot[j] = id;
    }
    utg__free(&t->allocator, slot);
    return UTG_OK;
}

/* SentencePiece's ModelInterface::PieceToId: a reserved piece of that text, else a normal one,
   else the unknown piece. */
static int utg__tok_piece_to_id(const utg_tokenizer *t, const uint8_t *s, size_t len, int unk_index) {
    int id, normal = -1;
    for (id = 0; id < t->n_pieces; id++) {
        const char *p = t->piece_text + t->piece_offset[id];
        if (strncmp(p, (const char *)s, len) != 0 || p[len] != 0) continue;
        if (utg__spm_reserved(t->piece_type[id])) return id;
        if (normal < 0) normal = id;
    }
    return normal >= 0 ? normal : unk_index;
}

/* sp.unk_id() etc.: PieceToId(name), kept only if that piece has the expected type. */
static int utg__tok_special(const utg_tokenizer *t, const utg__spm_scan *s, int which,
                            const char *default_name, int type) {
    const uint8_t *name = s->name[which];
    size_t len = s->name_len[which];
    int id;
    if (!name || len == 0) {
        name = (const uint8_t *)default_name;
        len = strlen(default_name);
    }
    /* no piece contains NUL: such a name is not found, and PieceToId gives the unknown piece */
    id = memchr(name, 0, len) ? s->unk_index : utg__tok_piece_to_id(t, name, len, s->unk_index);
    return t->piece_type[id] == type ? id : -1;
}

UTGDEF void utg_tokenizer_free(utg_tokenizer *tok) {
    utg_allocator a;
    if (!tok) return;
    a = tok->allocator;
    {
        void *owned[] = {tok->is_boundary, tok->has_leading_space, tok->base_bytes, tok->piece_text,
                         tok->piece_offset, tok->piece_score, tok->piece_type};
        utg__free_all(&a, owned, 7);
    }
    memset(tok, 0, sizeof *tok);
}

/* A byte table may cover at most UTG_MAX_TOKENIZER_PIECES ids. */
static utg_result utg__tok_check_table_size(int table_size, utg_msg *msg) {
    if (table_size < 0 || table_size > UTG_MAX_TOKENIZER_PIECES) {
        utg__msgf(msg, "tokenizer: table size %d is outside 0..%d", table_size, UTG_MAX_TOKENIZER_PIECES);
        return UTG_ERR_INVALID;
    }
    return UTG_OK;
}

UTGDEF utg_result utg_tokenizer_load_spm(utg_tokenizer *tok, const void *model_bytes, size_t size, int table_size,
                                         const utg_allocator *alloc, utg_msg *msg) {
    const uint8_t *b = (const uint8_t *)model_bytes;
    utg__spm_scan s;
    utg_result r;
    if (!tok) return UTG_ERR_INVALID;
    memset(tok, 0, sizeof *tok);
    if (!model_bytes && size) {
        utg__msgf(msg, "tokenizer: NULL model bytes");
        return UTG_ERR_INVALID;
    }
    if ((r = utg__tok_check_table_size(table_size, msg)) != UTG_OK) return r;
    if (!utg__spm_scan_model(b, size, &s, msg)) return UTG_ERR_FORMAT;
    r = utg__tok_alloc(tok, (int)s.n_pieces, (int)s.n_pieces > table_size ? (int)s.n_pieces : table_size, s.text_bytes,
                       alloc, msg);
    if (r == UTG_OK && !utg__spm_fill(tok, b, size)) {
        utg__msgf(msg, "spm model: second pass disagrees with the first (internal error)");
        r = UTG_ERR_FORMAT;
    }
    if (r == UTG_OK) r = utg__tok_check_unique(tok, msg);
    if (r != UTG_OK) {
        utg_tokenizer_free(tok);
        return r;
    }
    tok->kind = UTG_TOKENIZER_SPM;
    tok->model_type = s.model_type;
    tok->byte_fallback = s.byte_fallback;
    tok->unk_id = utg__tok_special(tok, &s, 0, "<unk>", UTG_PIECE_UNKNOWN);
    tok->bos_id = utg__tok_special(tok, &s, 1, "<s>", UTG_PIECE_CONTROL);
    tok->eos_id = utg__tok_special(tok, &s, 2, "</s>", UTG_PIECE_CONTROL);
    tok->pad_id = utg__tok_special(tok, &s, 3, "<pad>", UTG_PIECE_CONTROL);
    tok->space_piece_id = utg__tok_piece_to_id(tok, (const uint8_t *)UTG__SPM_SPACE, 3, s.unk_index);
    if (tok->space_piece_id == s.unk_index) tok->space_piece_id = -1;
    return UTG_OK;
}

UTGDEF utg_result utg_tokenizer_byte260(utg_tokenizer *tok, int table_size, const utg_allocator *alloc, utg_msg *msg) {
    static const char *const special[4] = {"<pad>", "<s>", "</s>", "<unk>"};
    static const int special_type[4] = {UTG_PIECE_CONTROL, UTG_PIECE_CONTROL, UTG_PIECE_CONTROL, UTG_PIECE_UNKNOWN};
    static const char hex[] = "0123456789ABCDEF";
    size_t text_pos = 0;
    utg_result r;
    int i;
    if (!tok) return UTG_ERR_INVALID;
    memset(tok, 0, sizeof *tok);
    if ((r = utg__tok_check_table_size(table_size, msg)) != UTG_OK) return r;
    /* text: "<pad>" "<s>" "</s>" "<unk>" and 256 x "<0xNN>", each with its NUL */
    r = utg__tok_alloc(tok, 260, table_size > 260 ? table_size : 260, 6 + 4 + 5 + 6 + 256 * 7, alloc, msg);
    if (r != UTG_OK) {
        utg_tokenizer_free(tok);
        return r;
    }
    for (i = 0; i < 4; i++)
        utg__tok_set_piece(tok, i, (const uint8_t *)special[i], strlen(special[i]), 0.0f, special_type[i], &text_pos);
    for (i = 0; i < 256; i++) {
        uint8_t name[6] = {'<', '0', 'x', 0, 0, '>'};
        name[3] = (uint8_t)hex[i >> 4];
        name[4] = (uint8_t)hex[i & 15];
        utg__tok_set_piece(tok, 4 + i, name, 6, 0.0f, UTG_PIECE_BYTE, &text_pos);
    }
    tok->kind = UTG_TOKENIZER_BYTE260;
    tok->pad_id = 0;
    tok->bos_id = 1;
    tok->eos_id = 2;
    tok->unk_id = 3;
    tok->space_piece_id = 4 + ' ';
    tok->model_type = 0;
    tok->byte_fallback = 1;
    return UTG_OK;
}

/* Piece text is stored NUL-terminated at piece_offset[id], so the piece is a plain C string. */
UTGDEF const char *utg_tokenizer_piece(const utg_tokenizer *tok, int id) {
    if (!tok || !tok->piece_text || id < 0 || id >= tok->n_pieces) return NULL;
    return tok->piece_text + tok->piece_offset[id];
}

/* The byte rule of >>tokenizer. Ids are compared as uint32, so a negative id lands past table_size
   and counts as padding: a target worth 0 bytes, or a boundary prev. */
UTGDEF uint64_t utg_tokenizer_count_bytes(const utg_tokenizer *tok, const int32_t *prev,
                                          const int32_t *target, size_t n) {
    uint64_t bytes = 0;
    uint32_t ts;
    size_t i;
    if (!tok || !tok->base_bytes || !prev || !target) return 0;
    ts = (uint32_t)tok->table_size;
    for (i = 0; i < n; i++) {
        uint32_t p = (uint32_t)prev[i], t = (uint32_t)target[i];
        if (t >= ts) continue; /* like an id past the model: 0 bytes */
        bytes += tok->base_bytes[t];
        if (tok->has_leading_space[t] && p < ts && !tok->is_boundary[p]) bytes++;
    }
    return bytes;
}

#ifndef UTG_NO_STDIO
UTGDEF utg_result utg_tokenizer_load_spm_file(utg_tokenizer *tok, const char *path, int table_size,
                                              const utg_allocator *alloc, utg_msg *msg) {
    void *buf = NULL;
    size_t size = 0;
    utg_result r;
    if (!tok) return UTG_ERR_INVALID;
    memset(tok, 0, sizeof *tok);
    r = utg_read_file(path, UTG_MAX_TOKENIZER_FILE, &buf, &size, msg);
    if (r != UTG_OK) return r;
    r = utg_tokenizer_load_spm(tok, buf, size, table_size, alloc, msg);
    utg__free(NULL, buf);
    if (r != UTG_OK && msg) {
        utg_msg inner = *msg;
        utg__msgf(msg, "%s: %s", path, inner.text);
    }
    return r;
}
#endif

/* eval_val: the loss is summed in fp64 (train_gpt.py sums batch means x counts; this sums the
   per-token fp32 losses, which differs only in rounding), bytes by the rule above. */
UTGDEF utg_result utg_bpb_add(utg_bpb *acc, const utg_tokenizer *tok, const int32_t *prev,
                              const int32_t *target, const float *loss, size_t n) {
    double loss_sum = 0.0;
    uint64_t bytes = 0;
    uint32_t ts;
    size_t i;
    if (!acc || !tok || !tok->base_bytes || tok->table_size <= 0) return UTG_ERR_INVALID;
    if (n == 0) return UTG_OK;
    if (!prev || !target || !loss) return UTG_ERR_INVALID;
    ts = (uint32_t)tok->table_size;
    for (i = 0; i < n; i++) {
        uint32_t p = (uint32_t)prev[i], t = (uint32_t)target[i]; /* negative ids wrap past ts */
        if (p >= ts || t >= ts) return UTG_ERR_INVALID;
        bytes += tok->base_bytes[t] + (uint64_t)(tok->has_leading_space[t] && !tok->is_boundary[p]);
        loss_sum += (double)loss[i];
    }
    acc->loss_sum += loss_sum;
    acc->tokens += (double)n;
    acc->bytes += (double)bytes;
    return UTG_OK;
}

/* val_loss of eval_val: the mean per-token loss in nats. */
UTGDEF double utg_bpb_loss(const utg_bpb *acc) {
    return acc && acc->tokens > 0.0 ? acc->loss_sum / acc->tokens : 0.0;
}

/* The same operations in the same order as eval_val, so equal sums give the same double. */
UTGDEF double utg_bpb_value(const utg_bpb *acc) {
    double bits_per_token, tokens_per_byte;
    if (!acc || acc->bytes <= 0.0 || acc->tokens <= 0.0) return 0.0;
    bits_per_token = (acc->loss_sum / acc->tokens) / UTG__LN2;
    tokens_per_byte = acc->tokens / acc->bytes;
    return bits_per_token * tokens_per_byte;
}

/* ---- the validation pass ---- */

UTGDEF utg_eval_opts utg_eval_opts_from_config(const utg_config *cfg, int64_t max_batch_tokens) {
    utg_eval_opts o;
    int64_t per, cap;
    memset(&o, 0, sizeof o);
    o.seq_len = cfg->eval_seq_len > 0 ? cfg->eval_seq_len : cfg->train_seq_len;
    o.stride = cfg->eval_stride;
    per = o.seq_len > 0 ? cfg->val_batch_size / o.seq_len : 1;
    cap = max_batch_tokens > 0 && o.seq_len > 0 ? max_batch_tokens / o.seq_len : per;
    if (per > cap) per = cap;
    o.batch_seqs = per < 1 ? 1 : per > INT32_MAX ? INT32_MAX : (int)per;
    o.world = 1;
    return o;
}

/* What a validation pass carries: the stream, the options, the batch being gathered (window starts,
   the first scored offset of each) and the host buffers of one forward. */
typedef struct utg__evaluator {
    utg_model *m;
    const utg_tokenizer *tok;
    const int32_t *tokens;
    utg_eval_opts o;
    size_t *starts;
    int *from, n, window; /* n: windows gathered; window: the number of the next window */
    int32_t *x, *y;
    float *loss;
    utg_bpb *acc;
} utg__evaluator;

/* One forward over the n gathered windows, all of length len; each adds its positions from its
   offset `from` on to the accumulator. */
static utg_result utg__eval_flush(utg__evaluator *e, int len) {
    int r, n = e->n;
    utg_result res;
    e->n = 0;
    if (!n) return UTG_OK;
    for (r = 0; r < n; r++) {
        memcpy(e->x + (size_t)r * len, e->tokens + e->starts[r], sizeof(int32_t) * (size_t)len);
        memcpy(e->y + (size_t)r * len, e->tokens + e->starts[r] + 1, sizeof(int32_t) * (size_t)len);
    }
    if ((res = utg_model_eval(e->m, e->x, e->y, n, len, e->loss, NULL)) != UTG_OK) return res;
    for (r = 0; r < n; r++) {
        size_t o = (size_t)r * len + (size_t)e->from[r];
        res = utg_bpb_add(e->acc, e->tok, e->x + o, e->y + o, e->loss + o, (size_t)(len - e->from[r]));
        if (res != UTG_OK) return res;
    }
    return UTG_OK;
}

/* The next window in stream order, len tokens: gathered when it is this rank's, run when the batch
   is full (every window of a batch has the same length). */
static utg_result utg__eval_window(utg__evaluator *e, size_t start, int from, int len) {
    int mine = e->o.world <= 1 || e->window % e->o.world == e->o.rank;
    e->window++;
    if (!mine) return UTG_OK;
    e->starts[e->n] = start;
    e->from[e->n] = from;
    return ++e->n == e->o.batch_seqs ? utg__eval_flush(e, len) : UTG_OK;
}

/* The windows of a pass: disjoint over whole windows, or sliding (see utg_eval_opts); a sliding
   window that runs past the stream is shortened and run on its own, after the batch before it. */
static utg_result utg__eval_windows(utg__evaluator *e, size_t n_tok) {
    size_t N = n_tok - 1, T = (size_t)e->o.seq_len, S = (size_t)e->o.stride, ws;
    utg_result res = UTG_OK;
    if (S == 0) {
        for (ws = 0; ws + T <= N && res == UTG_OK; ws += T) res = utg__eval_window(e, ws, 0, (int)T);
        return res == UTG_OK ? utg__eval_flush(e, (int)T) : res;
    }
    for (ws = 0; ws + (T - S) < N && res == UTG_OK; ws += S) {
        int from = ws == 0 ? 0 : (int)(T - S);
        if (ws + T <= N) {
            res = utg__eval_window(e, ws, from, (int)T);
        } else if ((res = utg__eval_flush(e, (int)T)) == UTG_OK) { /* the full windows, then this one */
            res = utg__eval_window(e, ws, from, (int)(N - ws));
            if (res == UTG_OK) res = utg__eval_flush(e, (int)(N - ws));
        }
    }
    return res == UTG_OK ? utg__eval_flush(e, (int)T) : res;
}

/* The options against the stream: a window length and batch that fit, a stride inside the window,
   a rank inside the world, and at least one disjoint window. */
static utg_result utg__eval_check(utg_model *m, const utg_eval_opts *o, size_t n_tok) {
    if (o->seq_len <= 0 || o->batch_seqs <= 0 || o->stride < 0 || o->stride > o->seq_len ||
        o->world < 0 || o->rank < 0 || (o->world > 1 && o->rank >= o->world) ||
        (size_t)o->seq_len * (size_t)o->batch_seqs > (size_t)INT32_MAX) {
        utg__msgf(&m->msg, "evaluation: seq_len %d, stride %d, batch %d, rank %d of %d are not valid",
                  o->seq_len, o->stride, o->batch_seqs, o->rank, o->world);
        return UTG_ERR_INVALID;
    }
    if (n_tok < 2 || (o->stride == 0 && n_tok - 1 < (size_t)o->seq_len)) {
        utg__msgf(&m->msg, "evaluation: the stream's %zu targets are fewer than one window of %d",
                  n_tok ? n_tok - 1 : 0, o->seq_len);
        return UTG_ERR_INVALID;
    }
    return UTG_OK;
}

UTGDEF utg_result utg_model_eval_bpb(utg_model *m, const utg_tokenizer *tok, const int32_t *tokens,
                                     size_t n_tok, const utg_eval_opts *opts, utg_bpb *acc) {
    utg__evaluator e;
    size_t nb;
    utg_result res;
    if (!m || !tok || !tokens || !opts || !acc) return UTG_ERR_INVALID;
    if ((res = utg__eval_check(m, opts, n_tok)) != UTG_OK) return res;
    memset(&e, 0, sizeof e);
    e.m = m, e.tok = tok, e.tokens = tokens, e.o = *opts, e.acc = acc;
    nb = (size_t)opts->batch_seqs * (size_t)opts->seq_len;
    e.starts = (size_t *)utg__alloc(&m->alloc, sizeof(size_t) * (size_t)opts->batch_seqs);
    e.from = (int *)utg__alloc(&m->alloc, sizeof(int) * (size_t)opts->batch_seqs);
    e.x = (int32_t *)utg__alloc(&m->alloc, sizeof(int32_t) * nb);
    e.y = (int32_t *)utg__alloc(&m->alloc, sizeof(int32_t) * nb);
    e.loss = (float *)utg__alloc(&m->alloc, sizeof(float) * nb);
    if (!e.starts || !e.from || !e.x || !e.y || !e.loss) {
        utg__msgf(&m->msg, "evaluation: out of memory for a batch of %zu tokens", nb);
        res = UTG_ERR_NOMEM;
    } else {
        res = utg__eval_windows(&e, n_tok);
    }
    {
        void *owned[] = {e.starts, e.from, e.x, e.y, e.loss};
        utg__free_all(&m->alloc, owned, 5);
    }
    return res;
}

/* ------------------------------------------------------------------------------------------------
// >>impl_quant
   Quantization runs on the host, on float copies of the weights: the fp16 conversions, the
   per-row quantizer (utg__quant_row: clip, scale, round half to even, squared error), the clip
   choices (max, percentile, SDClip, GPTQ-lite search) in utg_quantize_rows, full-Hessian GPTQ in
   utg_gptq_rows, and dequantization. Every path writes int8 symbols and fp16 row scales, the
   form the artifact stores.
   ------------------------------------------------------------------------------------------------ */

UTGDEF float utg_f16_to_f32(uint16_t h) { return utg__f16_to_f32(h); }

UTGDEF uint16_t utg_f32_to_f16(float x) {
    uint32_t b, sign, exp, man;
    memcpy(&b, &x, 4);
    sign = (b >> 16) & 0x8000u;
    exp = (b >> 23) & 0xffu;
    man = b & 0x7fffffu;
    if (exp == 0xffu) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0u)); /* inf, NaN */
    if (exp > 142) return (uint16_t)(sign | 0x7c00u);                                          /* overflow */
    if (exp < 113) { /* subnormal half (or zero): man * 2^-24, rounded to nearest even */
        uint32_t m = man | 0x800000u, shift;
        uint32_t h, rem, half;
        if (exp < 102) return (uint16_t)sign; /* below half of the smallest subnormal */
        shift = 126 - exp;                     /* 14..24 */
        h = m >> shift;
        rem = m & ((1u << shift) - 1u);
        half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    {
        uint32_t h = ((exp - 112) << 10) | (man >> 13), rem = man & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* may carry into the exponent: correct */
        return (uint16_t)(sign | h);
    }
}

/* qsort order of floats, ascending (for the quantiles of |w|). */
static int utg__cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* quantile of the sorted values v[0..n-1] at p, torch.quantile's linear interpolation */
static double utg__quantile_sorted(const float *v, int n, double p) {
    double pos = p * (double)(n - 1), lo = floor(pos);
    int i = (int)lo, j = i + 1 < n ? i + 1 : i;
    return (double)v[i] + ((double)v[j] - (double)v[i]) * (pos - lo);
}

/* One row w[cols] with a given clip, r = 2^(bits-1) - 1 the largest symbol:
       scale = max(clip / r, floor),   q[c] = clamp(round_half_even(clamp(w[c], +-clip) / scale), -r, r)
   q is computed with the fp32 scale, as train_gpt.py's quantize_float_tensor does, while *scale16
   is the fp16 the artifact stores and a loader multiplies by. Returns the squared reconstruction
   error sum (w - q * fp16(scale))^2 against that stored scale: what GPTQ-lite search minimises and
   rel_err reports. nearbyintf in the default rounding mode rounds half to even, as torch.round.
   floor: train_gpt.py's clamp_min(1/r) for the max and percentile clips; SDClip (PR #1394) only keeps
   the scale above 1e-10. A zero clip (an all-zero row) gets the floor: symbols 0, error 0. */
static double utg__quant_row(const float *w, int cols, int r, float clip, float floor, int8_t *q,
                             uint16_t *scale16) {
    float scale = clip / (float)r, s16;
    double err = 0.0;
    int c;
    if (!(scale >= floor)) scale = floor;
    *scale16 = utg_f32_to_f16(scale);
    s16 = utg__f16_to_f32(*scale16);
    for (c = 0; c < cols; c++) {
        float x = w[c] > clip ? clip : w[c] < -clip ? -clip : w[c], v = nearbyintf(x / scale), d;
        if (v > (float)r) v = (float)r;
        if (v < (float)-r) v = (float)-r;
        q[c] = (int8_t)v;
        d = w[c] - v * s16;
        err += (double)d * d;
    }
    return err;
}

/* The clip of one row without a sort: SDClip, param * the unbiased std around the row mean
   (torch.std); otherwise max |w|. */
static float utg__row_clip_direct(const float *w, int cols, utg_clip_mode mode, double param) {
    float mx = 0.0f;
    int c;
    if (mode == UTG_CLIP_SDCLIP) {
        double mean = 0.0, ss = 0.0;
        for (c = 0; c < cols; c++) mean += w[c];
        mean /= cols;
        for (c = 0; c < cols; c++) ss += (w[c] - mean) * (w[c] - mean);
        return (float)(param * sqrt(cols > 1 ? ss / (cols - 1) : 0.0));
    }
    for (c = 0; c < cols; c++) if (fabsf(w[c]) > mx) mx = fabsf(w[c]);
    return mx;
}

/* The clip of one row for a mode other than SEARCH; sorted is scratch of cols floats. PERCENTILE:
   the param-quantile of |w| (param >= 1 is the max, without the sort); SDClip and MAX as
   utg__row_clip_direct. */
static float utg__row_clip(const float *w, int cols, utg_clip_mode mode, double param, float *sorted) {
    int c;
    if (mode != UTG_CLIP_PERCENTILE || param >= 1.0) return utg__row_clip_direct(w, cols, mode, param);
    for (c = 0; c < cols; c++) sorted[c] = fabsf(w[c]);
    qsort(sorted, (size_t)cols, sizeof(float), utg__cmp_float);
    return (float)utg__quantile_sorted(sorted, cols, param);
}

UTGDEF utg_result utg_quantize_rows(const float *W, int rows, int cols, const utg_quant_spec *spec, int8_t *q,
                                    uint16_t *scales, double *chosen, utg_msg *msg) {
    static const double search[5] = {0.999, 0.9995, 0.9999, 0.99999, 1.0};
    utg_allocator none;
    float *sorted;
    int i, r, k, n_try, best = 0;
    size_t n, j;
    double best_err = 0.0;
    if (!W || !spec || !q || !scales || rows <= 0 || cols <= 0) { utg__msgf(msg, "quantize: bad arguments"); return UTG_ERR_INVALID; }
    if (spec->bits < 2 || spec->bits > 8) { utg__msgf(msg, "quantize: bits must be in 2..8 (got %d)", spec->bits); return UTG_ERR_INVALID; }
    if (spec->clip == UTG_CLIP_PERCENTILE && !(spec->param > 0.0 && spec->param <= 1.0)) {
        utg__msgf(msg, "quantize: the clip percentile must be in (0, 1] (got %g)", spec->param);
        return UTG_ERR_INVALID;
    }
    if (spec->clip == UTG_CLIP_SDCLIP && !(spec->param > 0.0 && isfinite(spec->param))) {
        utg__msgf(msg, "quantize: the SDClip k must be positive (got %g)", spec->param);
        return UTG_ERR_INVALID;
    }
    if ((int)spec->clip < 0 || spec->clip > UTG_CLIP_SEARCH) { utg__msgf(msg, "quantize: unknown clip mode %d", (int)spec->clip); return UTG_ERR_INVALID; }
    if (!utg__mul_ok((size_t)rows, (size_t)cols, &n)) { utg__msgf(msg, "quantize: %d x %d overflows", rows, cols); return UTG_ERR_INVALID; }
    for (j = 0; j < n; j++)
        if (!isfinite(W[j])) { utg__msgf(msg, "quantize: weight %zu (row %zu) is not finite", j, j / (size_t)cols); return UTG_ERR_INVALID; }
    memset(&none, 0, sizeof none);
    sorted = (float *)utg__alloc(&none, sizeof(float) * (size_t)cols);
    if (!sorted) { utg__msgf(msg, "quantize: out of memory"); return UTG_ERR_NOMEM; }
    r = (1 << (spec->bits - 1)) - 1;
    n_try = spec->clip == UTG_CLIP_SEARCH ? 5 : 1;
    for (k = 0; k < n_try; k++) { /* SEARCH: each candidate over the whole matrix, then the best again */
        utg_clip_mode mode = spec->clip == UTG_CLIP_SEARCH ? UTG_CLIP_PERCENTILE : spec->clip;
        double p = spec->clip == UTG_CLIP_SEARCH ? search[k] : spec->param, err = 0.0;
        for (i = 0; i < rows; i++) {
            const float *w = W + (size_t)i * cols;
            err += utg__quant_row(w, cols, r, utg__row_clip(w, cols, mode, p, sorted), mode == UTG_CLIP_SDCLIP ? 1e-10f : 1.0f / (float)r,
                                  q + (size_t)i * cols, scales + i);
        }
        if (k == 0 || err < best_err) { best_err = err; best = k; }
    }
    if (n_try > 1 && best != n_try - 1) /* q holds the last candidate: redo the best one */
        for (i = 0; i < rows; i++) {
            const float *w = W + (size_t)i * cols;
            utg__quant_row(w, cols, r, utg__row_clip(w, cols, UTG_CLIP_PERCENTILE, search[best], sorted), 1.0f / (float)r,
                           q + (size_t)i * cols, scales + i);
        }
    if (chosen) *chosen = spec->clip == UTG_CLIP_SEARCH ? search[best] : spec->param;
    utg__free(&none, sorted);
    return UTG_OK;
}

/* In-place lower Cholesky of the n x n matrix a (row-major; the upper triangle is left alone).
   Returns 0 when a is not positive definite. */
static int utg__cholesky(double *a, int n) {
    int i, j, k;
    for (j = 0; j < n; j++) {
        double d = a[(size_t)j * n + j];
        for (k = 0; k < j; k++) d -= a[(size_t)j * n + k] * a[(size_t)j * n + k];
        if (!(d > 0.0)) return 0;
        d = sqrt(d);
        a[(size_t)j * n + j] = d;
        for (i = j + 1; i < n; i++) {
            double v = a[(size_t)i * n + j];
            for (k = 0; k < j; k++) v -= a[(size_t)i * n + k] * a[(size_t)j * n + k];
            a[(size_t)i * n + j] = v / d;
        }
    }
    return 1;
}

UTGDEF utg_result utg_gptq_rows(const float *W, int rows, int cols, const double *H, const utg_quant_spec *spec, double damp,
                                int8_t *q, uint16_t *scales, utg_msg *msg) {
    utg_allocator none;
    double *h = NULL, *w = NULL, *linv = NULL, mean = 0.0, *err = NULL;
    int *perm = NULL, i, j, k, r, i1, tries;
    size_t nn, n;
    utg_result res = UTG_ERR_NOMEM;
    if (!W || !H || !spec || !q || !scales || rows <= 0 || cols <= 0) { utg__msgf(msg, "gptq: bad arguments"); return UTG_ERR_INVALID; }
    if (spec->clip == UTG_CLIP_SEARCH) { utg__msgf(msg, "gptq: give a fixed clip (max, percentile or SDClip), not the search"); return UTG_ERR_INVALID; }
    /* the scales (and the checks of spec and W) come from the plain quantizer */
    if ((res = utg_quantize_rows(W, rows, cols, spec, q, scales, NULL, msg)) != UTG_OK) return res;
    res = UTG_ERR_NOMEM;
    if (!utg__mul_ok((size_t)cols, (size_t)cols, &nn) || !utg__mul_ok((size_t)rows, (size_t)cols, &n)) {
        utg__msgf(msg, "gptq: %d x %d overflows", rows, cols);
        return UTG_ERR_INVALID;
    }
    if (damp <= 0.0) damp = 0.01;
    memset(&none, 0, sizeof none);
    h = (double *)utg__alloc(&none, sizeof(double) * nn);
    linv = (double *)utg__alloc(&none, sizeof(double) * nn);
    w = (double *)utg__alloc(&none, sizeof(double) * n);
    err = (double *)utg__alloc(&none, sizeof(double) * (size_t)rows * 128);
    perm = (int *)utg__alloc(&none, sizeof(int) * (size_t)cols);
    if (!h || !linv || !w || !err || !perm) { utg__msgf(msg, "gptq: out of memory"); goto done; }
    for (j = 0; j < cols; j++) {
        double dj = H[(size_t)j * cols + j];
        if (!isfinite(dj) || dj < 0.0) { utg__msgf(msg, "gptq: H[%d,%d] = %g is not a variance", j, j, dj); res = UTG_ERR_INVALID; goto done; }
        mean += dj == 0.0 ? 1.0 : dj;
    }
    mean /= cols;
    /* act-order: columns by diagonal, descending (ties by index, so the order is deterministic) */
    for (j = 0; j < cols; j++) perm[j] = j;
    for (j = 1; j < cols; j++) {
        int pj = perm[j];
        double dv = H[(size_t)pj * cols + pj];
        for (k = j; k > 0 && H[(size_t)perm[k - 1] * cols + perm[k - 1]] < dv; k--) perm[k] = perm[k - 1];
        perm[k] = pj;
    }
    r = (1 << (spec->bits - 1)) - 1;
    for (tries = 0;; tries++) { /* H + damping, permuted; the dead columns get a unit diagonal */
        for (i = 0; i < cols; i++)
            for (j = 0; j < cols; j++) {
                double v = H[(size_t)perm[i] * cols + perm[j]];
                if (!isfinite(v)) { utg__msgf(msg, "gptq: H is not finite"); res = UTG_ERR_INVALID; goto done; }
                if (i == j) v = (v == 0.0 ? 1.0 : v) + damp * mean;
                h[(size_t)i * cols + j] = v;
            }
        if (utg__cholesky(h, cols)) break;
        if (tries == 6) { utg__msgf(msg, "gptq: H is not positive definite even with %g damping", damp); res = UTG_ERR_INVALID; goto done; }
        damp *= 10.0;
    }
    /* H^-1 = L^-T L^-1; then its upper Cholesky factor U (H^-1 = U^T U), kept in h's upper triangle */
    memset(linv, 0, sizeof(double) * nn);
    for (j = 0; j < cols; j++) {
        linv[(size_t)j * cols + j] = 1.0 / h[(size_t)j * cols + j];
        for (i = j + 1; i < cols; i++) {
            double v = 0.0;
            for (k = j; k < i; k++) v -= h[(size_t)i * cols + k] * linv[(size_t)k * cols + j];
            linv[(size_t)i * cols + j] = v / h[(size_t)i * cols + i];
        }
    }
    for (i = 0; i < cols; i++) /* h (lower half) = L^-T L^-1, symmetric, written as its lower triangle */
        for (j = 0; j <= i; j++) {
            double v = 0.0;
            for (k = i; k < cols; k++) v += linv[(size_t)k * cols + i] * linv[(size_t)k * cols + j];
            h[(size_t)i * cols + j] = v;
        }
    if (!utg__cholesky(h, cols)) { utg__msgf(msg, "gptq: H^-1 lost positive definiteness (badly conditioned H)"); res = UTG_ERR_INVALID; goto done; }
    /* U[i][j] = L'[j][i]: read h[j * cols + i] for j >= i */
#define UTG__U(i, j) h[(size_t)(j) * cols + (i)]
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++) {
            int pj = perm[j];
            w[(size_t)i * cols + j] = H[(size_t)pj * cols + pj] == 0.0 ? 0.0 : W[(size_t)i * cols + pj];
        }
    for (i1 = 0; i1 < cols; i1 += 128) {
        int i2 = i1 + 128 < cols ? i1 + 128 : cols;
        for (j = i1; j < i2; j++) {
            double d = UTG__U(j, j);
            for (i = 0; i < rows; i++) {
                double s = (double)utg__f16_to_f32(scales[i]), x = w[(size_t)i * cols + j], v = nearbyint(x / s), e;
                if (v > r) v = r;
                if (v < -r) v = -r;
                q[(size_t)i * cols + perm[j]] = (int8_t)v;
                e = (x - v * s) / d;
                err[(size_t)i * 128 + (j - i1)] = e;
                for (k = j + 1; k < i2; k++) w[(size_t)i * cols + k] -= e * UTG__U(j, k);
            }
        }
        for (i = 0; i < rows; i++) /* the block's errors onto every later column */
            for (k = i2; k < cols; k++) {
                double v = 0.0;
                for (j = i1; j < i2; j++) v += err[(size_t)i * 128 + (j - i1)] * UTG__U(j, k);
                w[(size_t)i * cols + k] -= v;
            }
    }
#undef UTG__U
    res = UTG_OK;
done:
    utg__free(&none, h); utg__free(&none, linv); utg__free(&none, w); utg__free(&none, err);
    utg__free(&none, perm);
    return res;
}

UTGDEF void utg_dequantize_rows(const int8_t *q, const uint16_t *scales, int rows, int cols, float *W) {
    int i, c;
    for (i = 0; i < rows; i++) {
        float s = utg__f16_to_f32(scales[i]);
        for (c = 0; c < cols; c++) W[(size_t)i * cols + c] = (float)q[(size_t)i * cols + c] * s;
    }
}

/* ------------------------------------------------------------------------------------------------
// >>impl_artifact
   The UTGA file (docs/FORMAT.md): header, key-value metadata, tensor records, quantized and float
   planes, optional extra sections, compressed as a whole by one codec (stored, or brotli with
   UTG_USE_BROTLI). Below: the codecs; the writer, which collects kvs, tensors and sections and
   lays them out in a canonical order so that the bytes depend only on what was added; the
   parser, which checks everything against the file's size before it allocates; the model side
   (config keys, Hessians gathered from forward activations, the quantization plan, export, the
   byte budget, loading) and quantization-aware training.
   ------------------------------------------------------------------------------------------------ */

/* Little-endian u16 fields, and the alignment of planes within the file. */
static void utg__wr_u16le(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static uint32_t utg__rd_u16le(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static size_t utg__align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

static size_t utg__stored_max(size_t n, void *user) { (void)user; return n; }
/* The "stored" codec: the payload as it is (the artifact's checksum still covers it). */
static utg_result utg__stored_compress(const void *src, size_t n, void *dst, size_t *dst_size, void *user) {
    (void)user;
    if (*dst_size < n) return UTG_ERR_INVALID;
    if (n) memcpy(dst, src, n);
    *dst_size = n;
    return UTG_OK;
}
static utg_result utg__stored_decompress(const void *src, size_t n, void *dst, size_t dst_size, void *user) {
    (void)user;
    if (n != dst_size) return UTG_ERR_FORMAT;
    if (n) memcpy(dst, src, n);
    return UTG_OK;
}
UTGDEF utg_codec utg_codec_stored(void) {
    utg_codec c;
    memset(&c, 0, sizeof c);
    c.id = UTG_CODEC_STORED;
    c.name = "stored";
    c.max_packed = utg__stored_max;
    c.compress = utg__stored_compress;
    c.decompress = utg__stored_decompress;
    return c;
}

UTGDEF int utg_codec_for_id(int id, utg_codec *out) {
    if (!out) return 0;
    if (id == UTG_CODEC_STORED) { *out = utg_codec_stored(); return 1; }
#ifdef UTG_USE_BROTLI
    if (id == UTG_CODEC_BROTLI) { *out = utg_codec_brotli(); return 1; }
#endif
    return 0;
}

#ifdef UTG_USE_BROTLI
#include <brotli/decode.h>
#include <brotli/encode.h>
/* The brotli codec (UTG_USE_BROTLI): quality 11, window 2^24; decoding must consume all input exactly. */
static size_t utg__brotli_max(size_t n, void *user) {
    (void)user;
    return BrotliEncoderMaxCompressedSize(n) ? BrotliEncoderMaxCompressedSize(n) : n + (n >> 2) + 1024;
}
static utg_result utg__brotli_compress(const void *src, size_t n, void *dst, size_t *dst_size, void *user) {
    (void)user;
    if (!BrotliEncoderCompress(11, 24, BROTLI_MODE_GENERIC, n, (const uint8_t *)src, dst_size, (uint8_t *)dst))
        return UTG_ERR_NOMEM;
    return UTG_OK;
}
static utg_result utg__brotli_decompress(const void *src, size_t n, void *dst, size_t dst_size, void *user) {
    /* streaming, so that bytes after the end of the brotli stream are refused (the one-shot decoder
       ignores them) and the output must fill dst_size exactly */
    BrotliDecoderState *s = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    const uint8_t *in = (const uint8_t *)src;
    uint8_t *out = (uint8_t *)dst;
    size_t avail_in = n, avail_out = dst_size;
    BrotliDecoderResult r;
    (void)user;
    if (!s) return UTG_ERR_NOMEM;
    r = BrotliDecoderDecompressStream(s, &avail_in, &in, &avail_out, &out, NULL);
    BrotliDecoderDestroyInstance(s);
    return r == BROTLI_DECODER_RESULT_SUCCESS && avail_in == 0 && avail_out == 0 ? UTG_OK : UTG_ERR_FORMAT;
}
UTGDEF utg_codec utg_codec_brotli(void) {
    static char name[48];
    utg_codec c;
    uint32_t v = BrotliEncoderVersion();
    snprintf(name, sizeof name, "brotli %u.%u.%u q11 w24", v >> 24, (v >> 12) & 0xfffu, v & 0xfffu);
    memset(&c, 0, sizeof c);
    c.id = UTG_CODEC_BROTLI;
    c.name = name;
    c.max_packed = utg__brotli_max;
    c.compress = utg__brotli_compress;
    c.decompress = utg__brotli_decompress;
    return c;
}
#endif

/* A kv key: 1..UTG_ARTIFACT_MAX_KEY of [a-z0-9_.], dot-separated parts, none empty. */
static int utg__kv_key_ok(const char *k, size_t n) {
    size_t i;
    if (n < 1 || n > UTG_ARTIFACT_MAX_KEY || k[0] == '.' || k[n - 1] == '.') return 0;
    for (i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return 0;
        if (c == '.' && k[i + 1] == '.') return 0;
    }
    return 1;
}
/* A tensor name: 1..UTG_MAX_NAME printable ASCII bytes without spaces. */
static int utg__name_ok(const char *s, size_t n) {
    size_t i;
    if (n < 1 || n > UTG_MAX_NAME) return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return 0;
    return 1;
}
/* Bytes per element of a tensor dtype, and of a kv type's array elements. */
static size_t utg__dtype_size(int dt) { return dt == UTG_DT_F32 ? 4 : dt == UTG_DT_Q ? 1 : 2; }
static size_t utg__kv_elem(int type) {
    switch (type) {
    case UTG_KV_U32: case UTG_KV_I32: case UTG_KV_F32: case UTG_KV_U32_ARRAY: case UTG_KV_F32_ARRAY: return 4;
    case UTG_KV_U64: case UTG_KV_F64: return 8;
    default: return 1;
    }
}

/* Check a tensor description (writer and parser share it); computes numel and the plane sizes. */
static utg_result utg__tensor_check(utg_artifact_tensor *t, utg_msg *msg) {
    size_t numel = 1, vbytes, rows;
    int i;
    if (t->dtype < UTG_DT_F32 || t->dtype > UTG_DT_Q) { utg__msgf(msg, "tensor %s: unknown dtype %d", t->name, (int)t->dtype); return UTG_ERR_FORMAT; }
    if (t->ndim < 1 || t->ndim > UTG_MAX_DIMS) { utg__msgf(msg, "tensor %s: %d dims (1..4)", t->name, t->ndim); return UTG_ERR_FORMAT; }
    for (i = 0; i < t->ndim; i++) {
        if (t->dims[i] < 1 || t->dims[i] > 0xffffffffll || !utg__mul_ok(numel, (size_t)t->dims[i], &numel)) {
            utg__msgf(msg, "tensor %s: dimension %d is %lld", t->name, i, (long long)t->dims[i]);
            return UTG_ERR_FORMAT;
        }
    }
    if (numel > 0xffffffffu) { utg__msgf(msg, "tensor %s: %zu elements (at most 2^32 - 1)", t->name, numel); return UTG_ERR_FORMAT; }
    if (!utg__mul_ok(numel, utg__dtype_size(t->dtype), &vbytes) || vbytes > 0xffffffffu) {
        utg__msgf(msg, "tensor %s: plane too large", t->name);
        return UTG_ERR_FORMAT;
    }
    t->numel = numel;
    t->values_size = vbytes;
    if (t->dtype == UTG_DT_Q) {
        if (t->qbits < 2 || t->qbits > 8) { utg__msgf(msg, "tensor %s: qbits %d (2..8)", t->name, t->qbits); return UTG_ERR_FORMAT; }
        rows = (size_t)t->dims[0];
        switch (t->scale_kind) {
        case UTG_SCALE_TENSOR: t->n_scales = 1; t->scales_size = 4; break;
        case UTG_SCALE_ROW: t->n_scales = rows; t->scales_size = 2 * rows; break;
        case UTG_SCALE_GROUP:
            if (t->group < 1 || t->group > 65535) { utg__msgf(msg, "tensor %s: scale group %d (1..65535)", t->name, t->group); return UTG_ERR_FORMAT; }
            t->n_scales = (numel + (size_t)t->group - 1) / (size_t)t->group;
            t->scales_size = 2 * t->n_scales;
            break;
        default: utg__msgf(msg, "tensor %s: Q needs a scale kind (got %d)", t->name, (int)t->scale_kind); return UTG_ERR_FORMAT;
        }
        if (t->scale_kind != UTG_SCALE_GROUP && t->group != 0) { utg__msgf(msg, "tensor %s: group %d without group scales", t->name, t->group); return UTG_ERR_FORMAT; }
    } else {
        if (t->qbits != 0 || t->scale_kind != UTG_SCALE_NONE || t->group != 0) {
            utg__msgf(msg, "tensor %s: a float tensor has qbits %d, scale kind %d, group %d", t->name, t->qbits, (int)t->scale_kind, t->group);
            return UTG_ERR_FORMAT;
        }
        t->n_scales = 0;
        t->scales_size = 0;
    }
    return UTG_OK;
}

/* symbols within +-(2^(bits-1) - 1), finite scales and finite float values */
static utg_result utg__tensor_check_planes(const utg_artifact_tensor *t, utg_msg *msg) {
    size_t i;
    if (t->dtype == UTG_DT_F32) {
        const uint8_t *v = (const uint8_t *)t->values;
        for (i = 0; i < t->numel; i++)
            if ((utg__rd_u32le(v + 4 * i) & 0x7f800000u) == 0x7f800000u) {
                utg__msgf(msg, "tensor %s: value %zu is not finite", t->name, i);
                return UTG_ERR_FORMAT;
            }
    } else if (t->dtype == UTG_DT_F16 || t->dtype == UTG_DT_BF16) {
        const uint16_t *v = (const uint16_t *)t->values;
        uint16_t e = t->dtype == UTG_DT_F16 ? 0x7c00u : 0x7f80u;
        for (i = 0; i < t->numel; i++)
            if ((v[i] & e) == e) {
                utg__msgf(msg, "tensor %s: value %zu is not finite", t->name, i);
                return UTG_ERR_FORMAT;
            }
    } else if (t->dtype == UTG_DT_Q) {
        const int8_t *q = (const int8_t *)t->values;
        int r = (1 << (t->qbits - 1)) - 1;
        for (i = 0; i < t->numel; i++)
            if (q[i] > r || q[i] < -r) {
                utg__msgf(msg, "tensor %s: symbol %d at %zu is outside +-%d", t->name, q[i], i, r);
                return UTG_ERR_FORMAT;
            }
        if (t->scale_kind == UTG_SCALE_TENSOR) {
            float s;
            memcpy(&s, t->scales, 4);
            if (!isfinite(s)) {
                utg__msgf(msg, "tensor %s: scale is not finite", t->name);
                return UTG_ERR_FORMAT;
            }
        } else {
            const uint16_t *s = (const uint16_t *)t->scales;
            for (i = 0; i < t->n_scales; i++)
                if ((s[i] & 0x7c00u) == 0x7c00u) {
                    utg__msgf(msg, "tensor %s: scale %zu is not finite", t->name, i);
                    return UTG_ERR_FORMAT;
                }
        }
    }
    return UTG_OK;
}

/* byte shuffle: element k's byte j goes to j * n + k (all low bytes first) */
static void utg__shuffle(uint8_t *dst, const uint8_t *src, size_t n, size_t es) {
    size_t k, j;
    for (j = 0; j < es; j++)
        for (k = 0; k < n; k++) dst[j * n + k] = src[k * es + j];
}
/* The inverse of utg__shuffle: n elements of es bytes back from byte planes. */
static void utg__unshuffle(uint8_t *dst, const uint8_t *src, size_t n, size_t es) {
    size_t k, j;
    for (j = 0; j < es; j++)
        for (k = 0; k < n; k++) dst[k * es + j] = src[j * n + k];
}

/* ---- writer ---- */

/* A kv the writer holds until the write: its key, type, element count and encoded bytes. */
typedef struct utg__wkv {
    char key[UTG_ARTIFACT_MAX_KEY + 1];
    int type;
    uint32_t count;
    uint8_t *bytes; /* the encoded value */
    size_t n;
} utg__wkv;
/* An extra section the writer holds: 4-byte tag and owned payload. */
typedef struct utg__wsect {
    char tag[4];
    uint8_t *bytes;
    size_t n;
} utg__wsect;

/* Everything added so far, owned by the writer; utg_artifact_write orders and encodes it. */
struct utg_artifact_writer {
    utg_allocator alloc;
    utg_msg msg;
    int n_kv, cap_kv, n_t, cap_t, n_s;
    utg__wkv *kv;
    utg_artifact_tensor *t; /* values/scales point at owned copies */
    utg__wsect sect[UTG_ARTIFACT_MAX_SECTIONS];
};

/* Grows *arr (elements of elem bytes) to hold need, doubling from 16; 0 when out of memory. */
static int utg__grow(const utg_allocator *a, void **arr, int *cap, int need, size_t elem) {
    void *p;
    int nc;
    if (need <= *cap) return 1;
    nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    p = utg__alloc(a, (size_t)nc * elem);
    if (!p) return 0;
    if (*arr) { memcpy(p, *arr, (size_t)*cap * elem); utg__free(a, *arr); }
    *arr = p;
    *cap = nc;
    return 1;
}

UTGDEF utg_result utg_artifact_writer_create(const utg_allocator *alloc, utg_artifact_writer **out) {
    utg_allocator a;
    utg_artifact_writer *w;
    if (!out) return UTG_ERR_INVALID;
    *out = NULL;
    memset(&a, 0, sizeof a);
    if (alloc) a = *alloc;
    w = (utg_artifact_writer *)utg__alloc(&a, sizeof *w);
    if (!w) return UTG_ERR_NOMEM;
    memset(w, 0, sizeof *w);
    w->alloc = a;
    *out = w;
    return UTG_OK;
}

UTGDEF void utg_artifact_writer_destroy(utg_artifact_writer *w) {
    int i;
    if (!w) return;
    for (i = 0; i < w->n_kv; i++) utg__free(&w->alloc, w->kv[i].bytes);
    for (i = 0; i < w->n_t; i++) { utg__free(&w->alloc, (void *)w->t[i].values); utg__free(&w->alloc, (void *)w->t[i].scales); }
    for (i = 0; i < w->n_s; i++) utg__free(&w->alloc, w->sect[i].bytes);
    utg__free(&w->alloc, w->kv);
    utg__free(&w->alloc, w->t);
    utg__free(&w->alloc, w);
}

UTGDEF const char *utg_artifact_writer_message(const utg_artifact_writer *w) { return w ? w->msg.text : ""; }

UTGDEF utg_result utg_artifact_add_kv(utg_artifact_writer *w, const char *key, utg_kv_type type, const void *value, uint32_t count) {
    utg__wkv *e;
    size_t kl, n, es, i;
    int j;
    if (!w || !key) return UTG_ERR_INVALID;
    kl = strlen(key);
    if (!utg__kv_key_ok(key, kl)) { utg__msgf(&w->msg, "META key '%.80s' is not dotted lower_snake of 1..64 bytes", key); return UTG_ERR_INVALID; }
    for (j = 0; j < w->n_kv; j++)
        if (!strcmp(w->kv[j].key, key)) { utg__msgf(&w->msg, "META key %s added twice", key); return UTG_ERR_INVALID; }
    if ((int)type < UTG_KV_U32 || type > UTG_KV_F32_ARRAY) { utg__msgf(&w->msg, "META key %s: unknown type %d", key, (int)type); return UTG_ERR_INVALID; }
    if (w->n_kv >= UTG_ARTIFACT_MAX_KV) { utg__msgf(&w->msg, "more than %d META keys", UTG_ARTIFACT_MAX_KV); return UTG_ERR_INVALID; }
    es = utg__kv_elem(type);
    if (type == UTG_KV_STR || type == UTG_KV_U32_ARRAY || type == UTG_KV_F32_ARRAY) {
        if (count > UTG_ARTIFACT_MAX_ARRAY || (count && !value)) { utg__msgf(&w->msg, "META key %s: %u elements", key, count); return UTG_ERR_INVALID; }
        n = 4 + (size_t)count * es;
    } else {
        if (!value) return UTG_ERR_INVALID;
        count = 1;
        n = es;
    }
    if (!utg__grow(&w->alloc, (void **)&w->kv, &w->cap_kv, w->n_kv + 1, sizeof *w->kv)) return UTG_ERR_NOMEM;
    e = &w->kv[w->n_kv];
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, kl + 1);
    e->type = (int)type;
    e->count = count;
    e->n = n;
    e->bytes = (uint8_t *)utg__alloc(&w->alloc, n ? n : 1);
    if (!e->bytes) return UTG_ERR_NOMEM;
    if (n != es || type == UTG_KV_STR || type == UTG_KV_U32_ARRAY || type == UTG_KV_F32_ARRAY) {
        utg__wr_u32le(e->bytes, count);
        if (type == UTG_KV_STR) { if (count) memcpy(e->bytes + 4, value, count); }
        else for (i = 0; i < count; i++) { uint32_t v; memcpy(&v, (const uint8_t *)value + 4 * i, 4); utg__wr_u32le(e->bytes + 4 + 4 * i, v); }
    } else if (es == 4) {
        uint32_t v;
        memcpy(&v, value, 4);
        if (type == UTG_KV_F32) { float f; memcpy(&f, value, 4); if (!isfinite(f)) { utg__free(&w->alloc, e->bytes); utg__msgf(&w->msg, "META key %s: not finite", key); return UTG_ERR_INVALID; } }
        utg__wr_u32le(e->bytes, v);
    } else {
        uint64_t v;
        memcpy(&v, value, 8);
        if (type == UTG_KV_F64) { double f; memcpy(&f, value, 8); if (!isfinite(f)) { utg__free(&w->alloc, e->bytes); utg__msgf(&w->msg, "META key %s: not finite", key); return UTG_ERR_INVALID; } }
        utg__wr_u32le(e->bytes, (uint32_t)v);
        utg__wr_u32le(e->bytes + 4, (uint32_t)(v >> 32));
    }
    if (type == UTG_KV_F32_ARRAY)
        for (i = 0; i < count; i++) { float f; memcpy(&f, (const uint8_t *)value + 4 * i, 4); if (!isfinite(f)) { utg__free(&w->alloc, e->bytes); utg__msgf(&w->msg, "META key %s: element %zu not finite", key, i); return UTG_ERR_INVALID; } }
    w->n_kv++;
    return UTG_OK;
}

UTGDEF utg_result utg_artifact_add_tensor(utg_artifact_writer *w, const utg_artifact_tensor *src) {
    utg_artifact_tensor t;
    utg_result r;
    size_t nl;
    int j;
    void *v, *s = NULL;
    if (!w || !src || !src->values) return UTG_ERR_INVALID;
    t = *src;
    for (nl = 0; nl < sizeof src->name && src->name[nl]; nl++) {}
    if (nl >= sizeof src->name || !utg__name_ok(src->name, nl)) {
        utg__msgf(&w->msg, "tensor name is not 1..64 printable ASCII characters");
        return UTG_ERR_INVALID;
    }
    for (j = 0; j < w->n_t; j++)
        if (!strcmp(w->t[j].name, src->name)) {
            utg__msgf(&w->msg, "tensor %s added twice", src->name);
            return UTG_ERR_INVALID;
        }
    if (w->n_t >= UTG_ARTIFACT_MAX_TENSORS) {
        utg__msgf(&w->msg, "more than %d tensors", UTG_ARTIFACT_MAX_TENSORS);
        return UTG_ERR_INVALID;
    }
    if ((r = utg__tensor_check(&t, &w->msg)) != UTG_OK) return UTG_ERR_INVALID;
    if (t.scales_size && !src->scales) {
        utg__msgf(&w->msg, "tensor %s: no scales", t.name);
        return UTG_ERR_INVALID;
    }
    if (utg__tensor_check_planes(&t, &w->msg) != UTG_OK) return UTG_ERR_INVALID;
    if (!utg__grow(&w->alloc, (void **)&w->t, &w->cap_t, w->n_t + 1, sizeof *w->t)) return UTG_ERR_NOMEM;
    v = utg__alloc(&w->alloc, t.values_size);
    if (t.scales_size) s = utg__alloc(&w->alloc, t.scales_size);
    if (!v || (t.scales_size && !s)) {
        utg__free(&w->alloc, v);
        utg__free(&w->alloc, s);
        return UTG_ERR_NOMEM;
    }
    memcpy(v, t.values, t.values_size);
    if (s) memcpy(s, t.scales, t.scales_size);
    t.values = v;
    t.scales = s;
    w->t[w->n_t++] = t;
    return UTG_OK;
}

UTGDEF utg_result utg_artifact_add_section(utg_artifact_writer *w, const char tag[4], const void *bytes,
                                           size_t size) {
    utg__wsect *s;
    int i;
    if (!w || !tag || (size && !bytes) || size > 0xffffffffu) return UTG_ERR_INVALID;
    for (i = 0; i < 4; i++)
        if (!((tag[i] >= 'A' && tag[i] <= 'Z') || (tag[i] >= '0' && tag[i] <= '9'))) {
            utg__msgf(&w->msg, "section tag must be 4 of A-Z 0-9");
            return UTG_ERR_INVALID;
        }
    if (!memcmp(tag, "META", 4) || !memcmp(tag, "TENS", 4) || !memcmp(tag, "DATA", 4)) {
        utg__msgf(&w->msg, "%.4s is written by the writer itself", tag);
        return UTG_ERR_INVALID;
    }
    for (i = 0; i < w->n_s; i++)
        if (!memcmp(w->sect[i].tag, tag, 4)) {
            utg__msgf(&w->msg, "section %.4s added twice", tag);
            return UTG_ERR_INVALID;
        }
    if (w->n_s >= UTG_ARTIFACT_MAX_SECTIONS - 3) {
        utg__msgf(&w->msg, "too many sections");
        return UTG_ERR_INVALID;
    }
    s = &w->sect[w->n_s];
    s->bytes = (uint8_t *)utg__alloc(&w->alloc, size ? size : 1);
    if (!s->bytes) return UTG_ERR_NOMEM;
    memcpy(s->tag, tag, 4);
    if (size) memcpy(s->bytes, bytes, size);
    s->n = size;
    w->n_s++;
    return UTG_OK;
}

/* the group of a tensor for plane order: the name without its block number */
static void utg__plane_group(const char *name, char *out, size_t n) {
    const char *p = name;
    size_t o = 0;
    while (*p && o + 1 < n) {
        if (*p >= '0' && *p <= '9' && p > name && p[-1] == '.') { while (*p >= '0' && *p <= '9') p++; out[o++] = '#'; continue; }
        out[o++] = *p++;
    }
    out[o] = 0;
}

/* The plane order of the writer: by bit width, then group, then tensor index. */
typedef struct utg__plane_ord { int t, bits; char group[UTG_MAX_NAME + 1]; } utg__plane_ord;
static int utg__plane_cmp(const void *a, const void *b) {
    const utg__plane_ord *x = (const utg__plane_ord *)a, *y = (const utg__plane_ord *)b;
    int c;
    if (x->bits != y->bits) return x->bits - y->bits;
    c = strcmp(x->group, y->group);
    if (c) return c;
    return x->t - y->t;
}


/* Where utg_artifact_write puts each part of the payload */
typedef struct utg__wlayout {
    size_t meta_n, tens_n, data_n, off_meta, off_tens, off_data, total;
    size_t sect_off[UTG_ARTIFACT_MAX_SECTIONS];
    int n_sections;
} utg__wlayout;

/* Sets each tensor's plane offsets inside DATA, each 64-aligned: Q symbols (by bits, then group),
   scales, floats; returns DATA's size. ord: room for one entry per tensor. */
static size_t utg__artifact_place_planes(utg_artifact_writer *w, utg__plane_ord *ord) {
    size_t data_n = 0;
    int i, k, nq = 0;
    for (i = 0; i < w->n_t; i++)
        if (w->t[i].dtype == UTG_DT_Q) {
            ord[nq].t = i;
            ord[nq].bits = w->t[i].qbits;
            utg__plane_group(w->t[i].name, ord[nq].group, sizeof ord[nq].group);
            nq++;
        }
    qsort(ord, (size_t)nq, sizeof *ord, utg__plane_cmp);
    for (k = 0; k < nq; k++) {
        utg_artifact_tensor *t = &w->t[ord[k].t];
        data_n = utg__align_up(data_n, UTG_ARTIFACT_ALIGN);
        t->values_offset = (uint32_t)data_n;
        data_n += t->values_size;
    }
    for (i = 0; i < w->n_t; i++) {
        utg_artifact_tensor *t = &w->t[i];
        if (!t->scales_size) { t->scales_offset = 0; continue; }
        data_n = utg__align_up(data_n, UTG_ARTIFACT_ALIGN);
        t->scales_offset = (uint32_t)data_n;
        data_n += t->scales_size;
    }
    for (i = 0; i < w->n_t; i++) {
        utg_artifact_tensor *t = &w->t[i];
        if (t->dtype == UTG_DT_Q) continue;
        data_n = utg__align_up(data_n, UTG_ARTIFACT_ALIGN);
        t->values_offset = (uint32_t)data_n;
        data_n += t->values_size;
    }
    return data_n;
}

/* The payload's layout: header and directory, META, TENS, DATA, then the added sections, each
   64-aligned; refuses a payload over the cap. */
static utg_result utg__artifact_write_layout(utg_artifact_writer *w, utg__plane_ord *ord, utg__wlayout *L) {
    size_t pos;
    int i;
    L->meta_n = 4;
    L->tens_n = 4;
    for (i = 0; i < w->n_kv; i++) L->meta_n += 2 + strlen(w->kv[i].key) + 1 + w->kv[i].n;
    for (i = 0; i < w->n_t; i++)
        L->tens_n += 2 + 1 + strlen(w->t[i].name) + 8 + 4 * (size_t)w->t[i].ndim + 16;
    L->data_n = utg__artifact_place_planes(w, ord);
    L->n_sections = 3 + w->n_s;
    pos = 16 + 16 * (size_t)L->n_sections;
    L->off_meta = utg__align_up(pos, UTG_ARTIFACT_ALIGN);
    L->off_tens = utg__align_up(L->off_meta + L->meta_n, UTG_ARTIFACT_ALIGN);
    L->off_data = utg__align_up(L->off_tens + L->tens_n, UTG_ARTIFACT_ALIGN);
    L->total = L->off_data + L->data_n;
    for (i = 0; i < w->n_s; i++) {
        L->sect_off[i] = utg__align_up(L->total, UTG_ARTIFACT_ALIGN);
        L->total = L->sect_off[i] + w->sect[i].n;
    }
    if (L->total > UTG_MAX_ARTIFACT_RAW || L->data_n > 0xffffffffu) {
        utg__msgf(&w->msg, "payload of %zu bytes is over the cap %u", L->total,
                  (unsigned)UTG_MAX_ARTIFACT_RAW);
        return UTG_ERR_INVALID;
    }
    return UTG_OK;
}

/* One 16-byte directory entry at p: tag, flags, offset, size */
static void utg__artifact_write_entry(uint8_t *p, const char *tag, uint32_t flags, size_t off, size_t n) {
    memcpy(p, tag, 4);
    utg__wr_u32le(p + 4, flags);
    utg__wr_u32le(p + 8, (uint32_t)off);
    utg__wr_u32le(p + 12, (uint32_t)n);
}

/* The payload header and section directory (META, TENS and DATA critical), and the added sections' bytes */
static void utg__artifact_write_directory(const utg_artifact_writer *w, const utg__wlayout *L, uint8_t *pay) {
    uint8_t *p = pay + 16;
    int i;
    utg__wr_u16le(pay, UTG_ARTIFACT_MINOR);
    utg__wr_u16le(pay + 2, (uint32_t)L->n_sections);
    utg__wr_u16le(pay + 4, UTG_ARTIFACT_ALIGN);
    utg__artifact_write_entry(p, "META", 1, L->off_meta, L->meta_n); p += 16;
    utg__artifact_write_entry(p, "TENS", 1, L->off_tens, L->tens_n); p += 16;
    utg__artifact_write_entry(p, "DATA", 1, L->off_data, L->data_n); p += 16;
    for (i = 0; i < w->n_s; i++) {
        utg__artifact_write_entry(p, w->sect[i].tag, 0, L->sect_off[i], w->sect[i].n); p += 16;
        if (w->sect[i].n) memcpy(pay + L->sect_off[i], w->sect[i].bytes, w->sect[i].n);
    }
}

/* META at p: the key count, then each key's length, name, type and value bytes */
static void utg__artifact_write_meta(const utg_artifact_writer *w, uint8_t *p) {
    int i;
    utg__wr_u32le(p, (uint32_t)w->n_kv); p += 4;
    for (i = 0; i < w->n_kv; i++) {
        size_t kl = strlen(w->kv[i].key);
        utg__wr_u16le(p, (uint32_t)kl); memcpy(p + 2, w->kv[i].key, kl); p += 2 + kl;
        *p++ = (uint8_t)w->kv[i].type;
        memcpy(p, w->kv[i].bytes, w->kv[i].n); p += w->kv[i].n;
    }
}

/* TENS: one record per tensor (name, dtype fields, dims, plane offsets and sizes); and each tensor's
   planes into DATA, floats and scales byte-shuffled */
static void utg__artifact_write_tens(const utg_artifact_writer *w, const utg__wlayout *L, uint8_t *pay) {
    uint8_t *p = pay + L->off_tens;
    size_t off_data = L->off_data;
    int i;
    utg__wr_u32le(p, (uint32_t)w->n_t); p += 4;
    for (i = 0; i < w->n_t; i++) {
        const utg_artifact_tensor *t = &w->t[i];
        size_t nl = strlen(t->name), rl = 2 + 1 + nl + 8 + 4 * (size_t)t->ndim + 16;
        int d;
        utg__wr_u16le(p, (uint32_t)rl);
        p[2] = (uint8_t)nl; memcpy(p + 3, t->name, nl);
        p += 3 + nl;
        p[0] = (uint8_t)t->dtype;
        p[1] = (uint8_t)t->qbits;
        p[2] = (uint8_t)t->scale_kind;
        p[3] = (uint8_t)t->ndim;
        utg__wr_u16le(p + 4, (uint32_t)t->group); p[6] = 0; p[7] = 0;
        p += 8;
        for (d = 0; d < t->ndim; d++) { utg__wr_u32le(p, (uint32_t)t->dims[d]); p += 4; }
        utg__wr_u32le(p, t->values_offset); utg__wr_u32le(p + 4, (uint32_t)t->values_size);
        utg__wr_u32le(p + 8, t->scales_offset); utg__wr_u32le(p + 12, (uint32_t)t->scales_size);
        p += 16;
        /* planes */
        if (t->dtype == UTG_DT_Q) memcpy(pay + off_data + t->values_offset, t->values, t->values_size);
        else utg__shuffle(pay + off_data + t->values_offset, (const uint8_t *)t->values, t->numel,
                          utg__dtype_size(t->dtype));
        if (t->scales_size) {
            size_t es = t->scale_kind == UTG_SCALE_TENSOR ? 4 : 2;
            utg__shuffle(pay + off_data + t->scales_offset, (const uint8_t *)t->scales, t->scales_size / es,
                         es);
        }
    }
}

/* The packed payload behind its 20-byte envelope (magic, version, codec, sizes, CRC) in a new *env */
static utg_result utg__artifact_write_envelope(utg_artifact_writer *w, const utg_codec *codec,
                                               const uint8_t *pay, size_t total, uint8_t **envp,
                                               size_t *packed_np) {
    size_t packed_cap, packed_n;
    uint8_t *env;
    utg_result r;
    packed_cap = codec->max_packed(total, codec->user);
    if (packed_cap < total / 2 || packed_cap > 0xffffffffu - UTG_ARTIFACT_ENVELOPE)
        packed_cap = total + (total >> 2) + 1024;
    env = *envp = (uint8_t *)utg__alloc(&w->alloc, UTG_ARTIFACT_ENVELOPE + packed_cap);
    if (!env) return UTG_ERR_NOMEM;
    packed_n = packed_cap;
    if ((r = codec->compress(pay, total, env + UTG_ARTIFACT_ENVELOPE, &packed_n, codec->user)) != UTG_OK ||
        packed_n > packed_cap || packed_n > 0xffffffffu - UTG_ARTIFACT_ENVELOPE) {
        utg__msgf(&w->msg, "the %s codec failed to compress %zu bytes", codec->name ? codec->name : "given",
                  total);
        return r == UTG_OK ? UTG_ERR_BACKEND : r;
    }
    memcpy(env, "UTGA", 4);
    env[4] = UTG_ARTIFACT_MAJOR;
    env[5] = (uint8_t)codec->id;
    utg__wr_u16le(env + 6, 0);
    utg__wr_u32le(env + 8, (uint32_t)total);
    utg__wr_u32le(env + 12, (uint32_t)packed_n);
    utg__wr_u32le(env + 16, utg_crc32(0, pay, total));
    *packed_np = packed_n;
    return UTG_OK;
}

UTGDEF utg_result utg_artifact_write(utg_artifact_writer *w, const utg_codec *codec, void **out, size_t *out_size, size_t *raw_size_out) {
    utg_codec stored = utg_codec_stored();
    utg__wlayout L;
    utg__plane_ord *ord = NULL;
    uint8_t *pay = NULL, *env = NULL;
    size_t packed_n = 0;
    utg_result r = UTG_ERR_NOMEM;
    if (!w || !out || !out_size) return UTG_ERR_INVALID;
    *out = NULL;
    *out_size = 0;
    if (!codec) codec = &stored;
    if (!codec->compress || !codec->max_packed || codec->id < 0 || codec->id > 255) {
        utg__msgf(&w->msg, "codec lacks its callbacks");
        return UTG_ERR_INVALID;
    }
    memset(&L, 0, sizeof L);
    ord = (utg__plane_ord *)utg__alloc(&w->alloc, sizeof *ord * (size_t)(w->n_t ? w->n_t : 1));
    if (!ord) goto fail;
    if ((r = utg__artifact_write_layout(w, ord, &L)) != UTG_OK) goto fail;
    r = UTG_ERR_NOMEM;
    pay = (uint8_t *)utg__alloc(&w->alloc, L.total);
    if (!pay) goto fail;
    memset(pay, 0, L.total);
    utg__artifact_write_directory(w, &L, pay);
    utg__artifact_write_meta(w, pay + L.off_meta);
    utg__artifact_write_tens(w, &L, pay);
    if ((r = utg__artifact_write_envelope(w, codec, pay, L.total, &env, &packed_n)) != UTG_OK) goto fail;
    utg__free(&w->alloc, pay);
    utg__free(&w->alloc, ord);
    *out = env;
    *out_size = UTG_ARTIFACT_ENVELOPE + packed_n;
    if (raw_size_out) *raw_size_out = L.total;
    return UTG_OK;
fail:
    utg__free(&w->alloc, ord);
    utg__free(&w->alloc, pay);
    utg__free(&w->alloc, env);
    if (r == UTG_ERR_NOMEM) utg__msgf(&w->msg, "out of memory writing the artifact");
    return r;
}

/* ---- parser ---- */

/* A plane's byte span in the parser, for the overlap check; utg__strptr_cmp sorts name pointers. */
typedef struct utg__pspan { uint32_t off, end; int t; } utg__pspan;
static int utg__strptr_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }
/* Names that appear twice among n records (a name field every `stride` bytes from `first`): sorted
   pointers, so O(n log n). UTG_OK, or UTG_ERR_FORMAT with *dup set, or UTG_ERR_NOMEM. */
static utg_result utg__find_duplicate(const utg_allocator *al, const char *first, size_t stride, size_t n,
                                      const char **dup) {
    const char **names = (const char **)utg__alloc(al, sizeof *names * (n ? n : 1));
    size_t j;
    *dup = NULL;
    if (!names) return UTG_ERR_NOMEM;
    for (j = 0; j < n; j++) names[j] = first + j * stride;
    qsort(names, n, sizeof *names, utg__strptr_cmp);
    for (j = 1; j < n && !*dup; j++) if (!strcmp(names[j - 1], names[j])) *dup = names[j];
    utg__free(al, names);
    return *dup ? UTG_ERR_FORMAT : UTG_OK;
}
/* qsort order of plane spans by offset, then end. */
static int utg__plane_span_cmp(const void *a, const void *b) {
    const utg__pspan *x = (const utg__pspan *)a, *y = (const utg__pspan *)b;
    return x->off < y->off ? -1 : x->off > y->off ? 1 : (x->end < y->end ? -1 : x->end > y->end ? 1 : 0);
}

UTGDEF void utg_artifact_free(utg_artifact *a) {
    utg_allocator al;
    if (!a) return;
    al = a->alloc;
    utg__free(&al, a->block);
    utg__free(&al, a->strings);
    utg__free(&al, a->kv);
    utg__free(&al, a->tensors);
    utg__free(&al, a);
}

/* What utg_artifact_parse carries from one checklist stage to the next; the stages below fail
   through UTG__AF, which leaves a message and returns r (UTG_ERR_FORMAT unless a stage says else). */
typedef struct utg__aparse {
    const uint8_t *b; /* the file: envelope, then the packed payload */
    size_t size;
    utg_allocator al;
    utg_codec dec;
    utg_msg *msg;
    utg_artifact *a;      /* allocated once the envelope passes; freed by the caller on failure */
    uint8_t *pay;         /* the decoded payload, 64-aligned inside a->block */
    utg__pspan *spans;    /* scratch: the DATA planes, two per tensor */
    uint8_t *tmp;         /* scratch of max_plane bytes for the unshuffle */
    uint32_t flags, raw, packed, crc;
    const utg_artifact_section *meta, *tens, *data;
    size_t max_plane;
} utg__aparse;
#define UTG__AF(...) do { utg__msgf(ps->msg, __VA_ARGS__); return r; } while (0)

/* Stage 1, the 20-byte envelope: magic, major version, must-understand flags, a decoder for its
   codec, the payload cap and the packed size against the file's. */
static utg_result utg__artifact_parse_envelope(utg__aparse *ps, const utg_codec *decoder) {
    const uint8_t *b = ps->b;
    utg_result r = UTG_ERR_FORMAT;
    int have_dec;
    if (ps->size < UTG_ARTIFACT_ENVELOPE)
        UTG__AF("artifact is %zu bytes, shorter than its 20-byte envelope", ps->size);
    if (memcmp(b, "UTGA", 4)) UTG__AF("not a UTGA artifact (magic %02x %02x %02x %02x)", b[0], b[1], b[2], b[3]);
    if (b[4] != UTG_ARTIFACT_MAJOR) {
        r = UTG_ERR_UNSUPPORTED;
        UTG__AF("artifact format version %u; this build reads version %d", b[4], UTG_ARTIFACT_MAJOR);
    }
    ps->flags = utg__rd_u16le(b + 6);
    if (ps->flags & 0xffu) {
        r = UTG_ERR_UNSUPPORTED;
        UTG__AF("artifact sets must-understand flags 0x%02x this build does not know", ps->flags & 0xffu);
    }
    if (decoder && decoder->id == b[5] && decoder->decompress && b[5] != UTG_CODEC_STORED) {
        ps->dec = *decoder;
        have_dec = 1;
    } else have_dec = utg_codec_for_id(b[5], &ps->dec);
    if (!have_dec) {
        r = UTG_ERR_UNSUPPORTED;
        if (b[5] == UTG_CODEC_BROTLI)
            UTG__AF("artifact is brotli-compressed and no brotli decoder was given (build with UTG_USE_BROTLI)");
        UTG__AF("artifact uses codec %u, which this build does not know", b[5]);
    }
    ps->raw = utg__rd_u32le(b + 8);
    ps->packed = utg__rd_u32le(b + 12);
    ps->crc = utg__rd_u32le(b + 16);
    if (ps->raw > UTG_MAX_ARTIFACT_RAW)
        UTG__AF("artifact payload of %u bytes is over the cap of %u", ps->raw, (unsigned)UTG_MAX_ARTIFACT_RAW);
    if ((uint64_t)ps->packed + UTG_ARTIFACT_ENVELOPE != (uint64_t)ps->size)
        UTG__AF("artifact envelope says %u packed bytes, the file holds %zu (truncated or padded)", ps->packed,
                ps->size - UTG_ARTIFACT_ENVELOPE);
    if (ps->raw < 16) UTG__AF("artifact payload of %u bytes is shorter than its header", ps->raw);
    return UTG_OK;
}

/* Stage 2: allocate the artifact, decode the payload into exactly raw bytes, check its CRC. */
static utg_result utg__artifact_parse_decode(utg__aparse *ps) {
    const uint8_t *b = ps->b;
    utg_artifact *a;
    utg_result r = UTG_ERR_FORMAT;
    a = ps->a = (utg_artifact *)utg__alloc(&ps->al, sizeof *a);
    if (!a) { r = UTG_ERR_NOMEM; UTG__AF("out of memory"); }
    memset(a, 0, sizeof *a);
    a->alloc = ps->al;
    a->block = utg__alloc(&ps->al, (size_t)ps->raw + UTG_ARTIFACT_ALIGN);
    if (!a->block) { r = UTG_ERR_NOMEM; UTG__AF("out of memory for a %u-byte payload", ps->raw); }
    ps->pay = (uint8_t *)a->block +
              ((UTG_ARTIFACT_ALIGN - ((uintptr_t)a->block % UTG_ARTIFACT_ALIGN)) % UTG_ARTIFACT_ALIGN);
    if (ps->dec.decompress(b + UTG_ARTIFACT_ENVELOPE, ps->packed, ps->pay, ps->raw, ps->dec.user) != UTG_OK)
        UTG__AF("artifact payload does not decode to its declared %u bytes", ps->raw);
    if (utg_crc32(0, ps->pay, ps->raw) != ps->crc)
        UTG__AF("artifact payload CRC mismatch (stored %08x, computed %08x)", ps->crc,
                utg_crc32(0, ps->pay, ps->raw));
    a->major = b[4]; a->codec = b[5]; a->flags = (int)ps->flags;
    a->raw_size = ps->raw; a->packed_size = ps->packed; a->crc = ps->crc;
    a->payload = ps->pay;
    return UTG_OK;
}

/* Directory entry i: tag syntax, flags, tiling right after the previous section (*prev_end) over zero
   padding, no repeated tag; notes META, TENS and DATA (which must be critical), refuses an unknown
   critical section. */
static utg_result utg__artifact_parse_section(utg__aparse *ps, uint32_t i, uint32_t *prev_end) {
    const uint8_t *pay = ps->pay, *e = pay + 16 + 16 * (size_t)i;
    utg_artifact_section *s = &ps->a->sections[i];
    uint32_t want, c, raw = ps->raw;
    utg_result r = UTG_ERR_FORMAT;
    int k;
    memcpy(s->tag, e, 4);
    s->tag[4] = 0;
    s->flags = utg__rd_u32le(e + 4);
    s->offset = utg__rd_u32le(e + 8);
    s->size = utg__rd_u32le(e + 12);
    for (k = 0; k < 4; k++)
        if (!((e[k] >= 'A' && e[k] <= 'Z') || (e[k] >= '0' && e[k] <= '9')))
            UTG__AF("section %u has a malformed tag", i);
    if (s->flags & ~1u) UTG__AF("section %s has unknown flags 0x%x", s->tag, s->flags);
    want = (uint32_t)utg__align_up(*prev_end, UTG_ARTIFACT_ALIGN);
    if (s->offset != want)
        UTG__AF("section %s starts at %u; sections must tile the payload (expected %u)", s->tag, s->offset,
                want);
    if (s->size > raw - s->offset || s->offset > raw)
        UTG__AF("section %s (%u bytes at %u) runs past the payload", s->tag, s->size, s->offset);
    for (c = *prev_end; c < s->offset; c++)
        if (pay[c]) UTG__AF("padding before section %s is not zero", s->tag);
    *prev_end = s->offset + s->size;
    for (k = 0; k < (int)i; k++)
        if (!memcmp(ps->a->sections[k].tag, s->tag, 4)) UTG__AF("section %s appears twice", s->tag);
    if (!memcmp(s->tag, "META", 4)) ps->meta = s;
    else if (!memcmp(s->tag, "TENS", 4)) ps->tens = s;
    else if (!memcmp(s->tag, "DATA", 4)) ps->data = s;
    else if (s->flags & 1u) {
        r = UTG_ERR_UNSUPPORTED;
        UTG__AF("critical section %s is unknown to this build", s->tag);
    }
    if ((ps->meta == s || ps->tens == s || ps->data == s) && !(s->flags & 1u))
        UTG__AF("section %s must be critical", s->tag);
    return UTG_OK;
}

/* Stage 3: the payload header and its section directory, which must tile the payload to its end and
   hold META, TENS and DATA. */
static utg_result utg__artifact_parse_directory(utg__aparse *ps) {
    utg_artifact *a = ps->a;
    const uint8_t *pay = ps->pay;
    uint32_t nsec, align, i, prev_end, raw = ps->raw;
    utg_result r = UTG_ERR_FORMAT, sr;
    a->minor = (int)utg__rd_u16le(pay);
    nsec = utg__rd_u16le(pay + 2);
    align = utg__rd_u16le(pay + 4);
    if (align != UTG_ARTIFACT_ALIGN) UTG__AF("payload plane alignment is %u, expected 64", align);
    for (i = 6; i < 16; i++) if (pay[i]) UTG__AF("payload header reserved byte %u is not zero", i);
    if (nsec < 3 || nsec > UTG_ARTIFACT_MAX_SECTIONS)
        UTG__AF("payload has %u sections (3..%d)", nsec, UTG_ARTIFACT_MAX_SECTIONS);
    if (16 + 16 * (size_t)nsec > raw) UTG__AF("section directory runs past the payload");
    prev_end = 16 + 16 * nsec;
    for (i = 0; i < nsec; i++)
        if ((sr = utg__artifact_parse_section(ps, i, &prev_end)) != UTG_OK) return sr;
    if (prev_end != raw) UTG__AF("payload has %u bytes after its last section", raw - prev_end);
    if (!ps->meta || !ps->tens || !ps->data) UTG__AF("payload lacks a META, TENS or DATA section");
    a->n_sections = (int)nsec;
    a->data_offset = ps->data->offset;
    a->data_size = ps->data->size;
    return UTG_OK;
}

/* The value of a scalar META key at p (es = 4 or 8 bytes, of [p, end)): as u, i and f; floats finite. */
static utg_result utg__artifact_parse_kv_scalar(utg__aparse *ps, utg_artifact_kv *kv, uint32_t es,
                                                const uint8_t *p, const uint8_t *end) {
    utg_result r = UTG_ERR_FORMAT;
    if ((size_t)(end - p) < es) UTG__AF("META key %s runs past its section", kv->key);
    kv->count = 1;
    kv->data = p;
    if (es == 4) {
        uint32_t v = utg__rd_u32le(p);
        float f;
        memcpy(&f, &v, 4);
        kv->u = v; kv->i = (int32_t)v; kv->f = f;
    } else {
        uint64_t v = utg__rd_u64le(p);
        double f;
        memcpy(&f, &v, 8);
        kv->u = v; kv->i = (int64_t)v; kv->f = f;
    }
    if ((kv->type == UTG_KV_F32 || kv->type == UTG_KV_F64) && !isfinite(kv->f))
        UTG__AF("META key %s is not finite", kv->key);
    return UTG_OK;
}

/* META record i at *p (of [*p, end)): key, type, then a counted string or array or one scalar; moves
   *p past it. */
static utg_result utg__artifact_parse_kv(utg__aparse *ps, uint32_t i, const uint8_t **pp,
                                         const uint8_t *end) {
    utg_artifact_kv *kv = &ps->a->kv[i];
    const uint8_t *p = *pp;
    uint32_t kl, es;
    size_t j;
    utg_result r = UTG_ERR_FORMAT, sr;
    memset(kv, 0, sizeof *kv);
    if (end - p < 3) UTG__AF("META key %u runs past its section", i);
    kl = utg__rd_u16le(p);
    if ((size_t)(end - p) < 3 + (size_t)kl) UTG__AF("META key %u runs past its section", i);
    if (!utg__kv_key_ok((const char *)p + 2, kl))
        UTG__AF("META key %u is not dotted lower_snake of 1..64 bytes", i);
    memcpy(kv->key, p + 2, kl);
    kv->key[kl] = 0;
    p += 2 + kl;
    if (*p > UTG_KV_F32_ARRAY) UTG__AF("META key %s has unknown type %u", kv->key, *p);
    kv->type = (utg_kv_type)*p++;
    es = (uint32_t)utg__kv_elem(kv->type);
    if (kv->type == UTG_KV_STR || kv->type == UTG_KV_U32_ARRAY || kv->type == UTG_KV_F32_ARRAY) {
        if (end - p < 4) UTG__AF("META key %s runs past its section", kv->key);
        kv->count = utg__rd_u32le(p);
        p += 4;
        if (kv->count > UTG_ARTIFACT_MAX_ARRAY || (uint64_t)kv->count * es > (uint64_t)(end - p))
            UTG__AF("META key %s: %u elements run past its section", kv->key, kv->count);
        kv->data = p;
        p += (size_t)kv->count * es;
        if (kv->type == UTG_KV_F32_ARRAY)
            for (j = 0; j < kv->count; j++)
                if (!isfinite(utg_artifact_kv_f32(kv, (uint32_t)j)))
                    UTG__AF("META key %s: element %zu is not finite", kv->key, j);
    } else {
        if ((sr = utg__artifact_parse_kv_scalar(ps, kv, es, p, end)) != UTG_OK) return sr;
        p += es;
    }
    *pp = p;
    return UTG_OK;
}

/* Copies every string value of META, NUL-terminated, into one block (kv->str points into it). */
static utg_result utg__artifact_parse_strings(utg__aparse *ps) {
    utg_artifact *a = ps->a;
    size_t sn = 1, so = 0;
    char *sp;
    int k;
    utg_result r = UTG_ERR_FORMAT;
    for (k = 0; k < a->n_kv; k++) if (a->kv[k].type == UTG_KV_STR) sn += (size_t)a->kv[k].count + 1;
    a->strings = utg__alloc(&ps->al, sn);
    if (!a->strings) { r = UTG_ERR_NOMEM; UTG__AF("out of memory"); }
    sp = (char *)a->strings;
    for (k = 0; k < a->n_kv; k++) {
        if (a->kv[k].type != UTG_KV_STR) continue;
        if (a->kv[k].count) memcpy(sp + so, a->kv[k].data, a->kv[k].count);
        sp[so + a->kv[k].count] = 0;
        a->kv[k].str = sp + so;
        so += (size_t)a->kv[k].count + 1;
    }
    return UTG_OK;
}

/* Stage 4, META: its key count, every record, no stray bytes, no key twice; then the strings. */
static utg_result utg__artifact_parse_meta(utg__aparse *ps) {
    utg_artifact *a = ps->a;
    const uint8_t *p = ps->pay + ps->meta->offset, *end = p + ps->meta->size;
    const char *dup;
    uint32_t n, i;
    utg_result r = UTG_ERR_FORMAT, sr, dr;
    if (ps->meta->size < 4) UTG__AF("META is too short");
    n = utg__rd_u32le(p);
    p += 4;
    if (n > UTG_ARTIFACT_MAX_KV) UTG__AF("META has %u keys (at most %d)", n, UTG_ARTIFACT_MAX_KV);
    a->kv = (utg_artifact_kv *)utg__alloc(&ps->al, sizeof *a->kv * (n ? n : 1));
    if (!a->kv) { r = UTG_ERR_NOMEM; UTG__AF("out of memory"); }
    for (i = 0; i < n; i++) {
        if ((sr = utg__artifact_parse_kv(ps, i, &p, end)) != UTG_OK) return sr;
        a->n_kv = (int)i + 1;
    }
    if (p != end) UTG__AF("META has %zu stray bytes", (size_t)(end - p));
    if (n && (dr = utg__find_duplicate(&ps->al, a->kv[0].key, sizeof *a->kv, n, &dup)) != UTG_OK) {
        if (dr == UTG_ERR_NOMEM) { r = UTG_ERR_NOMEM; UTG__AF("out of memory"); }
        UTG__AF("META key %s appears twice", dup);
    }
    return utg__artifact_parse_strings(ps);
}

/* Tensor i's four plane fields at q (value offset and size, scale offset and size), after the record's
   own checks: sizes its shape needs, aligned inside DATA; records the planes as spans. */
static utg_result utg__artifact_parse_tensor_planes(utg__aparse *ps, uint32_t i, const uint8_t *q) {
    utg_artifact_tensor *t = &ps->a->tensors[i];
    const utg_artifact_section *data = ps->data;
    utg__pspan *spans = ps->spans;
    uint32_t vo, vs, so, ss;
    utg_result r = UTG_ERR_FORMAT;
    vo = utg__rd_u32le(q); vs = utg__rd_u32le(q + 4); so = utg__rd_u32le(q + 8); ss = utg__rd_u32le(q + 12);
    if (utg__tensor_check(t, ps->msg) != UTG_OK) return r;
    if (vs != t->values_size)
        UTG__AF("tensor %s: value plane of %u bytes, its shape needs %zu", t->name, vs, t->values_size);
    if (ss != t->scales_size)
        UTG__AF("tensor %s: scale plane of %u bytes, expected %zu", t->name, ss, t->scales_size);
    if (vo % UTG_ARTIFACT_ALIGN || (uint64_t)vo + vs > data->size)
        UTG__AF("tensor %s: value plane at %u is unaligned or outside DATA", t->name, vo);
    if (ss && (so % UTG_ARTIFACT_ALIGN || (uint64_t)so + ss > data->size))
        UTG__AF("tensor %s: scale plane at %u is unaligned or outside DATA", t->name, so);
    if (!ss && so) UTG__AF("tensor %s: scale offset without scales", t->name);
    t->values_offset = vo;
    t->scales_offset = so;
    t->values = ps->pay + data->offset + vo;
    t->scales = ss ? ps->pay + data->offset + so : NULL;
    spans[2 * i].off = vo; spans[2 * i].end = vo + vs; spans[2 * i].t = (int)i;
    spans[2 * i + 1].off = so; spans[2 * i + 1].end = so + ss; spans[2 * i + 1].t = ss ? (int)i : -1;
    if (vs > ps->max_plane) ps->max_plane = vs;
    if (ss > ps->max_plane) ps->max_plane = ss;
    return UTG_OK;
}

/* TENS record i at *p (of [*p, end)): length, name, dtype fields, dims, then its planes; moves *p past it. */
static utg_result utg__artifact_parse_tensor(utg__aparse *ps, uint32_t i, const uint8_t **pp,
                                             const uint8_t *end) {
    utg_artifact_tensor *t = &ps->a->tensors[i];
    const uint8_t *p = *pp, *q;
    uint32_t rl, nl, base;
    int k;
    utg_result r = UTG_ERR_FORMAT, sr;
    memset(t, 0, sizeof *t);
    if (end - p < 3) UTG__AF("tensor record %u runs past TENS", i);
    rl = utg__rd_u16le(p);
    nl = p[2];
    if (rl > (size_t)(end - p)) UTG__AF("tensor record %u (%u bytes) runs past TENS", i, rl);
    if (rl < 3 + nl + 8) UTG__AF("tensor record %u is too short", i);
    if (!utg__name_ok((const char *)p + 3, nl))
        UTG__AF("tensor record %u has a name that is not 1..64 printable ASCII characters", i);
    memcpy(t->name, p + 3, nl);
    t->name[nl] = 0;
    q = p + 3 + nl;
    t->dtype = (utg_dtype)q[0];
    t->qbits = q[1];
    t->scale_kind = (utg_scale_kind)q[2];
    t->ndim = q[3];
    t->group = (int)utg__rd_u16le(q + 4);
    if (q[6] || q[7]) UTG__AF("tensor %s: reserved bytes are not zero", t->name);
    if (t->ndim < 1 || t->ndim > UTG_MAX_DIMS) UTG__AF("tensor %s: %d dims (1..4)", t->name, t->ndim);
    base = 3 + nl + 8;
    if (rl < base + 4 * (uint32_t)t->ndim + 16) UTG__AF("tensor record %s is too short", t->name);
    for (k = 0; k < t->ndim; k++) t->dims[k] = utg__rd_u32le(q + 8 + 4 * k);
    q += 8 + 4 * t->ndim;
    if ((sr = utg__artifact_parse_tensor_planes(ps, i, q)) != UTG_OK) return sr;
    *pp = p + rl;
    return UTG_OK;
}

/* The DATA planes of every tensor: no two overlap, and every byte outside them is zero padding. */
static utg_result utg__artifact_parse_planes(utg__aparse *ps) {
    utg_artifact *a = ps->a;
    utg__pspan *spans = ps->spans;
    const uint8_t *dp = ps->pay + ps->data->offset;
    size_t j, ns = 0;
    uint32_t at = 0, c;
    utg_result r = UTG_ERR_FORMAT;
    for (j = 0; j < 2 * (size_t)a->n_tensors; j++)
        if (spans[j].t >= 0 && spans[j].end > spans[j].off) spans[ns++] = spans[j];
    qsort(spans, ns, sizeof *spans, utg__plane_span_cmp);
    for (j = 1; j < ns; j++)
        if (spans[j].off < spans[j - 1].end)
            UTG__AF("planes of %s and %s overlap in DATA", a->tensors[spans[j - 1].t].name,
                    a->tensors[spans[j].t].name);
    for (j = 0; j <= ns; j++) {
        uint32_t to = j < ns ? spans[j].off : ps->data->size;
        for (c = at; c < to; c++) if (dp[c]) UTG__AF("DATA has a non-zero byte at %u outside every plane", c);
        if (j < ns) at = spans[j].end;
    }
    return UTG_OK;
}

/* Stage 5, TENS: its tensor count, every record, no stray bytes, no name twice; then the planes. */
static utg_result utg__artifact_parse_tens(utg__aparse *ps) {
    utg_artifact *a = ps->a;
    const uint8_t *p = ps->pay + ps->tens->offset, *end = p + ps->tens->size;
    const char *dup;
    uint32_t n, i;
    utg_result r = UTG_ERR_FORMAT, sr, dr;
    if (ps->tens->size < 4) UTG__AF("TENS is too short");
    n = utg__rd_u32le(p);
    p += 4;
    if (n > UTG_ARTIFACT_MAX_TENSORS || (size_t)n * 30 > ps->tens->size) UTG__AF("TENS claims %u tensors", n);
    a->tensors = (utg_artifact_tensor *)utg__alloc(&ps->al, sizeof *a->tensors * (n ? n : 1));
    ps->spans = (utg__pspan *)utg__alloc(&ps->al, sizeof *ps->spans * 2 * (n ? n : 1));
    if (!a->tensors || !ps->spans) { r = UTG_ERR_NOMEM; UTG__AF("out of memory"); }
    for (i = 0; i < n; i++) {
        if ((sr = utg__artifact_parse_tensor(ps, i, &p, end)) != UTG_OK) return sr;
        a->n_tensors = (int)i + 1;
    }
    if (p != end) UTG__AF("TENS has %zu stray bytes", (size_t)(end - p));
    if (n && (dr = utg__find_duplicate(&ps->al, a->tensors[0].name, sizeof *a->tensors, n, &dup)) != UTG_OK) {
        if (dr == UTG_ERR_NOMEM) { r = UTG_ERR_NOMEM; UTG__AF("out of memory"); }
        UTG__AF("tensor %s appears twice", dup);
    }
    return utg__artifact_parse_planes(ps);
}

/* Stage 6: unshuffle the float and scale planes in place, then the symbol and scale checks. */
static utg_result utg__artifact_parse_unshuffle(utg__aparse *ps) {
    utg_artifact *a = ps->a;
    int k;
    utg_result r = UTG_ERR_FORMAT;
    ps->tmp = (uint8_t *)utg__alloc(&ps->al, ps->max_plane ? ps->max_plane : 1);
    if (!ps->tmp) { r = UTG_ERR_NOMEM; UTG__AF("out of memory"); }
    for (k = 0; k < a->n_tensors; k++) {
        utg_artifact_tensor *t = &a->tensors[k];
        if (t->dtype != UTG_DT_Q && t->values_size) {
            memcpy(ps->tmp, t->values, t->values_size);
            utg__unshuffle((uint8_t *)t->values, ps->tmp, t->numel, utg__dtype_size(t->dtype));
        }
        if (t->scales_size) {
            size_t es = t->scale_kind == UTG_SCALE_TENSOR ? 4 : 2;
            memcpy(ps->tmp, t->scales, t->scales_size);
            utg__unshuffle((uint8_t *)t->scales, ps->tmp, t->scales_size / es, es);
        }
        if (utg__tensor_check_planes(t, ps->msg) != UTG_OK) return r;
    }
    return UTG_OK;
}

/* Stage 7: the required keys, and the schedule's block indices below utg.plan.physical_blocks. */
static utg_result utg__artifact_parse_required(utg__aparse *ps) {
    const utg_artifact *a = ps->a;
    int ka = utg_artifact_find_kv(a, "utg.arch"), kq = utg_artifact_find_kv(a, "utg.quant.version");
    int kb = utg_artifact_find_kv(a, "utg.plan.physical_blocks");
    int kl = utg_artifact_find_kv(a, "utg.plan.layers");
    size_t j;
    utg_result r = UTG_ERR_FORMAT;
    if (ka < 0 || a->kv[ka].type != UTG_KV_STR) UTG__AF("META lacks the string utg.arch");
    if (kq < 0 || a->kv[kq].type != UTG_KV_U32) UTG__AF("META lacks the u32 utg.quant.version");
    if (kb < 0 || a->kv[kb].type != UTG_KV_U32) UTG__AF("META lacks the u32 utg.plan.physical_blocks");
    if (kl < 0 || a->kv[kl].type != UTG_KV_U32_ARRAY) UTG__AF("META lacks the u32 array utg.plan.layers");
    for (j = 0; j < a->kv[kl].count; j++)
        if (utg_artifact_kv_u32(&a->kv[kl], (uint32_t)j) >= a->kv[kb].u)
            UTG__AF("utg.plan.layers[%zu] = %u names a block past utg.plan.physical_blocks = %llu", j,
                    utg_artifact_kv_u32(&a->kv[kl], (uint32_t)j), (unsigned long long)a->kv[kb].u);
    return UTG_OK;
}
#undef UTG__AF

UTGDEF utg_result utg_artifact_parse(const void *bytes, size_t size, const utg_codec *decoder,
                                     const utg_allocator *alloc, utg_artifact **out, utg_msg *msg) {
    utg__aparse ps;
    utg_result r;
    if (out) *out = NULL;
    if (!out || (!bytes && size)) { utg__msgf(msg, "no artifact given"); return UTG_ERR_INVALID; }
    memset(&ps, 0, sizeof ps);
    ps.b = (const uint8_t *)bytes;
    ps.size = size;
    ps.msg = msg;
    if (alloc) ps.al = *alloc;
    r = utg__artifact_parse_envelope(&ps, decoder);
    if (r == UTG_OK) r = utg__artifact_parse_decode(&ps);
    if (r == UTG_OK) r = utg__artifact_parse_directory(&ps);
    if (r == UTG_OK) r = utg__artifact_parse_meta(&ps);
    if (r == UTG_OK) r = utg__artifact_parse_tens(&ps);
    if (r == UTG_OK) r = utg__artifact_parse_unshuffle(&ps);
    if (r == UTG_OK) r = utg__artifact_parse_required(&ps);
    utg__free(&ps.al, ps.spans);
    utg__free(&ps.al, ps.tmp);
    if (r != UTG_OK) {
        utg_artifact_free(ps.a);
        return r;
    }
    *out = ps.a;
    return UTG_OK;
}

UTGDEF int utg_artifact_find_kv(const utg_artifact *a, const char *key) {
    int i;
    if (!a || !key) return -1;
    for (i = 0; i < a->n_kv; i++) if (!strcmp(a->kv[i].key, key)) return i;
    return -1;
}
UTGDEF int utg_artifact_find_tensor(const utg_artifact *a, const char *name) {
    int i;
    if (!a || !name) return -1;
    for (i = 0; i < a->n_tensors; i++) if (!strcmp(a->tensors[i].name, name)) return i;
    return -1;
}
UTGDEF uint32_t utg_artifact_kv_u32(const utg_artifact_kv *kv, uint32_t index) {
    if (!kv || !kv->data || index >= kv->count || kv->type != UTG_KV_U32_ARRAY) return 0;
    return utg__rd_u32le(kv->data + 4 * (size_t)index);
}
UTGDEF float utg_artifact_kv_f32(const utg_artifact_kv *kv, uint32_t index) {
    uint32_t v;
    float f;
    if (!kv || !kv->data || index >= kv->count || kv->type != UTG_KV_F32_ARRAY) return 0.0f;
    v = utg__rd_u32le(kv->data + 4 * (size_t)index);
    memcpy(&f, &v, 4);
    return f;
}

UTGDEF utg_result utg_artifact_tensor_floats(const utg_artifact *a, int index, float *dst, size_t n) {
    const utg_artifact_tensor *t;
    size_t i;
    if (!a || index < 0 || index >= a->n_tensors || !dst) return UTG_ERR_INVALID;
    t = &a->tensors[index];
    if (n != t->numel) return UTG_ERR_MISMATCH;
    switch (t->dtype) {
    case UTG_DT_F32: memcpy(dst, t->values, n * 4); break;
    case UTG_DT_F16: {
        const uint16_t *h = (const uint16_t *)t->values;
        for (i = 0; i < n; i++) dst[i] = utg__f16_to_f32(h[i]);
    } break;
    case UTG_DT_BF16: {
        const uint16_t *h = (const uint16_t *)t->values;
        for (i = 0; i < n; i++) { uint32_t v = (uint32_t)h[i] << 16; memcpy(&dst[i], &v, 4); }
    } break;
    case UTG_DT_Q: {
        const int8_t *q = (const int8_t *)t->values;
        const uint16_t *s16 = (const uint16_t *)t->scales;
        if (t->scale_kind == UTG_SCALE_TENSOR) {
            float s;
            memcpy(&s, t->scales, 4);
            for (i = 0; i < n; i++) dst[i] = (float)q[i] * s;
        } else if (t->scale_kind == UTG_SCALE_ROW) {
            size_t rows = (size_t)t->dims[0], cols = n / rows, r2;
            for (r2 = 0; r2 < rows; r2++) {
                float s = utg__f16_to_f32(s16[r2]);
                for (i = 0; i < cols; i++) dst[r2 * cols + i] = (float)q[r2 * cols + i] * s;
            }
        } else
            for (i = 0; i < n; i++) dst[i] = (float)q[i] * utg__f16_to_f32(s16[i / (size_t)t->group]);
    } break;
    case UTG_DT_F64: return UTG_ERR_FORMAT; /* not an artifact type: the parser refuses it */
    }
    return UTG_OK;
}

/* Shannon entropy of n int8 symbols in bits per symbol: a lower bound on what a codec can reach. */
static double utg__entropy_i8(const int8_t *q, size_t n) {
    size_t hist[256], i;
    double h = 0.0;
    memset(hist, 0, sizeof hist);
    for (i = 0; i < n; i++) hist[(uint8_t)q[i]]++;
    for (i = 0; i < 256; i++) if (hist[i]) { double p = (double)hist[i] / (double)n; h -= p * log2(p); }
    return h;
}
UTGDEF double utg_artifact_tensor_entropy(const utg_artifact *a, int index) {
    if (!a || index < 0 || index >= a->n_tensors || a->tensors[index].dtype != UTG_DT_Q) return 0.0;
    return utg__entropy_i8((const int8_t *)a->tensors[index].values, a->tensors[index].numel);
}

/* ---- the model and its artifact ---- */

/* the knobs an artifact carries: everything that shapes the model or its evaluation */
#define UTG__ART_KNOB(k) (utg__knobs[k].info.flags & (UTG_KF_ARENA | UTG_KF_EVAL))

/* The kv key of a knob stored in an artifact: "utg.config." + its utg_config field name. */
static void utg__art_key(char *key, size_t n, int knob) {
    size_t i, o = (size_t)snprintf(key, n, "utg.config.");
    const char *f = utg__knobs[knob].info.field_name;
    for (i = 0; f[i] && o + 1 < n; i++) key[o++] = f[i];
    key[o] = 0;
}

UTGDEF utg_result utg_artifact_config(const utg_artifact *a, utg_config *cfg, utg_msg *msg) {
    utg_config c;
    int i;
    if (!a || !cfg) return UTG_ERR_INVALID;
    memset(&c, 0, sizeof c);
    for (i = 0; i < a->n_kv; i++) {
        const utg_artifact_kv *kv = &a->kv[i];
        int k;
        if (strncmp(kv->key, "utg.config.", 11)) continue;
        k = utg_config_find_knob(kv->key + 11);
        if (k < 0 || strcmp(utg__knobs[k].info.field_name, kv->key + 11)) continue; /* unknown: ignored */
        switch (utg__knobs[k].info.kind) {
        case UTG_KNOB_INT:
        case UTG_KNOB_BOOL:
            if (kv->type != UTG_KV_I32) { utg__msgf(msg, "META %s must be i32", kv->key); return UTG_ERR_FORMAT; }
            *(int *)utg__knob_ptr(&c, k) = (int)kv->i;
            break;
        case UTG_KNOB_REAL:
            if (kv->type != UTG_KV_F64) { utg__msgf(msg, "META %s must be f64", kv->key); return UTG_ERR_FORMAT; }
            *(double *)utg__knob_ptr(&c, k) = kv->f;
            break;
        case UTG_KNOB_STR:
        case UTG_KNOB_ENUM:
            if (kv->type != UTG_KV_STR || strlen(kv->str) != kv->count) { utg__msgf(msg, "META %s must be a string without NUL bytes", kv->key); return UTG_ERR_FORMAT; }
            if (utg__knobs[k].info.kind == UTG_KNOB_STR) *(const char **)utg__knob_ptr(&c, k) = kv->str;
            else if (utg_config_set(&c, utg__knobs[k].info.env_name, kv->str, msg) != UTG_OK)
                return UTG_ERR_FORMAT; /* not one of the words */
            break;
        }
    }
    c = utg_config_resolve(&c);
    if (utg_config_validate(&c, msg) != UTG_OK) return UTG_ERR_FORMAT;
    *cfg = c;
    return UTG_OK;
}

/* QUANT_LAYER_BITS "3:5,4:5": 1 and *bits when block is listed, 0 when not, -1 on bad syntax */
static int utg__layer_bits(const char *s, int block, int *bits) {
    int found = 0;
    while (s && *s) {
        char *e;
        long b = strtol(s, &e, 10), v;
        if (e == s || *e != ':' || b < 0) return -1;
        s = e + 1;
        v = strtol(s, &e, 10);
        if (e == s || v < 2 || v > 8 || (*e && *e != ',')) return -1;
        if (b == block) { *bits = (int)v; found = 1; }
        s = *e ? e + 1 : e;
    }
    return found;
}

/* ---- Hessians ---- */

/* Hessians H = sum X^T X of the inputs of each quantized matrix, gathered over forward passes
   (backend memory, one [cols, cols] per slot). c_q, c_k and c_v read one input and share a slot. */
struct utg_hessians {
    utg_model *m;
    int n_slots, batches;
    int *slot_of; /* per tensor */
    int *cols;    /* per slot */
    float **H;    /* per slot, backend memory */
    float *host;  /* largest H, for utg_hessians_get */
};

/* Gives tensor t a slot of [cols, cols]: share_with's when that has one, else a new slot. */
static int utg__hess_slot(utg_hessians *h, int t, int share_with, int cols) {
    if (t < 0) return 0;
    if (share_with >= 0 && h->slot_of[share_with] >= 0) { h->slot_of[t] = h->slot_of[share_with]; return 0; }
    h->slot_of[t] = h->n_slots;
    h->cols[h->n_slots++] = cols;
    return 0;
}

UTGDEF utg_result utg_hessians_create(utg_model *m, utg_hessians **out) {
    utg_hessians *h;
    int b, k, s, maxc = 0;
    if (!m || !out) return UTG_ERR_INVALID;
    *out = NULL;
    h = (utg_hessians *)utg__alloc(&m->alloc, sizeof *h);
    if (!h) return UTG_ERR_NOMEM;
    memset(h, 0, sizeof *h);
    h->m = m;
    h->slot_of = (int *)utg__alloc(&m->alloc, sizeof(int) * (size_t)m->n_tensors);
    h->cols = (int *)utg__alloc(&m->alloc, sizeof(int) * (size_t)m->n_tensors);
    h->H = (float **)utg__alloc(&m->alloc, sizeof(float *) * (size_t)m->n_tensors);
    if (!h->slot_of || !h->cols || !h->H) { utg_hessians_destroy(h); return UTG_ERR_NOMEM; }
    memset(h->H, 0, sizeof(float *) * (size_t)m->n_tensors);
    for (k = 0; k < m->n_tensors; k++) h->slot_of[k] = -1;
    for (b = 0; b < m->n_phys; b++) {
        const utg__heavy_ix *x = &m->heavy[b];
        for (k = 0; k < m->n_attn; k++) {
            utg__hess_slot(h, x->c_q[k], -1, m->d);
            utg__hess_slot(h, x->c_k[k], x->c_q[k], m->d);
            utg__hess_slot(h, x->c_v[k], x->c_q[k], m->d);
            utg__hess_slot(h, x->proj[k], -1, m->d);
        }
        utg__hess_slot(h, x->fc, -1, m->d);
        utg__hess_slot(h, x->mid, -1, m->F);
        utg__hess_slot(h, x->mlp_proj, -1, m->F);
    }
    for (k = 0; k < m->n_rsets; k++) {
        utg__hess_slot(h, m->rsets[k].fc, -1, m->d);
        utg__hess_slot(h, m->rsets[k].mid, -1, m->F);
        utg__hess_slot(h, m->rsets[k].proj, -1, m->F);
    }
    utg__hess_slot(h, m->t_lm_head >= 0 ? m->t_lm_head : m->t_tok_emb, -1, m->d);
    utg__hess_slot(h, m->t_bg_proj, -1, m->cfg.bigram_dim); /* the embedding-side projections read table rows */
    utg__hess_slot(h, m->t_ve_proj, -1, m->cfg.ve_dim);
    for (s = 0; s < h->n_slots; s++) {
        h->H[s] = (float *)m->be->buf_alloc(m->be, sizeof(float) * (size_t)h->cols[s] * (size_t)h->cols[s]);
        if (!h->H[s]) { utg_hessians_destroy(h); return UTG_ERR_NOMEM; }
        if (h->cols[s] > maxc) maxc = h->cols[s];
    }
    h->host = (float *)utg__alloc(&m->alloc, sizeof(float) * (size_t)maxc * (size_t)(maxc ? maxc : 1));
    if (!h->host) { utg_hessians_destroy(h); return UTG_ERR_NOMEM; }
    *out = h;
    return UTG_OK;
}

UTGDEF void utg_hessians_destroy(utg_hessians *h) {
    int s;
    utg_model *m;
    if (!h) return;
    m = h->m;
    if (h->H)
        for (s = 0; s < h->n_slots; s++) if (h->H[s]) m->be->buf_free(m->be, h->H[s]);
    {
        void *owned[] = {h->H, h->slot_of, h->cols, h->host, h};
        utg__free_all(&m->alloc, owned, 5);
    }
}

/* H += alpha X^T X (alpha: the square of a scale the linear applies to X, as LN_SCALE does) */
static void utg__hess_add(utg_hessians *h, int t, const void *X, int N, float alpha) {
    utg_dtype at = h->m->at;
    int s, c;
    if (t < 0 || !X || (s = h->slot_of[t]) < 0) return;
    c = h->cols[s];
    h->m->be->matmul(h->m->be, UTG_MM_TYPES(UTG_DT_F32, at, at), h->H[s], X, X, c, c, N, UTG_TRANS,
                     UTG_NO_TRANS, alpha, 1.0f);
}

/* Reads the activations the last forward saved, so nothing runs again: per virtual layer the
   attention input (the normed, biased src that c_q, c_k and c_v all read, weighted by ln_scale^2
   since the matmuls scale it), the heads the output projection reads (after XSA and the gate),
   the MLP input and its hidden activations; then the final norm's output for the head, and the
   BigramHash and value-embedding rows for their projections. A repeat visit with an untied MLP
   adds into that set's tensors instead of the shared ones. */
UTGDEF utg_result utg_hessians_accumulate(utg_hessians *h) {
    utg_model *m;
    int l, k, N;
    if (!h) return UTG_ERR_INVALID;
    m = h->m;
    if (!m->have_forward || !m->acts) { utg__msgf(&m->msg, "utg_hessians_accumulate needs a utg_model_forward first"); return UTG_ERR_INVALID; }
    N = m->n_tok;
    for (l = 0; l < m->plan->n_layers; l++) {
        const utg_plan_layer *pl = &m->plan->layers[l];
        const utg__heavy_ix *x = &m->heavy[pl->block];
        const utg__acts *A = &m->acts[l];
        int fc = x->fc, mid = x->mid, mp = x->mlp_proj;
        if (pl->mlp_set >= 0) {
            const utg__rset *s = &m->rsets[pl->mlp_set];
            if (s->fc >= 0) fc = s->fc;
            if (s->mid >= 0) mid = s->mid;
            if (s->proj >= 0) mp = s->proj;
        }
        utg__layer_weights w;
        utg__layer_ptrs(m, l, 0, &w);
        for (k = 0; k < m->n_attn; k++) {
            const utg__attn_acts *S = &A->at[k];
            utg__hess_add(h, x->c_q[k], S->nb ? S->nb : S->n, N, w.ln_scale * w.ln_scale);
            utg__hess_add(h, x->proj[k], utg__attn_out(&w, k, S), N, 1.0f);
        }
        utg__hess_add(h, fc, A->ml.nb ? A->ml.nb : A->ml.n, N, w.ln_scale * w.ln_scale);
        if (m->mlp3) { utg__hess_add(h, mid, A->ml.ua, N, 1.0f); utg__hess_add(h, mp, A->ml.ua2, N, 1.0f); }
        else utg__hess_add(h, mp, A->ml.ua, N, 1.0f);
    }
    utg__hess_add(h, m->t_lm_head >= 0 ? m->t_lm_head : m->t_tok_emb, m->hf, N, 1.0f);
    utg__hess_add(h, m->t_bg_proj, m->bigram_rows, N, 1.0f);
    utg__hess_add(h, m->t_ve_proj, m->ve_rows, N, 1.0f);
    h->batches++;
    return UTG_OK;
}

UTGDEF int utg_hessians_batches(const utg_hessians *h) { return h ? h->batches : 0; }
UTGDEF int utg_hessians_cols(const utg_hessians *h, int index) {
    if (!h || index < 0 || index >= h->m->n_tensors || h->slot_of[index] < 0 || h->batches == 0) return 0;
    return h->cols[h->slot_of[index]];
}
UTGDEF int utg_hessians_get(const utg_hessians *h, int index, double *H, size_t n) {
    int c = utg_hessians_cols(h, index), s;
    size_t i, cc;
    if (!c || !H) return 0;
    cc = (size_t)c * (size_t)c;
    if (n < cc) return 0;
    s = h->slot_of[index];
    h->m->be->download(h->m->be, h->host, h->H[s], sizeof(float) * cc);
    for (i = 0; i < cc; i++) H[i] = (double)h->host[i] / (double)h->batches;
    return 1;
}

UTGDEF utg_result utg_model_generate(utg_model *m, int n_seqs, int len, double temperature, uint64_t seed, int32_t *out) {
    utg__rng rng;
    float *row;
    double *p;
    int s, t, v, V;
    utg_result r = UTG_OK;
    if (!m || !out || n_seqs < 1 || len < 1 || !(temperature > 0.0)) return UTG_ERR_INVALID;
    V = m->V;
    row = (float *)utg__alloc(&m->alloc, sizeof(float) * (size_t)V);
    p = (double *)utg__alloc(&m->alloc, sizeof(double) * (size_t)V);
    if (!row || !p) { utg__free(&m->alloc, row); utg__free(&m->alloc, p); return UTG_ERR_NOMEM; }
    utg__rng_seed(&rng, seed);
    for (s = 0; s < n_seqs; s++) out[(size_t)s * len] = (int32_t)(utg__rng_next(&rng) % (uint64_t)V);
    for (t = 1; t < len && r == UTG_OK; t++) {
        int32_t *pref = (int32_t *)utg__alloc(&m->alloc, sizeof(int32_t) * (size_t)n_seqs * (size_t)t);
        if (!pref) { r = UTG_ERR_NOMEM; break; }
        for (s = 0; s < n_seqs; s++) memcpy(pref + (size_t)s * t, out + (size_t)s * len, sizeof(int32_t) * (size_t)t);
        r = utg_model_eval(m, pref, pref, n_seqs, t, NULL, NULL);
        for (s = 0; s < n_seqs && r == UTG_OK; s++) {
            double mx = -1e300, sum = 0.0, u;
            utg__download_acts(
                m, row, utg__act_at(m, m->logits, ((size_t)s * t + (size_t)(t - 1)) * (size_t)V), (size_t)V);
            for (v = 0; v < V; v++) { /* the eval forward left the softcapped logits c*tanh(z/c) */
                p[v] = (double)row[v] / temperature;
                if (p[v] > mx) mx = p[v];
            }
            for (v = 0; v < V; v++) { p[v] = exp(p[v] - mx); sum += p[v]; }
            u = utg__rng_uniform(&rng) * sum;
            for (v = 0; v < V - 1 && u >= p[v]; v++) u -= p[v];
            out[(size_t)s * len + t] = v;
        }
        utg__free(&m->alloc, pref);
    }
    utg__free(&m->alloc, row);
    utg__free(&m->alloc, p);
    return r;
}

/* ---- GPTQ calibration ---- */

/* n sequences of T + 1 uniform random tokens from the generator state x, as inputs and targets */
static void utg__random_tokens(uint64_t x, int n, int T, int vocab_size, int32_t *bx, int32_t *by) {
    int s;
    for (s = 0; s < n * (T + 1); s++) {
        int v;
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        v = (int)((x >> 33) % (uint64_t)vocab_size);
        if (s % (T + 1) < T) bx[(s / (T + 1)) * T + s % (T + 1)] = v;
        if (s % (T + 1) > 0) by[(s / (T + 1)) * T + s % (T + 1) - 1] = v;
    }
}

/* Calibration batch number b, n sequences into bx/by: training data, text the model generates (into
   gen first) or uniform random tokens, as GPTQ_CALIBRATION says. */
static utg_result utg__calibration_batch(utg_model *m, utg_loader *loader, int n, int b, int32_t *gen,
                                         int32_t *bx, int32_t *by) {
    const utg_config *cfg = &m->cfg;
    int T = cfg->train_seq_len, s, t;
    uint64_t rs = 0x5eed0000u + (uint64_t)UTG_OFF0(cfg->seed);
    utg_msg msg;
    utg_result r;
    if (cfg->gptq_calibration == UTG_GPTQ_CALIBRATION_TRAIN) {
#ifndef UTG_NO_STDIO
        if ((r = utg_loader_next(loader, bx, by, n, &msg)) != UTG_OK)
            utg__msgf(&m->msg, "gptq calibration: %s", msg.text);
        return r;
#else
        (void)loader, (void)msg;
        utg__msgf(&m->msg, "gptq calibration: no loader in a UTG_NO_STDIO build");
        return UTG_ERR_UNSUPPORTED;
#endif
    }
    if (cfg->gptq_calibration == UTG_GPTQ_CALIBRATION_SELF) {
        r = utg_model_generate(m, n, T + 1, cfg->gptq_selfgen_temperature, rs + (uint64_t)b, gen);
        for (s = 0; s < n && r == UTG_OK; s++)
            for (t = 0; t < T; t++) {
                bx[s * T + t] = gen[s * (T + 1) + t];
                by[s * T + t] = gen[s * (T + 1) + t + 1];
            }
        return r;
    }
    utg__random_tokens(rs + (uint64_t)b * 0x9e3779b97f4a7c15ull, n, T, cfg->vocab_size, bx, by);
    return UTG_OK;
}

/* The calibration forwards into h: batches of at most batch_seqs until the count is reached. */
static utg_result utg__calibrate_batches(utg_model *m, utg_loader *loader, int batch_seqs, utg_hessians *h,
                                         int32_t *bx, int32_t *by, int32_t *gen) {
    int done = 0, b, want = m->cfg.gptq_calibration_batches;
    utg_result r = UTG_OK;
    for (b = 0; done < want && r == UTG_OK; b++) {
        int n = want - done < batch_seqs ? want - done : batch_seqs;
        r = utg__calibration_batch(m, loader, n, b, gen, bx, by);
        if (r == UTG_OK) r = utg_model_forward(m, bx, by, n, NULL);
        if (r == UTG_OK) r = utg_hessians_accumulate(h);
        done += n;
    }
    return r;
}

UTGDEF utg_result utg_model_calibrate(utg_model *m, utg_loader *loader, int batch_seqs, utg_hessians **out) {
    size_t T, nb;
    int32_t *bx, *by, *gen = NULL;
    utg_result r;
    if (!m || !out) return UTG_ERR_INVALID;
    *out = NULL;
    if (batch_seqs < 1 || (m->cfg.gptq_calibration == UTG_GPTQ_CALIBRATION_TRAIN && !loader)) {
        utg__msgf(&m->msg, "gptq calibration: %s", batch_seqs < 1 ? "a batch needs a sequence" : "no loader");
        return UTG_ERR_INVALID;
    }
    T = (size_t)m->cfg.train_seq_len;
    nb = (size_t)batch_seqs * T;
    bx = (int32_t *)utg__alloc(&m->alloc, sizeof(int32_t) * nb);
    by = (int32_t *)utg__alloc(&m->alloc, sizeof(int32_t) * nb);
    if (m->cfg.gptq_calibration == UTG_GPTQ_CALIBRATION_SELF)
        gen = (int32_t *)utg__alloc(&m->alloc, sizeof(int32_t) * (size_t)batch_seqs * (T + 1));
    if (!bx || !by || (m->cfg.gptq_calibration == UTG_GPTQ_CALIBRATION_SELF && !gen)) r = UTG_ERR_NOMEM;
    else r = utg_hessians_create(m, out);
    if (r == UTG_OK) r = utg__calibrate_batches(m, loader, batch_seqs, *out, bx, by, gen);
    if (r != UTG_OK) {
        utg_hessians_destroy(*out);
        *out = NULL;
    }
    {
        void *owned[] = {bx, by, gen};
        utg__free_all(&m->alloc, owned, 3);
    }
    return r;
}

/* ---- the quantization plan ---- */

UTGDEF utg_result utg_model_quant_plan(const utg_model *m, const utg_hessians *h, utg_tensor_quant *plan, int n) {
    const utg_config *c;
    int i;
    if (!m || !plan || n != m->n_tensors) return UTG_ERR_INVALID;
    c = &m->cfg;
    for (i = 0; i < n; i++) {
        const utg_tensor_info *t = &m->tensors[i];
        utg_tensor_quant *p = &plan[i];
        int lb;
        memset(p, 0, sizeof *p);
        if (t->numel <= (size_t)c->quant_passthrough_numel || t->ndim != 2 || t->role == UTG_ROLE_CONTROL) {
            p->dtype = utg__name_matches(t->name, c->control_tensor_name_patterns) ? UTG_DT_F32 : UTG_DT_F16;
            continue;
        }
        p->dtype = UTG_DT_Q;
        if (t->role == UTG_ROLE_EMBED || t->role == UTG_ROLE_HEAD) { p->bits = c->embed_bits; p->param = c->embed_clip_sigmas; }
        else if (strstr(t->name, "attn")) {
            p->bits = c->attn_bits > 0 ? c->attn_bits : c->matrix_bits;
            p->param = c->attn_clip_sigmas > 0 ? c->attn_clip_sigmas : c->matrix_clip_sigmas;
        } else if (strstr(t->name, "mlp")) {
            p->bits = c->mlp_bits > 0 ? c->mlp_bits : c->matrix_bits;
            p->param = c->mlp_clip_sigmas > 0 ? c->mlp_clip_sigmas : c->matrix_clip_sigmas;
        } else { p->bits = c->matrix_bits; p->param = c->matrix_clip_sigmas; }
        if (t->role == UTG_ROLE_MATRIX && t->block >= 0 && utg__layer_bits(c->quant_layer_bits, t->block, &lb) == 1) p->bits = lb;
        if (c->quant_clip == UTG_QUANT_CLIP_MAX) { p->clip = UTG_CLIP_MAX; p->param = 0; }
        else if (c->quant_clip == UTG_QUANT_CLIP_PERCENTILE) { p->clip = UTG_CLIP_PERCENTILE; p->param = c->quant_clip_percentile; }
        else if (c->quant_clip == UTG_QUANT_CLIP_SEARCH) { p->clip = UTG_CLIP_SEARCH; p->param = 0; }
        else p->clip = UTG_CLIP_SDCLIP;
        p->gptq = c->gptq_enabled > 0 && utg_hessians_cols(h, i) == (int)t->shape[1];
    }
    return UTG_OK;
}

/* Quantize one tensor as p says; fills rel_err, entropy, bytes, chosen. Hd: H (cols^2) or NULL. */
static utg_result utg__quant_tensor(const float *W, int rows, int cols, const double *Hd, utg_tensor_quant *p, double damp,
                                    int8_t *q, uint16_t *scales, float *deq, double *abs_err, utg_msg *msg) {
    utg_quant_spec spec;
    utg_result r;
    size_t n = (size_t)rows * (size_t)cols, i;
    double num = 0.0, den = 0.0;
    spec.bits = p->bits;
    spec.clip = p->clip;
    spec.param = p->param;
    p->chosen = p->param;
    if (p->gptq && Hd) {
        if (spec.clip == UTG_CLIP_SEARCH) { r = utg_quantize_rows(W, rows, cols, &spec, q, scales, &p->chosen, msg); if (r) return r; spec.clip = UTG_CLIP_PERCENTILE; spec.param = p->chosen; }
        r = utg_gptq_rows(W, rows, cols, Hd, &spec, damp, q, scales, msg);
    } else r = utg_quantize_rows(W, rows, cols, &spec, q, scales, &p->chosen, msg);
    if (r != UTG_OK) return r;
    utg_dequantize_rows(q, scales, rows, cols, deq);
    if (Hd) {
        int rr, a, b;
        double *e = (double *)UTG_MALLOC(sizeof(double) * (size_t)cols * 2, NULL);
        if (!e) return UTG_ERR_NOMEM;
        for (rr = 0; rr < rows; rr++) {
            const float *w = W + (size_t)rr * cols, *d = deq + (size_t)rr * cols;
            double *wv = e + cols;
            for (a = 0; a < cols; a++) { e[a] = (double)w[a] - (double)d[a]; wv[a] = w[a]; }
            for (a = 0; a < cols; a++) {
                const double *hr = Hd + (size_t)a * cols;
                double se = 0.0, sw = 0.0;
                for (b = 0; b < cols; b++) { se += hr[b] * e[b]; sw += hr[b] * wv[b]; }
                num += e[a] * se;
                den += wv[a] * sw;
            }
        }
        UTG_FREE(e, NULL);
    } else
        for (i = 0; i < n; i++) { double e = (double)W[i] - (double)deq[i]; num += e * e; den += (double)W[i] * W[i]; }
    p->rel_err = den > 0.0 ? num / den : 0.0;
    if (abs_err) *abs_err = num;
    p->entropy = utg__entropy_i8(q, n);
    p->bytes = n + 2 * (size_t)rows;
    return UTG_OK;
}

/* The metadata kvs of an export: the architecture tag, the knobs the loader rebuilds the model
   from, the parameter count and the plan's layer list, among others. */
static void utg__export_meta(utg_model *m, utg_artifact_writer *w, const utg_tensor_quant *plan) {
    int i, k, gptq = 0;
    uint32_t u;
    uint64_t np = m->n_params;
    uint32_t *layers = (uint32_t *)utg__alloc(&m->alloc, sizeof(uint32_t) * (size_t)(m->plan->n_layers + 1));
    utg_artifact_add_kv(w, "utg.arch", UTG_KV_STR, "utgolf.ut", 9);
    for (k = 0; k < UTG__N_KNOBS; k++) {
        char key[96];
        const void *p;
        if (!UTG__ART_KNOB(k)) continue;
        utg__art_key(key, sizeof key, k);
        p = utg__knob_cptr(&m->cfg, k);
        switch (utg__knobs[k].info.kind) {
        case UTG_KNOB_INT:
        case UTG_KNOB_BOOL: utg_artifact_add_kv(w, key, UTG_KV_I32, p, 1); break;
        case UTG_KNOB_REAL: utg_artifact_add_kv(w, key, UTG_KV_F64, p, 1); break;
        case UTG_KNOB_STR: {
            const char *s = *(const char *const *)p ? *(const char *const *)p : "";
            utg_artifact_add_kv(w, key, UTG_KV_STR, s, (uint32_t)strlen(s));
        } break;
        case UTG_KNOB_ENUM: { /* the word, as the text of a config names it */
            char word[64];
            utg_config_format(&m->cfg, k, word, sizeof word);
            utg_artifact_add_kv(w, key, UTG_KV_STR, word, (uint32_t)strlen(word));
        } break;
        }
    }
    u = (uint32_t)m->n_phys;
    utg_artifact_add_kv(w, "utg.plan.physical_blocks", UTG_KV_U32, &u, 1);
    u = (uint32_t)m->phase;
    utg_artifact_add_kv(w, "utg.plan.phase", UTG_KV_U32, &u, 1);
    if (layers) {
        for (i = 0; i < m->plan->n_layers; i++) layers[i] = (uint32_t)m->plan->layers[i].block;
        utg_artifact_add_kv(w, "utg.plan.layers", UTG_KV_U32_ARRAY, layers, (uint32_t)m->plan->n_layers);
        utg__free(&m->alloc, layers);
    }
    utg_artifact_add_kv(w, "utg.model.params", UTG_KV_U64, &np, 1);
    u = 1;
    utg_artifact_add_kv(w, "utg.quant.version", UTG_KV_U32, &u, 1);
    for (i = 0; i < m->n_tensors; i++) gptq |= plan[i].dtype == UTG_DT_Q && plan[i].gptq;
    utg_artifact_add_kv(w, "utg.quant.method", UTG_KV_STR, gptq ? "gptq" : "round", gptq ? 4 : 5);
    {
        char clip[64];
        utg_config_format(&m->cfg, utg_config_find_knob("QUANT_CLIP"), clip, sizeof clip);
        utg_artifact_add_kv(w, "utg.quant.clip", UTG_KV_STR, clip, (uint32_t)strlen(clip));
    }
}

/* utg_model_export's buffers and running totals */
typedef struct utg__export {
    float *host, *deq; /* the parameters on the host; one tensor dequantized */
    int8_t *q;         /* one tensor's symbols */
    uint16_t *sc;      /* one tensor's row scales, or its f16 values */
    double *Hd;        /* one tensor's Hessian */
    size_t maxn, maxr, maxh;
    double wsum, wn;   /* the numel-weighted sum of relative errors and its weight */
    utg_export_report R;
} utg__export;

/* The scratch sizes of the largest tensor, row count and Hessian; refuses a plan that quantizes a
   tensor that is not a matrix, or to a width outside 2..8 bits. */
static utg_result utg__export_sizes(utg_model *m, const utg_hessians *h, const utg_tensor_quant *plan,
                                    utg__export *x) {
    int i;
    for (i = 0; i < m->n_tensors; i++) {
        const utg_tensor_info *t = &m->tensors[i];
        int hc = plan[i].dtype == UTG_DT_Q ? utg_hessians_cols(h, i) : 0;
        if (t->numel > x->maxn) x->maxn = t->numel;
        if ((size_t)t->shape[0] > x->maxr) x->maxr = (size_t)t->shape[0];
        if ((size_t)hc * (size_t)hc > x->maxh) x->maxh = (size_t)hc * (size_t)hc;
        if (plan[i].dtype == UTG_DT_Q && (t->ndim != 2 || plan[i].bits < 2 || plan[i].bits > 8)) {
            utg__msgf(&m->msg, "tensor %s: cannot quantize to %d bits", t->name, plan[i].bits);
            return UTG_ERR_INVALID;
        }
    }
    return UTG_OK;
}

/* Tensor i quantized by its plan p (GPTQ with its Hessian, or rounding) into x's symbols and scales */
static utg_result utg__export_quantized(utg_model *m, const utg_hessians *h, utg__export *x, int i,
                                        utg_tensor_quant *p, const float *W, utg_artifact_tensor *at) {
    const utg_tensor_info *ti = &m->tensors[i];
    int rows = (int)ti->shape[0], cols = (int)ti->shape[1];
    int have_h = utg_hessians_cols(h, i) ? utg_hessians_get(h, i, x->Hd, x->maxh) : 0;
    utg_result r;
    if (p->gptq && !have_h) {
        utg__msgf(&m->msg, "tensor %s: GPTQ asked for but no Hessian was gathered", ti->name);
        return UTG_ERR_INVALID;
    }
    r = utg__quant_tensor(W, rows, cols, have_h ? x->Hd : NULL, p, m->cfg.gptq_damp, x->q, x->sc, x->deq, NULL,
                          &m->msg);
    if (r != UTG_OK) {
        char keep[256];
        snprintf(keep, sizeof keep, "%s", m->msg.text);
        utg__msgf(&m->msg, "tensor %s: %s", ti->name, keep);
        return r;
    }
    at->dtype = UTG_DT_Q;
    at->qbits = p->bits;
    at->scale_kind = UTG_SCALE_ROW;
    at->values = x->q;
    at->scales = x->sc;
    x->R.symbol_bytes += ti->numel;
    x->R.scale_bytes += 2 * (size_t)rows;
    x->R.entropy_bytes += (double)ti->numel * p->entropy / 8.0;
    x->R.n_quantized++;
    x->wsum += p->rel_err * (double)ti->numel;
    x->wn += (double)ti->numel;
    return UTG_OK;
}

/* Tensor ti as f16 values in x->sc, with the relative error of the rounding in p */
static void utg__export_f16(utg__export *x, const utg_tensor_info *ti, utg_tensor_quant *p, const float *W,
                            utg_artifact_tensor *at) {
    uint16_t *sc = x->sc;
    float *deq = x->deq;
    double num = 0, den = 0;
    size_t k;
    for (k = 0; k < ti->numel; k++) sc[k] = utg_f32_to_f16(W[k]);
    at->dtype = UTG_DT_F16;
    at->values = sc;
    p->bytes = 2 * ti->numel;
    for (k = 0; k < ti->numel; k++) deq[k] = utg_f16_to_f32(sc[k]);
    for (k = 0; k < ti->numel; k++) {
        double e = (double)W[k] - deq[k];
        num += e * e;
        den += (double)W[k] * W[k];
    }
    p->rel_err = den > 0 ? num / den : 0;
    x->R.float_bytes += p->bytes;
    x->R.n_float++;
}

/* Tensor i of the model, converted by its plan (Q, f16 or f32), added to the writer */
static utg_result utg__export_tensor(utg_model *m, const utg_hessians *h, utg__export *x, int i,
                                     utg_tensor_quant *p, utg_artifact_writer *w) {
    const utg_tensor_info *ti = &m->tensors[i];
    const float *W = x->host + ti->offset;
    utg_artifact_tensor at;
    utg_result r;
    size_t k;
    memset(&at, 0, sizeof at);
    snprintf(at.name, sizeof at.name, "%s", ti->name);
    at.ndim = ti->ndim;
    for (k = 0; k < (size_t)ti->ndim; k++) at.dims[k] = ti->shape[k];
    if (p->dtype == UTG_DT_Q) {
        if ((r = utg__export_quantized(m, h, x, i, p, W, &at)) != UTG_OK) return r;
    } else if (p->dtype == UTG_DT_F16) {
        utg__export_f16(x, ti, p, W, &at);
    } else {
        at.dtype = UTG_DT_F32;
        at.values = W;
        p->bytes = 4 * ti->numel;
        p->rel_err = 0.0;
        x->R.float_bytes += p->bytes;
        x->R.n_float++;
    }
    if ((r = utg_artifact_add_tensor(w, &at)) != UTG_OK)
        utg__msgf(&m->msg, "%s", utg_artifact_writer_message(w));
    return r;
}

UTGDEF utg_result utg_model_export(utg_model *m, const utg_hessians *h, const utg_codec *codec, const char *prov,
                                   utg_tensor_quant *plan_io, void **out, size_t *out_size, utg_export_report *rep) {
    utg_tensor_quant *plan = plan_io;
    utg_artifact_writer *w = NULL;
    utg__export x;
    utg_result r = UTG_ERR_NOMEM;
    size_t raw = 0;
    int i;
    if (!m || !out || !out_size) return UTG_ERR_INVALID;
    *out = NULL;
    *out_size = 0;
    memset(&x, 0, sizeof x);
    if (!plan) {
        plan = (utg_tensor_quant *)utg__alloc(&m->alloc, sizeof *plan * (size_t)m->n_tensors);
        if (!plan) goto fail;
        utg_model_quant_plan(m, h, plan, m->n_tensors);
    }
    if ((r = utg__export_sizes(m, h, plan, &x)) != UTG_OK) goto fail;
    r = UTG_ERR_NOMEM;
    x.host = (float *)utg__alloc(&m->alloc, sizeof(float) * m->arena_floats);
    x.deq = (float *)utg__alloc(&m->alloc, sizeof(float) * x.maxn);
    x.q = (int8_t *)utg__alloc(&m->alloc, x.maxn);
    x.sc = (uint16_t *)utg__alloc(&m->alloc, sizeof(uint16_t) * (x.maxn > x.maxr ? x.maxn : x.maxr));
    if (x.maxh) x.Hd = (double *)utg__alloc(&m->alloc, sizeof(double) * x.maxh);
    if (!x.host || !x.deq || !x.q || !x.sc || (x.maxh && !x.Hd)) goto fail;
    if ((r = utg_model_get(m, UTG_ARENA_PARAMS, -1, x.host, m->arena_floats)) != UTG_OK) goto fail;
    if ((r = utg_artifact_writer_create(&m->alloc, &w)) != UTG_OK) goto fail;
    utg__export_meta(m, w, plan);
    for (i = 0; i < m->n_tensors; i++)
        if ((r = utg__export_tensor(m, h, &x, i, &plan[i], w)) != UTG_OK) goto fail;
    if (prov && (r = utg_artifact_add_section(w, "PROV", prov, strlen(prov))) != UTG_OK) { utg__msgf(&m->msg, "%s", utg_artifact_writer_message(w)); goto fail; }
    if ((r = utg_artifact_write(w, codec, out, out_size, &raw)) != UTG_OK) { utg__msgf(&m->msg, "%s", utg_artifact_writer_message(w)); goto fail; }
    x.R.artifact_bytes = *out_size;
    x.R.raw_bytes = raw;
    x.R.weighted_err = x.wn > 0 ? x.wsum / x.wn : 0.0;
    if (rep) *rep = x.R;
    r = UTG_OK;
fail:
    if (r == UTG_ERR_NOMEM) utg__msgf(&m->msg, "out of memory exporting the artifact");
    utg_artifact_writer_destroy(w);
    utg__free(&m->alloc, x.host);
    utg__free(&m->alloc, x.deq);
    utg__free(&m->alloc, x.q);
    utg__free(&m->alloc, x.sc);
    utg__free(&m->alloc, x.Hd);
    if (plan != plan_io) utg__free(&m->alloc, plan);
    return r;
}

/* How: every Q tensor is quantized once at each candidate width (b in [floor, its plan bits]),
   recording the error and the estimated bytes (numel * entropy / 8 symbols + 2 bytes of scale
   per row); float tensors count their raw bytes. Then a greedy loop lowers, one bit at a time, the
   tensor whose next step down costs the least error per byte saved, until the estimate times
   `ratio` (artifact bytes per estimated byte, measured by the caller on a first export) fits.
   err and est are indexed [9 * tensor + bits]. */
UTGDEF utg_result utg_model_budget_plan(utg_model *m, const utg_hessians *h, utg_tensor_quant *plan, int n, int min_bits,
                                        double target_bytes, double ratio) {
    /* per Q tensor and bit width: the estimated bytes and the absolute (H-weighted) error */
    double *err = NULL, *est = NULL, total = 0.0;
    float *host = NULL, *deq = NULL;
    int8_t *q = NULL;
    uint16_t *sc = NULL;
    double *Hd = NULL;
    int *cur = NULL, *floor_bits = NULL, i, b;
    size_t maxn = 0, maxh = 0;
    utg_result r = UTG_ERR_NOMEM;
    if (!m || !plan || n != m->n_tensors || min_bits < 2 || min_bits > 8 || !(ratio > 0.0) || !(target_bytes > 0.0)) return UTG_ERR_INVALID;
    for (i = 0; i < n; i++) {
        int hc = utg_hessians_cols(h, i);
        if (m->tensors[i].numel > maxn) maxn = m->tensors[i].numel;
        if ((size_t)hc * hc > maxh) maxh = (size_t)hc * hc;
    }
    err = (double *)utg__alloc(&m->alloc, sizeof(double) * 9 * (size_t)n);
    est = (double *)utg__alloc(&m->alloc, sizeof(double) * 9 * (size_t)n);
    cur = (int *)utg__alloc(&m->alloc, sizeof(int) * (size_t)n);
    floor_bits = (int *)utg__alloc(&m->alloc, sizeof(int) * (size_t)n);
    host = (float *)utg__alloc(&m->alloc, sizeof(float) * m->arena_floats);
    deq = (float *)utg__alloc(&m->alloc, sizeof(float) * maxn);
    q = (int8_t *)utg__alloc(&m->alloc, maxn);
    sc = (uint16_t *)utg__alloc(&m->alloc, sizeof(uint16_t) * maxn);
    if (maxh) Hd = (double *)utg__alloc(&m->alloc, sizeof(double) * maxh);
    if (!err || !est || !cur || !floor_bits || !host || !deq || !q || !sc || (maxh && !Hd)) goto done;
    if ((r = utg_model_get(m, UTG_ARENA_PARAMS, -1, host, m->arena_floats)) != UTG_OK) goto done;
    for (i = 0; i < n; i++) {
        const utg_tensor_info *t = &m->tensors[i];
        int lo;
        cur[i] = 0;
        if (plan[i].dtype != UTG_DT_Q) { total += (double)(plan[i].dtype == UTG_DT_F32 ? 4 : 2) * (double)t->numel; continue; }
        if (plan[i].bits < 2 || plan[i].bits > 8) { utg__msgf(&m->msg, "tensor %s: %d bits", t->name, plan[i].bits); r = UTG_ERR_INVALID; goto done; }
        /* the embedding and an untied head keep their bits: their error reaches every position's
           input or output, which the Hessian of one linear does not see */
        lo = t->role == UTG_ROLE_MATRIX ? (min_bits < plan[i].bits ? min_bits : plan[i].bits) : plan[i].bits;
        {
            int have_h = utg_hessians_cols(h, i) ? utg_hessians_get(h, i, Hd, maxh) : 0;
            for (b = lo; b <= plan[i].bits; b++) {
                utg_tensor_quant p = plan[i];
                p.bits = b;
                if ((r = utg__quant_tensor(host + t->offset, (int)t->shape[0], (int)t->shape[1], have_h ? Hd : NULL, &p, m->cfg.gptq_damp,
                                           q, sc, deq, &err[9 * i + b], &m->msg)) != UTG_OK) goto done;
                est[9 * i + b] = (double)t->numel * p.entropy / 8.0 + 2.0 * (double)t->shape[0];
            }
        }
        cur[i] = plan[i].bits;
        floor_bits[i] = lo;
        total += est[9 * i + cur[i]];
    }
    /* greedy: lower the bits of the tensor that loses the least error per byte saved */
    while (total * ratio > target_bytes) {
        int best = -1;
        double best_cost = 0.0;
        for (i = 0; i < n; i++) {
            double saved, cost;
            if (plan[i].dtype != UTG_DT_Q || cur[i] <= floor_bits[i]) continue;
            saved = est[9 * i + cur[i]] - est[9 * i + cur[i] - 1];
            cost = (err[9 * i + cur[i] - 1] - err[9 * i + cur[i]]) / (saved > 1.0 ? saved : 1.0);
            if (best < 0 || cost < best_cost) { best = i; best_cost = cost; }
        }
        if (best < 0) {
            utg__msgf(&m->msg, "the budget of %.0f bytes cannot be met: %.0f estimated with every matrix at %d bits", target_bytes, total * ratio, min_bits);
            r = UTG_ERR_CONFIG;
            goto done;
        }
        total -= est[9 * best + cur[best]] - est[9 * best + cur[best] - 1];
        cur[best]--;
    }
    for (i = 0; i < n; i++) if (plan[i].dtype == UTG_DT_Q) plan[i].bits = cur[i];
    r = UTG_OK;
done:
    if (r == UTG_ERR_NOMEM) utg__msgf(&m->msg, "out of memory planning the budget");
    utg__free(&m->alloc, err);
    utg__free(&m->alloc, est);
    utg__free(&m->alloc, cur);
    utg__free(&m->alloc, floor_bits);
    utg__free(&m->alloc, host);
    utg__free(&m->alloc, deq);
    utg__free(&m->alloc, q);
    utg__free(&m->alloc, sc);
    utg__free(&m->alloc, Hd);
    return r;
}

/* Checks before it changes anything: every knob META carries (UTG_KF_ARENA and UTG_KF_EVAL,
   compared as the formatted text) equals the model's, the tensor count and every name and shape agree, and
   every dequantized value is finite; then one upload of the whole arena, and the artifact's plan
   phase (utg.plan.phase, when present) becomes the model's, without re-copying untied MLPs. */
UTGDEF utg_result utg_model_load_artifact(utg_model *m, const utg_artifact *a) {
    float *host = NULL;
    int i, k, kp;
    utg_result r;
    utg_config acfg;
    if (!m || !a) return UTG_ERR_INVALID;
    /* the model the artifact describes must be this one: every knob that shapes it agrees */
    if ((r = utg_artifact_config(a, &acfg, &m->msg)) != UTG_OK) return r;
    for (k = 0; k < UTG__N_KNOBS; k++) {
        char have[1024], want[1024];
        if (!UTG__ART_KNOB(k)) continue;
        utg_config_format(&acfg, k, have, sizeof have);
        utg_config_format(&m->cfg, k, want, sizeof want);
        if (strcmp(have, want)) {
            utg__msgf(&m->msg, "artifact was made with %s=%s, this model has %s=%s", utg__knobs[k].info.env_name, have,
                      utg__knobs[k].info.env_name, want);
            return UTG_ERR_MISMATCH;
        }
    }
    if (a->n_tensors != m->n_tensors) { utg__msgf(&m->msg, "artifact holds %d tensors, the model %d", a->n_tensors, m->n_tensors); return UTG_ERR_MISMATCH; }
    kp = utg_artifact_find_kv(a, "utg.plan.phase");
    if (kp >= 0 && (a->kv[kp].type != UTG_KV_U32 || a->kv[kp].u >= (uint64_t)m->n_plans)) { utg__msgf(&m->msg, "artifact plan phase is out of range"); return UTG_ERR_FORMAT; }
    host = (float *)utg__alloc(&m->alloc, sizeof(float) * m->arena_floats);
    if (!host) { utg__msgf(&m->msg, "out of memory"); return UTG_ERR_NOMEM; }
    memset(host, 0, sizeof(float) * m->arena_floats);
    for (i = 0; i < m->n_tensors; i++) {
        const utg_tensor_info *t = &m->tensors[i];
        int j = utg_artifact_find_tensor(a, t->name);
        size_t e;
        if (j < 0) { utg__msgf(&m->msg, "artifact lacks tensor %s", t->name); r = UTG_ERR_MISMATCH; goto fail; }
        if (a->tensors[j].ndim != t->ndim) { utg__msgf(&m->msg, "tensor %s has %d dims in the artifact, %d in the model", t->name, a->tensors[j].ndim, t->ndim); r = UTG_ERR_MISMATCH; goto fail; }
        for (k = 0; k < t->ndim; k++)
            if (a->tensors[j].dims[k] != t->shape[k]) { utg__msgf(&m->msg, "tensor %s: dimension %d is %lld in the artifact, %lld in the model", t->name, k, (long long)a->tensors[j].dims[k], (long long)t->shape[k]); r = UTG_ERR_MISMATCH; goto fail; }
        if ((r = utg_artifact_tensor_floats(a, j, host + t->offset, t->numel)) != UTG_OK) goto fail;
        for (e = 0; e < t->numel; e++)
            if (!isfinite(host[t->offset + e])) { utg__msgf(&m->msg, "tensor %s: element %zu is not finite", t->name, e); r = UTG_ERR_FORMAT; goto fail; }
    }
    if ((r = utg_model_set(m, UTG_ARENA_PARAMS, -1, host, m->arena_floats)) != UTG_OK) goto fail;
    if (kp >= 0 && (r = utg_model_set_phase(m, (int)a->kv[kp].u, 0)) != UTG_OK) goto fail;
    r = UTG_OK;
fail:
    utg__free(&m->alloc, host);
    return r;
}

UTGDEF utg_result utg_model_create_from_artifact(const utg_artifact *a, const utg_model_desc *base, utg_model **out) {
    utg_model_desc desc;
    utg_msg msg;
    utg_result r;
    size_t want_params = 0, have_params = 0;
    int want_tensors = 0, i;
    if (!out) return UTG_ERR_INVALID;
    *out = NULL;
    if (!a) return UTG_ERR_INVALID;
    memset(&desc, 0, sizeof desc);
    if (base) desc = *base;
    memset(&msg, 0, sizeof msg);
    /* the config's shape is checked against the TENS table (which the file's size bounds) before
       anything is allocated for it: a small file cannot ask for a large model */
    if ((r = utg_artifact_config(a, &desc.config, &msg)) == UTG_OK) r = utg_config_model_size(&desc.config, &want_params, &want_tensors, &msg);
    for (i = 0; i < a->n_tensors; i++) have_params += a->tensors[i].numel;
    if (r == UTG_OK && (want_tensors != a->n_tensors || want_params != have_params)) {
        utg__msgf(&msg, "the META config describes %d tensors and %zu parameters, the artifact holds %d tensors and %zu parameters",
                  want_tensors, want_params, a->n_tensors, have_params);
        r = UTG_ERR_MISMATCH;
    }
    if (r != UTG_OK) {
        /* a model that holds only the message, so that the caller reads it as after any failure */
        utg_model_desc empty;
        memset(&empty, 0, sizeof empty);
        empty.allocator = desc.allocator;
        *out = (utg_model *)utg__alloc(&empty.allocator, sizeof(utg_model));
        if (!*out) return UTG_ERR_NOMEM;
        memset(*out, 0, sizeof(utg_model));
        (*out)->alloc = empty.allocator;
        utg__msgf(&(*out)->msg, "%s", msg.text);
        return r;
    }
    if ((r = utg_model_create(&desc, out)) != UTG_OK) return r;
    return utg_model_load_artifact(*out, a);
}

/* ---- quantization-aware training ---- */

/* Quantization-aware training: per quantized tensor its bits and clip, and the fp32 master weights
   kept aside in backend memory while the model runs on quantized ones (utg_qat_begin /
   utg_qat_end): the masters never leave the device. */
struct utg_qat {
    utg_model *m;
    int noisy, n, active;
    int *idx, *bits;
    utg_clip_mode *clip;
    double *param;
    float *master; /* backend memory: every quantized tensor's master, one after another */
    size_t total;
};

UTGDEF int utg_qat_wanted(const utg_config *cfg, int step, double lr_scale) {
    if (!cfg || cfg->qat == UTG_QAT_NONE) return 0;
    if (cfg->late_qat_threshold > 0.0) return lr_scale < cfg->late_qat_threshold;
    return step >= cfg->qat_start_step;
}

UTGDEF uint64_t utg_qat_noise_key(int seed, int step, int tensor) {
    uint64_t x = (uint64_t)(uint32_t)seed, k;
    x = utg__splitmix64(&x) ^ (uint64_t)(uint32_t)step;
    x = utg__splitmix64(&x) ^ (uint64_t)(uint32_t)tensor;
    k = utg__splitmix64(&x);
    return k ? k : 1; /* 0 asks fake_quant_rows for the STE form */
}

/* The quantized tensors of the plan into q's lists (bits, clip, k); q->total counts their floats. */
static void utg__qat_pick(utg_qat *q, const utg_tensor_quant *plan) {
    utg_model *m = q->m;
    int i;
    for (i = 0; i < m->n_tensors; i++) {
        if (plan[i].dtype != UTG_DT_Q) continue;
        q->idx[q->n] = i;
        q->bits[q->n] = m->cfg.qat_bits > 0 ? m->cfg.qat_bits : plan[i].bits;
        /* the records' STE rounds with the row max; SDClip keeps its k */
        q->clip[q->n] = plan[i].clip == UTG_CLIP_SDCLIP ? UTG_CLIP_SDCLIP : UTG_CLIP_MAX;
        q->param[q->n] = plan[i].param;
        q->total += m->tensors[i].numel;
        q->n++;
    }
}

UTGDEF utg_result utg_qat_create(utg_model *m, utg_qat **out) {
    utg_qat *q;
    utg_tensor_quant *plan;
    size_t n;
    if (!m || !out) return UTG_ERR_INVALID;
    *out = NULL;
    n = (size_t)(m->n_tensors ? m->n_tensors : 1);
    plan = (utg_tensor_quant *)utg__alloc(&m->alloc, sizeof *plan * n);
    q = (utg_qat *)utg__alloc(&m->alloc, sizeof *q);
    if (!plan || !q) { utg__free(&m->alloc, plan); utg__free(&m->alloc, q); return UTG_ERR_NOMEM; }
    memset(q, 0, sizeof *q);
    q->m = m;
    q->noisy = m->cfg.qat == UTG_QAT_NOISY;
    q->idx = (int *)utg__alloc(&m->alloc, sizeof(int) * n);
    q->bits = (int *)utg__alloc(&m->alloc, sizeof(int) * n);
    q->clip = (utg_clip_mode *)utg__alloc(&m->alloc, sizeof(utg_clip_mode) * n);
    q->param = (double *)utg__alloc(&m->alloc, sizeof(double) * n);
    if (!q->idx || !q->bits || !q->clip || !q->param) {
        utg__free(&m->alloc, plan);
        utg_qat_destroy(q);
        return UTG_ERR_NOMEM;
    }
    utg_model_quant_plan(m, NULL, plan, m->n_tensors);
    utg__qat_pick(q, plan);
    utg__free(&m->alloc, plan);
    q->master = (float *)m->be->buf_alloc(m->be, sizeof(float) * (q->total ? q->total : 1));
    if (!q->master) { utg_qat_destroy(q); return UTG_ERR_NOMEM; }
    *out = q;
    return UTG_OK;
}

UTGDEF void utg_qat_destroy(utg_qat *q) {
    utg_model *m;
    if (!q) return;
    m = q->m;
    if (q->master) m->be->buf_free(m->be, q->master);
    {
        void *owned[] = {q->idx, q->bits, q->clip, q->param, q};
        utg__free_all(&m->alloc, owned, 5);
    }
}

/* Each quantized tensor: its master set aside, then the fake-quantized master in its place. */
UTGDEF void utg_qat_begin(utg_qat *q, int step) {
    utg_model *m;
    utg_backend *be;
    size_t off = 0;
    int i;
    if (!q || q->active) return;
    m = q->m;
    be = m->be;
    for (i = 0; i < q->n; i++) {
        const utg_tensor_info *t = &m->tensors[q->idx[i]];
        float *master = q->master + off, *w = m->params + t->offset;
        uint64_t key = q->noisy ? utg_qat_noise_key(m->cfg.seed, step, q->idx[i]) : 0;
        be->copy(be, master, w, t->numel * sizeof(float));
        be->fake_quant_rows(be, w, master, (int)t->shape[0], (int)t->shape[1], q->bits[i], (int)q->clip[i],
                            q->param[i], key);
        off += t->numel;
    }
    q->active = 1;
}

UTGDEF void utg_qat_end(utg_qat *q) {
    utg_model *m;
    size_t off = 0;
    int i;
    if (!q || !q->active) return;
    m = q->m;
    for (i = 0; i < q->n; i++) { /* the masters back into the parameter arena */
        const utg_tensor_info *t = &m->tensors[q->idx[i]];
        m->be->copy(m->be, m->params + t->offset, q->master + off, t->numel * sizeof(float));
        off += t->numel;
    }
    q->active = 0;
}

/* ------------------------------------------------------------------------------------------------
// >>impl_public
   Small public helpers: result names, version, thread count, and the file helpers (read with a
   magic check, and an atomic write through a temporary file renamed into place).
   ------------------------------------------------------------------------------------------------ */

UTGDEF const char *utg_result_string(utg_result r) {
    switch (r) {
#define UTG__RESULT_CASE(name, value, text) case name: return text;
        UTG_RESULTS(UTG__RESULT_CASE)
#undef UTG__RESULT_CASE
    default: return "unknown result";
    }
}

UTGDEF const char *utg_version(void) { return UTG_VERSION_STRING; }
UTGDEF int utg_thread_count(void) { return utg__max_threads(); }
UTGDEF void utg_free(const utg_allocator *alloc, void *p) { utg__free(alloc, p); }

#ifndef UTG_NO_STDIO
/* utg_write_file's POSIX path (exclusive temporaries, fsync of the file and its directory, stale
   temporaries swept) is used when the including file asked for POSIX or is not in strict ISO mode;
   otherwise it falls back to ISO C stdio (see utg_write_file). */
#if (defined(__unix__) || defined(__APPLE__)) && (defined(_POSIX_C_SOURCE) || defined(_GNU_SOURCE) || \
                                                  defined(_DEFAULT_SOURCE) || !defined(__STRICT_ANSI__))
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#define UTG__POSIX_FILES 1
#endif

UTGDEF utg_result utg_read_file_magic(const char *path, const void *magic, size_t n_magic, size_t max_bytes, void **out,
                                      size_t *out_size, utg_msg *msg) {
    FILE *f;
    long len;
    unsigned char head[64];
    void *buf;
    if (!path || !out || !out_size || n_magic > sizeof head || (n_magic && !magic)) return UTG_ERR_INVALID;
    *out = NULL;
    *out_size = 0;
    f = fopen(path, "rb");
    if (!f) { utg__msgf(msg, "cannot open '%s'", path); return UTG_ERR_IO; }
    /* a directory opens on some systems and reports LONG_MAX: refuse it as not a regular file */
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || len == LONG_MAX || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        utg__msgf(msg, "cannot size '%s' (not a regular file?)", path);
        return UTG_ERR_IO;
    }
    if (n_magic && ((size_t)len < n_magic || fread(head, 1, n_magic, f) != n_magic || memcmp(head, magic, n_magic) != 0)) {
        char want[4 * 64 + 1], got[4 * 64 + 1];
        size_t k, nw = 0, ng = 0, have = (size_t)len < n_magic ? (size_t)len : n_magic;
        for (k = 0; k < n_magic; k++) { /* printable bytes as they are, others as \xNN */
            unsigned char cw = ((const unsigned char *)magic)[k];
            nw += (size_t)snprintf(want + nw, sizeof want - nw, cw >= 32 && cw < 127 && cw != '\\' ? "%c" : "\\x%02x", cw);
            if (k < have) ng += (size_t)snprintf(got + ng, sizeof got - ng, head[k] >= 32 && head[k] < 127 && head[k] != '\\' ? "%c" : "\\x%02x", head[k]);
        }
        want[nw] = got[ng] = 0;
        fclose(f);
        if ((size_t)len < n_magic) utg__msgf(msg, "'%s' has %ld bytes, shorter than its magic \"%s\": not a %s file", path, len, want, want);
        else utg__msgf(msg, "'%s' starts with \"%s\", not the magic \"%s\": not a %s file", path, got, want, want);
        return UTG_ERR_FORMAT;
    }
    if ((unsigned long)len > max_bytes) {
        fclose(f);
        utg__msgf(msg, "'%s' has %ld bytes, more than the %zu allowed", path, len, max_bytes);
        return UTG_ERR_FORMAT;
    }
    buf = utg__alloc(NULL, len ? (size_t)len : 1);
    if (!buf) { fclose(f); utg__msgf(msg, "out of memory reading '%s'", path); return UTG_ERR_NOMEM; }
    memcpy(buf, head, n_magic);
    if ((size_t)len > n_magic && fread((char *)buf + n_magic, 1, (size_t)len - n_magic, f) != (size_t)len - n_magic) {
        utg__free(NULL, buf);
        fclose(f);
        utg__msgf(msg, "short read on '%s'", path);
        return UTG_ERR_IO;
    }
    fclose(f);
    *out = buf;
    *out_size = (size_t)len;
    return UTG_OK;
}

UTGDEF utg_result utg_read_file(const char *path, size_t max_bytes, void **out, size_t *out_size, utg_msg *msg) {
    return utg_read_file_magic(path, NULL, 0, max_bytes, out, out_size, msg);
}

/* Temporaries are named "<path>.<pid>-<n>.utgtmp": unique per process and call, and recognisable,
   so that a crashed writer's leftovers can be told apart from anything else in the directory. */
#define UTG__TMP_SUFFIX ".utgtmp"

/* path -> its directory ("." when none, "/" for the root) and its last component, for the
   temporary file that utg_write_file renames over the target. */
static void utg__split_path(const char *path, char *dir, size_t dir_size, const char **base) {
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    *base = slash ? slash + 1 : path;
    if (!slash) snprintf(dir, dir_size, ".");
    else if (n == 0) snprintf(dir, dir_size, "/");
    else snprintf(dir, dir_size, "%.*s", (int)n, path);
}

#ifdef UTG__POSIX_FILES
/* Remove "<base>.<pid>-<n>.utgtmp" files in dir whose writer process no longer exists. */
static void utg__sweep_stale_tmps(const char *dir, const char *base) {
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t nb = strlen(base), ns = strlen(UTG__TMP_SUFFIX);
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name, *p;
        size_t len = strlen(name);
        char *end;
        long pid;
        char full[4096];
        if (len <= nb + 1 + ns || strncmp(name, base, nb) || name[nb] != '.' ||
            strcmp(name + len - ns, UTG__TMP_SUFFIX))
            continue;
        p = name + nb + 1;
        if (!(*p >= '1' && *p <= '9')) continue;
        pid = strtol(p, &end, 10);
        if (*end != '-' || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive, or not ours to judge */
        if ((size_t)snprintf(full, sizeof full, "%s/%s", dir, name) < sizeof full) unlink(full);
    }
    closedir(d);
}

/* write(2) all of it, retrying short writes and EINTR */
static int utg__write_all(int fd, const void *bytes, size_t size) {
    const char *p = (const char *)bytes;
    while (size > 0) {
        ssize_t w = write(fd, p, size > ((size_t)1 << 30) ? ((size_t)1 << 30) : size);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return 0;
        p += w;
        size -= (size_t)w;
    }
    return 1;
}
#endif

UTGDEF utg_result utg_write_file(const char *path, const void *bytes, size_t size, utg_msg *msg) {
    static unsigned long serial; /* with the pid, makes each temporary name unique */
    char tmp[4096], dir[4096];
    const char *base, *step = "create";
    int ok = 0;
    if (!path || !path[0] || (!bytes && size)) return UTG_ERR_INVALID;
    if (strlen(path) + 48 >= sizeof tmp) { utg__msgf(msg, "path too long (%zu bytes): '%.64s...'", strlen(path), path); return UTG_ERR_INVALID; }
    utg__split_path(path, dir, sizeof dir, &base);
#ifdef UTG__POSIX_FILES
    {
        int fd = -1, tries, err = 0;
        utg__sweep_stale_tmps(dir, base);
        /* O_CREAT | O_EXCL never follows a symlink and never opens an existing file */
        for (tries = 0; fd < 0 && tries < 100; tries++) {
            snprintf(tmp, sizeof tmp, "%s.%ld-%lu" UTG__TMP_SUFFIX, path, (long)getpid(), serial++);
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
            if (fd < 0 && errno != EEXIST) break;
        }
        if (fd >= 0) {
            struct stat old;
            if (stat(path, &old) == 0 && S_ISREG(old.st_mode)) fchmod(fd, old.st_mode & 07777); /* a replaced file keeps its mode */
            ok = utg__write_all(fd, bytes, size);
            if (!ok) { err = errno; step = "write"; }
            if (ok && !(ok = fsync(fd) == 0)) { err = errno; step = "fsync"; }
            if (close(fd) != 0 && ok) { ok = 0; err = errno; step = "close"; }
            if (ok && !(ok = rename(tmp, path) == 0)) { err = errno; step = "rename"; }
            if (!ok) unlink(tmp);
            if (ok) { /* the rename itself reaches the disk with the directory */
                int dfd = open(dir, O_RDONLY);
                if (dfd < 0 || fsync(dfd) != 0) { ok = 0; err = errno; step = "fsync the directory of"; }
                if (dfd >= 0) close(dfd);
            }
        } else err = errno;
        if (!ok) {
            utg__msgf(msg, "cannot %s '%s': %s", step, step[0] == 'c' && step[1] == 'r' ? tmp : path, strerror(err));
            return UTG_ERR_IO;
        }
    }
#else
    {   /* ISO C: a fresh temporary name, then rename; nothing forces the data to disk, and an
           existing file at the temporary's name (or a link there) is not detected */
        FILE *f;
        snprintf(tmp, sizeof tmp, "%s.%lu" UTG__TMP_SUFFIX, path, serial++);
        f = fopen(tmp, "wb");
        if (f) {
            ok = fwrite(bytes, 1, size, f) == size && fflush(f) == 0;
            ok = (fclose(f) == 0) && ok;
            step = "write";
            if (ok && rename(tmp, path) != 0) { /* Windows' rename does not replace: remove first */
                remove(path);
                ok = rename(tmp, path) == 0;
                step = "rename";
            }
            if (!ok) remove(tmp);
        }
        if (!ok) { utg__msgf(msg, "cannot %s '%s'", step, step[0] == 'c' ? tmp : path); return UTG_ERR_IO; }
    }
#endif
    return UTG_OK;
}
#endif /* UTG_NO_STDIO */

/* ------------------------------------------------------------------------------------------------
// >>backend_cpu
   The reference. Every op is written so that its result does not depend on the thread count:
   each output element is produced by one thread in a fixed order, and reductions over rows go
   through fixed row chunks summed in order.
   ------------------------------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------------------------------
// >>cpu_memory
   The backend's state (utg__cpu), its memory and the bulk moves. Backend memory on the CPU is host
   memory, 64-byte aligned, so "upload" and "download" are memcpy; every op of the table receives
   such pointers. Each calling thread owns one scratch slot that grows on demand and is freed only
   with the backend, so after the first step of a run no op allocates.
   ------------------------------------------------------------------------------------------------ */
#define UTG__CPU_RED_CHUNKS 32 /* row chunks of the deterministic column reductions */

typedef struct utg__gk utg__gk;
/* The CPU backend's private state (be->impl). */
typedef struct utg__cpu {
    utg_allocator alloc;
    const utg__gk *gk; /* the matmul microkernel picked for this CPU */
    int bf16_hw;       /* the AVX-512 kernel and avx512_bf16: bf16 matmuls use vdpbf16ps */
    float *scratch[UTG_BACKEND_MAX_CALLERS]; /* per calling thread: grown on demand, reused afterwards */
    size_t scratch_floats[UTG_BACKEND_MAX_CALLERS];
} utg__cpu;

/* The CPU state behind a backend this file created (be->impl). */
static utg__cpu *utg__cpu_of(utg_backend *be) { return (utg__cpu *)be->impl; }

/* Scratch that stays allocated: the first calls of a step size it, later steps reuse it. An op
   called from inside a parallel region (UTG_BACKEND_CONCURRENT) gets its caller's own slot. */
/* 64-byte aligned memory from the backend's allocator: over-allocate and keep the original pointer
   just before the block */
static void *utg__aligned_alloc(const utg_allocator *a, size_t n) {
    size_t total;
    unsigned char *raw, *p;
    if (!utg__add_ok(n, 64 + sizeof(void *), &total)) return NULL;
    raw = (unsigned char *)utg__alloc(a, total);
    if (!raw) return NULL;
    p = raw + sizeof(void *);
    p += (64 - ((uintptr_t)p & 63)) & 63;
    memcpy(p - sizeof(void *), &raw, sizeof(void *));
    return p;
}
/* Frees a block of utg__aligned_alloc through the raw pointer stored just before it; NULL is a no-op. */
static void utg__aligned_free(const utg_allocator *a, void *p) {
    void *raw;
    if (!p) return;
    memcpy(&raw, (unsigned char *)p - sizeof(void *), sizeof(void *));
    utg__free(a, raw);
}
/* The calling thread's scratch, 64-byte aligned: the ops that give each of their threads a part of it
   start the parts on whole cache lines (two threads writing one line slowed qk_norm_rope_bwd on two
   threads below its speed on one). */
static float *utg__cpu_scratch(utg_backend *be, size_t n_floats) {
    utg__cpu *c = utg__cpu_of(be);
    int slot = 0;
#ifdef _OPENMP
    if (omp_in_parallel()) slot = omp_get_thread_num();
#endif
    if (slot < 0 || slot >= UTG_BACKEND_MAX_CALLERS) return NULL;
    if (n_floats > c->scratch_floats[slot]) {
        float *p;
        size_t bytes;
        if (!utg__mul_ok(n_floats, sizeof(float), &bytes)) return NULL;
#ifdef _OPENMP
#pragma omp critical(utg__cpu_alloc)
#endif
        {
            p = (float *)utg__aligned_alloc(&c->alloc, bytes);
            if (p) utg__aligned_free(&c->alloc, c->scratch[slot]);
        }
        if (!p) return NULL;
        c->scratch[slot] = p;
        c->scratch_floats[slot] = n_floats;
    }
    return c->scratch[slot];
}

/* zero-filled, 64-byte aligned */
static void *utg__cpu_buf_alloc(utg_backend *be, size_t n) {
    void *p = utg__aligned_alloc(&utg__cpu_of(be)->alloc, n);
    if (p) memset(p, 0, n);
    return p;
}
/* buf_free, upload and download: host memory throughout, so the transfers are plain copies. */
static void utg__cpu_buf_free(utg_backend *be, void *buf) { utg__aligned_free(&utg__cpu_of(be)->alloc, buf); }
static void utg__cpu_memcpy(utg_backend *be, void *dst, const void *src, size_t n) {
    (void)be;
    if (n) memcpy(dst, src, n);
}
/* whether [a, a + na) and [b, b + nb) (floats) share memory */
static int utg__overlap(const float *a, size_t na, const float *b, size_t nb) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return na && nb && pa < pb + nb * sizeof(float) && pb < pa + na * sizeof(float);
}
/* whether two ranges of n bytes share memory */
static int utg__overlap_bytes(const void *a, const void *b, size_t n) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return n && pa < pb + n && pb < pa + n;
}
/* fill and copy: one memset/memcpy per 64 KiB chunk, spread over the threads from 256 KiB up (a
   training step clears and copies tens of MB of gradient buffers) */
#define UTG__CHUNK ((size_t)16384)
static void utg__cpu_fill_f32(utg_backend *be, float *dst, float v, size_t n) {
    long long c, nc = (long long)((n + UTG__CHUNK - 1) / UTG__CHUNK);
    size_t i;
    (void)be;
    if (n < 4 * UTG__CHUNK) {
        if (v == 0.0f) memset(dst, 0, n * sizeof(float));
        else for (i = 0; i < n; i++) dst[i] = v;
        return;
    }
    UTG__OMP_FOR
    for (c = 0; c < nc; c++) {
        size_t i0 = (size_t)c * UTG__CHUNK, i1 = i0 + UTG__CHUNK > n ? n : i0 + UTG__CHUNK, j;
        if (v == 0.0f) memset(dst + i0, 0, (i1 - i0) * sizeof(float));
        else for (j = i0; j < i1; j++) dst[j] = v;
    }
}
/* dst = src over n floats; overlapping ranges take one memmove (chunks could read what others wrote). */
static void utg__cpu_copy(utg_backend *be, void *dst, const void *src, size_t size_bytes) {
    const size_t chunk = UTG__CHUNK * sizeof(float);
    long long c, nc = (long long)((size_bytes + chunk - 1) / chunk);
    (void)be;
    if (!size_bytes || dst == src) return;
    if (size_bytes < 4 * chunk || utg__overlap_bytes(dst, src, size_bytes)) { /* overlap: one memmove */
        memmove(dst, src, size_bytes);
        return;
    }
    UTG__OMP_FOR
    for (c = 0; c < nc; c++) {
        size_t i0 = (size_t)c * chunk, i1 = i0 + chunk > size_bytes ? size_bytes : i0 + chunk;
        memcpy((char *)dst + i0, (const char *)src + i0, i1 - i0);
    }
}

/* The collectives of one process (rank 0 of 1): the sum over one rank and the broadcast change
   nothing; the gather copies this rank's part into place. */
static void utg__cpu_all_reduce(utg_backend *be, void *buf, utg_dtype dtype, size_t n) {
    (void)be, (void)buf, (void)dtype, (void)n;
}
static void utg__cpu_broadcast(utg_backend *be, void *buf, size_t size_bytes, int root) {
    (void)be, (void)buf, (void)size_bytes, (void)root;
}
static void utg__cpu_all_gather(utg_backend *be, void *dst, const void *src, size_t size_bytes) {
    (void)be;
    if (size_bytes) memcpy(dst, src, size_bytes);
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_gemm
   The fp32 matmul's building blocks: the microkernels (portable, AVX-512, AVX2), the transposing
   packers, and the per-CPU choice between them (utg__gk). Layouts: a packed A sliver is k-major
   with MR values per k (ap[k * MR + r]); a packed B panel is k-major with NR values per k
   (bp[k * NR + j]); the kernels read both through a k-stride, so data already in that shape is
   passed in place. The drivers that walk the KC x NC blocks follow under >>cpu_gemm_driver, the
   bf16 variants under >>cpu_bf16.
   ------------------------------------------------------------------------------------------------ */
/* Matmul: packed and register-blocked (the BLIS scheme). For each KC x NC block of op(B), the
   threads take MR x KC slivers of op(A) and run the microkernel over every NR-wide panel of the
   block, holding an MR x NR tile of C in registers across the k loop. The microkernel takes both
   operands' k-strides, so what is already laid out right is read in place: whole slivers with
   alpha 1 (A^T's columns, or A's rows through the AVX-512 rows kernel) and whole panels of a
   non-transposed B when N <= 512 (k blocks 256 deep above N = 256, so the block stays in L2). The
   rest is packed, in whichever layout it comes (trans flags), with alpha folded into A; partial
   slivers and panels are packed and zero-padded. Every C element is summed in k order by one
   thread: the result does not depend on the thread count. A^T B with K >= 1024 (the weight
   gradients) sums K's two halves apart, each in k order, and adds them: halves fixed by the shape,
   so this holds there too. C is stored tile by tile while A and B are still read, so C must not
   overlap A or B.

   Microkernels are picked once per backend from the CPU's features (UTG_CPU_KERNEL=avx512 | avx2 |
   portable in the environment overrides): AVX-512 12 x 32 (24 zmm accumulators), AVX2+FMA 6 x 16
   (12 ymm), and a portable one in C (GCC/Clang vector extensions at the build's ISA, else scalar).
   The x86 kernels are compiled with target attributes, so the header needs no -m flags for them. */
#define UTG__KC 512
#define UTG__NC 512
#define UTG__MR_MAX 12
#define UTG__NR_MAX 32
#if (defined(__GNUC__) || defined(__clang__)) && !defined(UTG_NO_VECTOR_EXT)
#define UTG__VEXT 1
#if defined(__AVX512F__)
#define UTG__VW 16
#else
#define UTG__VW 8
#endif
typedef float utg__vf __attribute__((vector_size(UTG__VW * 4)));
#else
#define UTG__VW 8
#endif
#if defined(UTG__VEXT) && defined(__x86_64__) && !defined(UTG_NO_X86_KERNELS) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 6) ||              \
     (defined(__clang__) && __clang_major__ >= 8))
#define UTG__X86_KERNELS 1
#include <immintrin.h>
#endif

/* C[mr x nr] += Ap (k-major: MR values per k, as apart) times Bp (k-major, NR per k), for kc steps;
   acc 0: C = the product. The kernel reads all MR values of each k (rows past mr feed only rows it
   does not store), so Ap needs MR - mr readable floats past its last row. as is MR for packed
   slivers; the attention passes its score tiles as they stand (as = the tile's width). */
typedef void (*utg__ukernel_fn)(int kc, const float *UTG_RESTRICT Ap, int as, const float *UTG_RESTRICT Bp,
                                int bs, float *UTG_RESTRICT C, int ldc, int mr, int nr, int acc);
/* dst[k * W + r] = alpha * src[r * ld + k] for r < nrows, k < kb; rows [nrows, W) zero (W <= 32):
   the transposing half of packing (A not transposed, B transposed), where plain copies do not do */
typedef void (*utg__pack_t_fn)(float *UTG_RESTRICT dst, int W, const float *UTG_RESTRICT src, int ld,
                               int nrows, int kb, float alpha);
/* C[MR x nr] += A's MR rows read in place (row stride lda, k contiguous) times Bp, for kc steps: a
   non-transposed A without packing (whole slivers, alpha 1; NULL where a kernel has none) */
typedef void (*utg__ukernel_rows_fn)(int kc, const float *UTG_RESTRICT A, int lda,
                                     const float *UTG_RESTRICT Bp, int bs, float *UTG_RESTRICT C, int ldc,
                                     int nr, int acc);
struct utg__gk {
    int mr, nr;
    utg__ukernel_fn fn;
    const char *name;
    utg__pack_t_fn pack_t;
    utg__ukernel_rows_fn fn_rows;
};

/* utg__pack_t_fn in plain C: row by row, each row scattered down a column of dst (stride W). */
static void utg__pack_t_scalar(float *UTG_RESTRICT dst, int W, const float *UTG_RESTRICT src, int ld, int nrows, int kb,
                               float alpha) {
    int r, k;
    for (r = 0; r < nrows; r++) {
        const float *x = src + (size_t)r * ld;
        for (k = 0; k < kb; k++) dst[(size_t)k * W + r] = alpha * x[k];
    }
    for (; r < W; r++)
        for (k = 0; k < kb; k++) dst[(size_t)k * W + r] = 0.0f;
}

/* Stores the top-left mr x nr of a register tile (row stride nr_full) into C: C = tile (acc 0) or
   C += tile. The edge path of the kernels that spill their accumulators to the stack first. */
static void utg__tile_add(float *C, int ldc, const float *tile, int nr_full, int mr, int nr, int acc) {
    int r, j;
    for (r = 0; r < mr; r++)
        for (j = 0; j < nr; j++) C[(size_t)r * ldc + j] = acc ? C[(size_t)r * ldc + j] + tile[(size_t)r * nr_full + j] : tile[(size_t)r * nr_full + j];
}

/* portable: MR 6, NR 2 * VW */
#define UTG__PMR 6
#define UTG__PNR (2 * UTG__VW)
/* The portable microkernel (utg__ukernel_fn): a 6 x 2VW tile in twelve vector accumulators, each
   k step one B row (two vectors) times six broadcast A values. Without vector extensions the same
   tile in scalar loops; the sums run in k order either way, so the two builds agree bit for bit
   where the compiler does not contract differently. */
static void utg__uk_portable(int kc, const float *UTG_RESTRICT Ap, int as, const float *UTG_RESTRICT Bp, int bs, float *UTG_RESTRICT C,
                             int ldc, int mr, int nr, int acc) {
    float tile[UTG__PMR][UTG__PNR];
    int k;
#if defined(UTG__VEXT)
    utg__vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    utg__vf c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    for (k = 0; k < kc; k++) {
        utg__vf b0, b1;
        const float *a = Ap + (size_t)k * as;
        memcpy(&b0, Bp + (size_t)k * bs, sizeof b0);
        memcpy(&b1, Bp + (size_t)k * bs + UTG__VW, sizeof b1);
        c00 += a[0] * b0; c01 += a[0] * b1;
        c10 += a[1] * b0; c11 += a[1] * b1;
        c20 += a[2] * b0; c21 += a[2] * b1;
        c30 += a[3] * b0; c31 += a[3] * b1;
        c40 += a[4] * b0; c41 += a[4] * b1;
        c50 += a[5] * b0; c51 += a[5] * b1;
    }
    memcpy(&tile[0][0], &c00, sizeof c00); memcpy(&tile[0][UTG__VW], &c01, sizeof c01);
    memcpy(&tile[1][0], &c10, sizeof c10); memcpy(&tile[1][UTG__VW], &c11, sizeof c11);
    memcpy(&tile[2][0], &c20, sizeof c20); memcpy(&tile[2][UTG__VW], &c21, sizeof c21);
    memcpy(&tile[3][0], &c30, sizeof c30); memcpy(&tile[3][UTG__VW], &c31, sizeof c31);
    memcpy(&tile[4][0], &c40, sizeof c40); memcpy(&tile[4][UTG__VW], &c41, sizeof c41);
    memcpy(&tile[5][0], &c50, sizeof c50); memcpy(&tile[5][UTG__VW], &c51, sizeof c51);
#else
    int r, j;
    memset(tile, 0, sizeof tile);
    for (k = 0; k < kc; k++)
        for (r = 0; r < UTG__PMR; r++)
            for (j = 0; j < UTG__PNR; j++) tile[r][j] += Ap[(size_t)k * as + r] * Bp[(size_t)k * bs + j];
#endif
    utg__tile_add(C, ldc, &tile[0][0], UTG__PNR, mr, nr, acc);
}

#if defined(UTG__X86_KERNELS)
/* AVX-512: 12 rows x 32 columns, two zmm per row */
#define UTG__Z2(r) __m512 c##r##a = _mm512_setzero_ps(), c##r##b = _mm512_setzero_ps()
#define UTG__ZF(r)                                                                                 \
    do {                                                                                           \
        __m512 t_ = _mm512_set1_ps(a[r]);                                                          \
        c##r##a = _mm512_fmadd_ps(t_, b0, c##r##a);                                                \
        c##r##b = _mm512_fmadd_ps(t_, b1, c##r##b);                                                \
    } while (0)
#define UTG__ZS(r)                                                                                 \
    do {                                                                                           \
        float *o_ = C + (size_t)(r) * ldc;                                                         \
        _mm512_storeu_ps(o_, acc ? _mm512_add_ps(_mm512_loadu_ps(o_), c##r##a) : c##r##a);         \
        _mm512_storeu_ps(o_ + 16, acc ? _mm512_add_ps(_mm512_loadu_ps(o_ + 16), c##r##b) : c##r##b); \
    } while (0)
/* an edge tile: rows below mr, columns below nr (masks m0, m1), straight from the registers */
#define UTG__ZM(r)                                                                                 \
    do {                                                                                           \
        if ((r) < mr) {                                                                            \
            float *o_ = C + (size_t)(r) * ldc;                                                     \
            __m512 x_ = acc ? _mm512_add_ps(_mm512_maskz_loadu_ps(m0, o_), c##r##a) : c##r##a;     \
            _mm512_mask_storeu_ps(o_, m0, x_);                                                     \
            x_ = acc ? _mm512_add_ps(_mm512_maskz_loadu_ps(m1, o_ + 16), c##r##b) : c##r##b;      \
            _mm512_mask_storeu_ps(o_ + 16, m1, x_);                                                \
        }                                                                                          \
    } while (0)
/* The AVX-512 microkernel: 12 x 32 tile in 24 zmm accumulators, each k step two B loads and 12
   broadcasts of A (24 FMAs per k step). Full tiles are stored directly, edge tiles through masks
   (UTG__ZM), so there is no tile buffer and no scalar tail. */
__attribute__((target("avx512f,fma"))) static void utg__uk_avx512(int kc, const float *UTG_RESTRICT Ap,
                                                                  int as, const float *UTG_RESTRICT Bp,
                                                                  int bs, float *UTG_RESTRICT C, int ldc,
                                                                  int mr, int nr, int acc) {
    UTG__Z2(0); UTG__Z2(1); UTG__Z2(2); UTG__Z2(3); UTG__Z2(4); UTG__Z2(5);
    UTG__Z2(6); UTG__Z2(7); UTG__Z2(8); UTG__Z2(9); UTG__Z2(10); UTG__Z2(11);
    int k;
    for (k = 0; k < kc; k++) {
        const float *a = Ap + (size_t)k * as;
        __m512 b0 = _mm512_loadu_ps(Bp + (size_t)k * bs), b1 = _mm512_loadu_ps(Bp + (size_t)k * bs + 16);
        UTG__ZF(0); UTG__ZF(1); UTG__ZF(2); UTG__ZF(3); UTG__ZF(4); UTG__ZF(5);
        UTG__ZF(6); UTG__ZF(7); UTG__ZF(8); UTG__ZF(9); UTG__ZF(10); UTG__ZF(11);
    }
    if (mr == 12 && nr == 32) {
        UTG__ZS(0); UTG__ZS(1); UTG__ZS(2); UTG__ZS(3); UTG__ZS(4); UTG__ZS(5);
        UTG__ZS(6); UTG__ZS(7); UTG__ZS(8); UTG__ZS(9); UTG__ZS(10); UTG__ZS(11);
    } else {
        __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffffu : (1u << nr) - 1u),
                  m1 = (__mmask16)(nr <= 16 ? 0u : (1u << (nr - 16)) - 1u);
        UTG__ZM(0); UTG__ZM(1); UTG__ZM(2); UTG__ZM(3); UTG__ZM(4); UTG__ZM(5);
        UTG__ZM(6); UTG__ZM(7); UTG__ZM(8); UTG__ZM(9); UTG__ZM(10); UTG__ZM(11);
    }
}

/* The same with A's 12 rows read in place: four row pointers, the other rows at lda and 2 lda
   from them (one addressing mode each), moving along k together */
__attribute__((target("avx512f,fma"))) static void utg__uk_avx512_rows(int kc, const float *UTG_RESTRICT A,
                                                                       int lda, const float *UTG_RESTRICT Bp,
                                                                       int bs, float *UTG_RESTRICT C, int ldc,
                                                                       int nr, int acc) {
    UTG__Z2(0); UTG__Z2(1); UTG__Z2(2); UTG__Z2(3); UTG__Z2(4); UTG__Z2(5);
    UTG__Z2(6); UTG__Z2(7); UTG__Z2(8); UTG__Z2(9); UTG__Z2(10); UTG__Z2(11);
    const size_t l1 = (size_t)lda, l2 = 2 * (size_t)lda;
    const float *p0 = A, *p3 = A + 3 * l1, *p6 = A + 6 * l1, *p9 = A + 9 * l1;
    const int mr = 12;
    int k;
    for (k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(Bp + (size_t)k * bs), b1 = _mm512_loadu_ps(Bp + (size_t)k * bs + 16);
        float a[12];
        a[0] = p0[k]; a[1] = p0[k + l1]; a[2] = p0[k + l2];
        a[3] = p3[k]; a[4] = p3[k + l1]; a[5] = p3[k + l2];
        a[6] = p6[k]; a[7] = p6[k + l1]; a[8] = p6[k + l2];
        a[9] = p9[k]; a[10] = p9[k + l1]; a[11] = p9[k + l2];
        UTG__ZF(0); UTG__ZF(1); UTG__ZF(2); UTG__ZF(3); UTG__ZF(4); UTG__ZF(5);
        UTG__ZF(6); UTG__ZF(7); UTG__ZF(8); UTG__ZF(9); UTG__ZF(10); UTG__ZF(11);
    }
    if (nr == 32) {
        UTG__ZS(0); UTG__ZS(1); UTG__ZS(2); UTG__ZS(3); UTG__ZS(4); UTG__ZS(5);
        UTG__ZS(6); UTG__ZS(7); UTG__ZS(8); UTG__ZS(9); UTG__ZS(10); UTG__ZS(11);
    } else {
        __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffffu : (1u << nr) - 1u),
                  m1 = (__mmask16)(nr <= 16 ? 0u : (1u << (nr - 16)) - 1u);
        UTG__ZM(0); UTG__ZM(1); UTG__ZM(2); UTG__ZM(3); UTG__ZM(4); UTG__ZM(5);
        UTG__ZM(6); UTG__ZM(7); UTG__ZM(8); UTG__ZM(9); UTG__ZM(10); UTG__ZM(11);
    }
}

/* AVX2 + FMA: 6 rows x 16 columns, two ymm per row */
#define UTG__Y2(r) __m256 c##r##a = _mm256_setzero_ps(), c##r##b = _mm256_setzero_ps()
#define UTG__YF(r)                                                                                 \
    do {                                                                                           \
        __m256 t_ = _mm256_broadcast_ss(a + (r));                                                  \
        c##r##a = _mm256_fmadd_ps(t_, b0, c##r##a);                                                \
        c##r##b = _mm256_fmadd_ps(t_, b1, c##r##b);                                                \
    } while (0)
#define UTG__YT(r)                                                                                 \
    do {                                                                                           \
        _mm256_storeu_ps(tile + (r) * 16, c##r##a);                                                \
        _mm256_storeu_ps(tile + (r) * 16 + 8, c##r##b);                                            \
    } while (0)
/* The AVX2 microkernel: 6 x 16 tile in 12 ymm accumulators (of 16 registers, leaving room for the
   two B vectors and a broadcast). Every tile, full or edge, goes through a stack buffer and
   utg__tile_add. */
__attribute__((target("avx2,fma"))) static void utg__uk_avx2(int kc, const float *UTG_RESTRICT Ap, int as,
                                                             const float *UTG_RESTRICT Bp, int bs,
                                                             float *UTG_RESTRICT C, int ldc, int mr, int nr,
                                                             int acc) {
    UTG__Y2(0); UTG__Y2(1); UTG__Y2(2); UTG__Y2(3); UTG__Y2(4); UTG__Y2(5);
    float tile[6 * 16];
    int k;
    for (k = 0; k < kc; k++) {
        const float *a = Ap + (size_t)k * as;
        __m256 b0 = _mm256_loadu_ps(Bp + (size_t)k * bs), b1 = _mm256_loadu_ps(Bp + (size_t)k * bs + 8);
        UTG__YF(0); UTG__YF(1); UTG__YF(2); UTG__YF(3); UTG__YF(4); UTG__YF(5);
    }
    UTG__YT(0); UTG__YT(1); UTG__YT(2); UTG__YT(3); UTG__YT(4); UTG__YT(5);
    utg__tile_add(C, ldc, tile, 16, mr, nr, acc);
}
#endif

#if defined(UTG__X86_KERNELS)
/* r[k] = column k of the 16 x 16 block whose rows were r[0..15] (four shuffle stages) */
__attribute__((target("avx512f"))) static inline void utg__tr16(__m512 *r) {
    __m512 t[16];
    int i;
#pragma GCC unroll 8
    for (i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (i = 0; i < 4; i++) { /* r[4i + c], 128-bit lane L: column 4L + c of rows 4i..4i+3 */
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
#pragma GCC unroll 4
    for (i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x44);
        t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xEE);
        t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x44);
        t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xEE);
    }
#pragma GCC unroll 4
    for (i = 0; i < 4; i++) { /* r[k]: column k of the 16 rows */
        r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
        r[4 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xDD);
        r[8 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88);
        r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xDD);
    }
}
/* The same with 16 x 16 register transposes: 16 rows x 16 k loaded (masked at the edges), turned
   in four shuffle stages, stored as 16 k rows of up to 16 lanes. */
__attribute__((target("avx512f"))) static void utg__pack_t_avx512(float *UTG_RESTRICT dst, int W,
                                                                  const float *UTG_RESTRICT src, int ld,
                                                                  int nrows, int kb, float alpha) {
    const __m512 va = _mm512_set1_ps(alpha);
    int g, k0, i;
    for (g = 0; g < W; g += 16) {
        int gr = nrows - g < 0 ? 0 : (nrows - g > 16 ? 16 : nrows - g), wl = W - g < 16 ? W - g : 16;
        __mmask16 sm = (__mmask16)((1u << wl) - 1u);
        for (k0 = 0; k0 < kb; k0 += 16) {
            int kl = kb - k0 < 16 ? kb - k0 : 16;
            __mmask16 lm = (__mmask16)((1u << kl) - 1u);
            __m512 r[16];
#pragma GCC unroll 16
            for (i = 0; i < 16; i++)
                r[i] = i < gr ? _mm512_mul_ps(va, _mm512_maskz_loadu_ps(lm, src + (size_t)(g + i) * ld + k0))
                              : _mm512_setzero_ps();
            utg__tr16(r);
            for (i = 0; i < kl; i++) _mm512_mask_storeu_ps(dst + (size_t)(k0 + i) * W + g, sm, r[i]);
        }
    }
}
#endif

/* The kernel sets: tile shape, microkernel, transposing packer, in-place row kernel (or NULL). */
static const utg__gk utg__gk_portable = {UTG__PMR,   UTG__PNR,           utg__uk_portable,
                                         "portable", utg__pack_t_scalar, NULL};
#if defined(UTG__X86_KERNELS)
static const utg__gk utg__gk_avx512 = {
    12, 32, utg__uk_avx512, "avx512", utg__pack_t_avx512, utg__uk_avx512_rows};
static const utg__gk utg__gk_avx2 = {6, 16, utg__uk_avx2, "avx2", utg__pack_t_scalar, NULL};
#endif

/* The kernel for this CPU, or the one UTG_CPU_KERNEL names (when the CPU has it). */
static const utg__gk *utg__gk_pick(void) {
#if defined(UTG__X86_KERNELS)
    const char *want = getenv("UTG_CPU_KERNEL");
    int has512, has2;
    __builtin_cpu_init();
    has512 = __builtin_cpu_supports("avx512f") != 0;
    has2 = __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0;
    if (want && !strcmp(want, "portable")) return &utg__gk_portable;
    if (want && !strcmp(want, "avx2") && has2) return &utg__gk_avx2;
    if (has512) return &utg__gk_avx512;
    if (has2) return &utg__gk_avx2;
#endif
    return &utg__gk_portable;
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_bf16
   matmul_bf16: both operands rounded to bf16 (round to nearest even) and the products summed in
   fp32, as train_gpt.py's Newton-Schulz under bf16 autocast. Without avx512_bf16 the fp32 path
   runs on operands rounded in place after packing (utg__bf16_round_n); with it, A and B are
   packed as pairs of bf16 along k in uint32 lanes and utg__uk_bf16 does two k steps per
   vdpbf16ps. The products of two bf16 values are exact in fp32 on both paths.
   ------------------------------------------------------------------------------------------------ */
/* bf16 bits of f, rounded to nearest even (a NaN stays a NaN) */
static uint32_t utg__bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
/* x[i] = x[i] rounded to bf16 and widened back to fp32, over n floats (a packed sliver or panel). */
static void utg__bf16_round_n(float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        uint32_t b = utg__bf16_bits(x[i]) << 16;
        memcpy(x + i, &b, 4);
    }
}

#if defined(UTG__X86_KERNELS)
/* The avx512_bf16 path: A and B packed as bf16 pairs along k (low half: even k), so one vdpbf16ps
   does two k steps of a 12 x 32 tile; C accumulates in fp32. */
#define UTG__KCP UTG__KC /* k pairs per block: 2 * KC values of k */
/* bf16 bits (nearest even; a NaN stays a NaN) of two floats as one pair, lo in the low half: the
   definition the vector packers follow (the tests compare them against it) */
__attribute__((unused)) static uint32_t utg__bf16_pair(float lo, float hi) { return utg__bf16_bits(lo) | utg__bf16_bits(hi) << 16; }
/* dst[p * W + r] = bf16 pair (alpha src[r ld + 2p], alpha src[r ld + 2p + 1]) for r < nrows, rows up
   to W (<= 32) zero: 16 rows x 32 k converted to 16 x 16 pairs (vcvtne2ps2bf16, nearest even, as
   utg__bf16_pair except that it reads denormals as zero), then transposed as 32-bit lanes */
__attribute__((target("avx512f,avx512bf16"))) static void utg__pack_pairs_t(uint32_t *UTG_RESTRICT dst, int W,
                                                                            const float *UTG_RESTRICT src,
                                                                            int ld, int nrows, int kb,
                                                                            float alpha) {
    const __m512 va = _mm512_set1_ps(alpha);
    int g, k0, i;
    for (g = 0; g < W; g += 16) {
        int gr = nrows - g < 0 ? 0 : (nrows - g > 16 ? 16 : nrows - g), wl = W - g < 16 ? W - g : 16;
        __mmask16 sm = (__mmask16)((1u << wl) - 1u);
        for (k0 = 0; k0 < kb; k0 += 32) {
            int kl = kb - k0 < 32 ? kb - k0 : 32, pl = (kl + 1) / 2;
            __mmask16 lo = (__mmask16)(kl >= 16 ? 0xffffu : (1u << kl) - 1u),
                      hi = (__mmask16)(kl <= 16 ? 0u : (kl >= 32 ? 0xffffu : (1u << (kl - 16)) - 1u));
            __m512 r[16];
#pragma GCC unroll 16
            for (i = 0; i < 16; i++) {
                if (i < gr) {
                    const float *x = src + (size_t)(g + i) * ld + k0;
                    __m512 a = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(lo, x)),
                           b = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(hi, x + 16));
                    r[i] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(b, a));
                } else {
                    r[i] = _mm512_setzero_ps();
                }
            }
            utg__tr16(r);
            for (i = 0; i < pl; i++)
                _mm512_mask_storeu_ps((float *)(dst + (size_t)(k0 / 2 + i) * W + g), sm, r[i]);
        }
    }
}
/* d[r] = bf16 pair (alpha s0[r], alpha s1[r]) for r < n (s1 NULL: zero), 0 for n <= r < w (n <= w <= 16):
   utg__bf16_pair in 16 lanes, for the row-wise pair packing (A^T's slivers, B's panels) */
__attribute__((target("avx512f"))) static void utg__pair_rows(uint32_t *d, const float *s0, const float *s1,
                                                              int n, int w, float alpha) {
    const __mmask16 m = (__mmask16)((1u << n) - 1u);
    const __m512 va = _mm512_set1_ps(alpha);
    const __m512i one = _mm512_set1_epi32(1), rnd = _mm512_set1_epi32(0x7fff),
                  inf = _mm512_set1_epi32(0x7f800000), absm = _mm512_set1_epi32(0x7fffffff),
                  qbit = _mm512_set1_epi32(0x400000);
    __m512i a = _mm512_castps_si512(_mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, s0)));
    __m512i b =
        s1 ? _mm512_castps_si512(_mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, s1))) : _mm512_setzero_si512();
    /* a NaN is cut to its high half and made quiet (rounding could carry its payload into the sign) */
    __mmask16 na = _mm512_cmpgt_epu32_mask(_mm512_and_si512(a, absm), inf),
              nb = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, absm), inf);
    a = _mm512_mask_blend_epi32(
        na, _mm512_add_epi32(_mm512_add_epi32(a, rnd), _mm512_and_si512(_mm512_srli_epi32(a, 16), one)),
        _mm512_or_si512(a, qbit));
    b = _mm512_mask_blend_epi32(
        nb, _mm512_add_epi32(_mm512_add_epi32(b, rnd), _mm512_and_si512(_mm512_srli_epi32(b, 16), one)),
        _mm512_or_si512(b, qbit));
    a = _mm512_srli_epi32(a, 16);
    b = _mm512_and_si512(b, _mm512_set1_epi32((int)0xffff0000u));
    _mm512_mask_storeu_epi32(d, (__mmask16)((1u << w) - 1u),
                             _mm512_maskz_mov_epi32(m, _mm512_or_si512(a, b)));
}
/* op(B)[kc:kc+kb, j0:j0+32] as one bf16-pair panel: dst[p * 32 + j] holds k = 2p (low) and 2p + 1
   (high) of column j; columns past N and an odd last k are zero. */
static void utg__pack_b_pairs(uint32_t *dst, const float *B, int ldb, utg_trans tb, int N, int kc, int kb,
                              int j0) {
    int nj = N - j0 < 32 ? N - j0 : 32, kp = (kb + 1) / 2, p;
    if (tb) { /* transposing: pairs and padding in registers */
        utg__pack_pairs_t(dst, 32, B + (size_t)j0 * ldb + kc, ldb, nj, kb, 1.0f);
        return;
    }
    for (p = 0; p < kp; p++) { /* an odd last k pairs with zero */
        const float *s0 = B + (size_t)(kc + 2 * p) * ldb + j0, *s1 = 2 * p + 1 < kb ? s0 + ldb : NULL;
        utg__pair_rows(dst + (size_t)p * 32, s0, s1, nj < 16 ? nj : 16, 16, 1.0f);
        if (nj > 16)
            utg__pair_rows(dst + (size_t)p * 32 + 16, s0 + 16, s1 ? s1 + 16 : NULL, nj - 16, 16, 1.0f);
        else memset(dst + (size_t)p * 32 + 16, 0, 16 * sizeof(uint32_t));
    }
}
/* alpha * op(A)[i0:i0+12, kc:kc+kb] as one bf16-pair sliver: ap[p * 12 + r] holds k = 2p and
   2p + 1 of row r; rows past M and an odd last k are zero. */
static void utg__pack_a_pairs(uint32_t *ap, const float *A, int lda, utg_trans ta, int M, int i0, int kc,
                              int kb, float alpha) {
    int mr = M - i0 < 12 ? M - i0 : 12, kp = kb / 2, p;
    if (!ta) { /* transposing: pairs and padding in registers */
        utg__pack_pairs_t(ap, 12, A + (size_t)i0 * lda + kc, lda, mr, kb, alpha);
        return;
    }
    for (p = 0; p < kp; p++) {
        const float *s0 = A + (size_t)(kc + 2 * p) * lda + i0;
        utg__pair_rows(ap + (size_t)p * 12, s0, s0 + lda, mr, 12, alpha);
    }
    if (kb & 1)
        utg__pair_rows(ap + (size_t)kp * 12, A + (size_t)(kc + kb - 1) * lda + i0, NULL, mr, 12, alpha);
}
#define UTG__B2(r) __m512 c##r##a = _mm512_setzero_ps(), c##r##b = _mm512_setzero_ps()
#define UTG__BF(r)                                                                                 \
    do {                                                                                           \
        __m512bh t_ = (__m512bh)_mm512_set1_epi32((int)a[r]);                                      \
        c##r##a = _mm512_dpbf16_ps(c##r##a, t_, b0);                                               \
        c##r##b = _mm512_dpbf16_ps(c##r##b, t_, b1);                                               \
    } while (0)
/* noinline: inlined into the OpenMP region, the kernel runs short of zmm registers and spills b1 to
   the stack every k pair, which costs the Newton-Schulz mix about 15% */
__attribute__((target("avx512f,avx512bf16"), noinline)) static void
utg__uk_bf16(int kp, const uint32_t *UTG_RESTRICT Ap, const uint32_t *UTG_RESTRICT Bp, float *UTG_RESTRICT C,
             int ldc, int mr, int nr, int acc) {
    UTG__B2(0); UTG__B2(1); UTG__B2(2); UTG__B2(3); UTG__B2(4); UTG__B2(5);
    UTG__B2(6); UTG__B2(7); UTG__B2(8); UTG__B2(9); UTG__B2(10); UTG__B2(11);
    int p;
    for (p = 0; p < kp; p++) {
        const uint32_t *a = Ap + (size_t)p * 12;
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp + (size_t)p * 32),
                 b1 = (__m512bh)_mm512_loadu_si512(Bp + (size_t)p * 32 + 16);
        UTG__BF(0); UTG__BF(1); UTG__BF(2); UTG__BF(3); UTG__BF(4); UTG__BF(5);
        UTG__BF(6); UTG__BF(7); UTG__BF(8); UTG__BF(9); UTG__BF(10); UTG__BF(11);
    }
    if (mr == 12 && nr == 32) {
        UTG__ZS(0); UTG__ZS(1); UTG__ZS(2); UTG__ZS(3); UTG__ZS(4); UTG__ZS(5);
        UTG__ZS(6); UTG__ZS(7); UTG__ZS(8); UTG__ZS(9); UTG__ZS(10); UTG__ZS(11);
    } else {
        __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffffu : (1u << nr) - 1u),
                  m1 = (__mmask16)(nr <= 16 ? 0u : (1u << (nr - 16)) - 1u);
        UTG__ZM(0); UTG__ZM(1); UTG__ZM(2); UTG__ZM(3); UTG__ZM(4); UTG__ZM(5);
        UTG__ZM(6); UTG__ZM(7); UTG__ZM(8); UTG__ZM(9); UTG__ZM(10); UTG__ZM(11);
    }
}
#endif

/* ------------------------------------------------------------------------------------------------
// >>cpu_gemm_driver
   The matmul proper: packing of op(B) panels, the per-sliver work (utg__gemm_sliver), the
   symmetric-product shortcut (upper triangle, then utg__mirror_lower), the k split of A^T B for
   the weight gradients (utg__ksplit_unit, utg__add_part) and the parallel driver utg__matmul_run
   behind matmul and matmul_bf16.
   ------------------------------------------------------------------------------------------------ */
/* op(B)[kc:kc+kb, j0:j0+NR] into one NR-wide panel (k-major), zero-padded past N; bf16: rounded to bf16 */
static void utg__pack_b(const utg__gk *gk, float *dst, const float *B, int ldb, utg_trans tb, int N, int kc,
                        int kb, int j0, int bf16) {
    const int NR = gk->nr;
    int nj = N - j0 < NR ? N - j0 : NR, j, k;
    if (tb) {
        gk->pack_t(dst, NR, B + (size_t)j0 * ldb + kc, ldb, nj, kb, 1.0f);
    } else {
        for (k = 0; k < kb; k++)
            memcpy(dst + (size_t)k * NR, B + (size_t)(kc + k) * ldb + j0, sizeof(float) * (size_t)nj);
        if (nj < NR)
            for (k = 0; k < kb; k++)
                for (j = nj; j < NR; j++) dst[(size_t)k * NR + j] = 0.0f;
    }
    if (bf16) utg__bf16_round_n(dst, (size_t)kb * NR);
}

/* alpha * op(A)[i0:i0+MR, kc:kc+kb] as an MR-row sliver, then the sliver times every panel of the
   block into C[i0:, jc:jc+nc]. A whole sliver with alpha 1 (fp32) is read in place: A^T's columns
   with k-stride lda, or A's rows through the kernel's fn_rows unless they sit a multiple of 4 KiB
   apart (lda % 1024 == 0: the 12 rows then share one L1 set and evict each other, which costs
   15-25% at K = 1024 or 2048); otherwise it is packed (k-major, zero rows past M). B's whole panels come
   from Bd in place (k-stride ldb) when the caller passes it (op(B) not transposed), else from the
   packed block Bp. */
static void utg__gemm_sliver(const utg__gk *gk, float *ap, const float *Bp, const float *Bd, int ldb, float *C, int ldc, const float *A,
                             int lda, utg_trans ta, int M, int N, int i0, int kc, int kb, int jc, int nc, float alpha, int bf16, int sym,
                             int acc) {
    const int MR = gk->mr, NR = gk->nr;
    int mr = M - i0 < MR ? M - i0 : MR, n_pan = (nc + NR - 1) / NR, k, r, pan, rows = 0, as = MR;
    const float *a = ap;
    if (sym && jc + nc <= i0) return; /* the whole block row is below the diagonal */
    if (mr == MR && alpha == 1.0f && !bf16 && ta) {
        a = A + (size_t)kc * lda + i0;
        as = lda;
    } else if (mr == MR && alpha == 1.0f && !bf16 && gk->fn_rows && lda % 1024 != 0) {
        a = A + (size_t)i0 * lda + kc;
        rows = 1;
    } else {
        if (ta) {
            for (k = 0; k < kb; k++) {
                const float *src = A + (size_t)(kc + k) * lda + i0;
                for (r = 0; r < mr; r++) ap[(size_t)k * MR + r] = alpha * src[r];
                for (; r < MR; r++) ap[(size_t)k * MR + r] = 0.0f;
            }
        } else {
            gk->pack_t(ap, MR, A + (size_t)i0 * lda + kc, lda, mr, kb, alpha);
        }
        if (bf16) utg__bf16_round_n(ap, (size_t)kb * MR);
    }
    for (pan = 0; pan < n_pan; pan++) {
        int j0 = jc + pan * NR, nr = N - j0 < NR ? N - j0 : NR, bd = Bd && nr == NR;
        const float *b = bd ? Bd + j0 : Bp + (size_t)pan * kb * NR;
        if (sym && j0 + nr <= i0) continue; /* below the diagonal: mirrored afterwards */
        if (rows) gk->fn_rows(kb, a, lda, b, bd ? ldb : NR, C + (size_t)i0 * ldc + j0, ldc, nr, acc);
        else gk->fn(kb, a, as, b, bd ? ldb : NR, C + (size_t)i0 * ldc + j0, ldc, mr, nr, acc);
    }
}

/* Floats of the packed B block, and of one A sliver. */
#define UTG__PACK_B_FLOATS ((size_t)UTG__KC * (((UTG__NC + UTG__NR_MAX - 1) / UTG__NR_MAX) * UTG__NR_MAX))
#define UTG__PACK_A_FLOATS ((size_t)UTG__KC * UTG__MR_MAX + 16)

/* The parallel op: for each KC x NC block of op(B), the threads pack the panels that are not read
   in place together, then take the MR-row slivers of C one at a time (each packs its own sliver of
   A unless it is read in place; dynamic, so a thread the OS delays does not hold the others at the
   block's barrier). Every C element is summed in k order by one thread (or, for A^T B with K split
   in halves, each half is, and half 1 is added to half 0), so the thread count does not change any
   bit. bf16: both operands are
   rounded to bf16 (alpha folded into A first) and the products summed in fp32, with avx512_bf16's
   dot products where the CPU has them. */
/* C's lower triangle from its upper one (a symmetric product computed above the diagonal), by
   32 x 32 blocks so that the transposed reads stay in L1 */
static void utg__mirror_lower(float *C, int n) {
    int bi, nb = (n + 31) / 32;
    UTG__OMP_FOR_DYN
    for (bi = 0; bi < nb; bi++) {
        int bj, i, j, i1 = (bi + 1) * 32 < n ? (bi + 1) * 32 : n;
        for (bj = 0; bj <= bi; bj++)
            for (i = bi * 32; i < i1; i++) {
                int j1 = bj == bi ? i : bj * 32 + 32;
                for (j = bj * 32; j < j1; j++) C[(size_t)i * n + j] = C[(size_t)j * n + i];
            }
    }
}
/* The k split's work unit u: its half of k [k0, k1) and its slivers [s0, s1) (the slivers in n_grp
   groups); its sums go to C (half 0) or to part (half 1) */
typedef struct { int half, k0, k1, s0, s1; } utg__kunit;
static utg__kunit utg__ksplit_unit(int u, int n_grp, int n_sl, int K, int khalf) {
    utg__kunit r;
    int grp = u / 2;
    r.half = u % 2;
    r.k0 = r.half ? khalf : 0;
    r.k1 = r.half ? K : khalf;
    r.s0 = (int)((long long)n_sl * grp / n_grp);
    r.s1 = (int)((long long)n_sl * (grp + 1) / n_grp);
    return r;
}
/* C += the k split's half-1 sums, row by row over the threads of the enclosing region */
static void utg__add_part(float *C, const float *part, int M, int N) {
    int r;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (r = 0; r < M; r++) {
        float *UTG_RESTRICT c = C + (size_t)r * N;
        const float *UTG_RESTRICT c1 = part + (size_t)r * N;
        int j;
        for (j = 0; j < N; j++) c[j] += c1[j];
    }
}
/* One product's operands and utg__matmul_run's choices, for the path that computes it */
typedef struct utg__mm {
    const utg__gk *gk;
    float *C, *pack, *part; /* pack: the packed B block(s), then each thread's A sliver from a_off;
                               part: the k split's half-1 sums */
    const float *A, *B;
    int M, N, K, lda, ldb, n_sl, n_grp, khalf, sym, bf16;
    utg_trans ta, tb;
    float alpha, beta;
    size_t a_off;
} utg__mm;
#if defined(UTG__X86_KERNELS)
/* The k split with bf16 pairs: each (half, sliver group) packs its own B blocks */
static void utg__matmul_ksplit_bf16(const utg__mm *p) {
    float *C = p->C, *pack = p->pack, *part = p->part;
    const float *A = p->A, *B = p->B;
    int M = p->M, N = p->N, K = p->K, lda = p->lda, ldb = p->ldb, n_grp = p->n_grp, khalf = p->khalf;
    int n_sl = (M + 11) / 12;
    utg_trans ta = p->ta, tb = p->tb;
    float alpha = p->alpha, beta = p->beta;
    size_t a_off = p->a_off;
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        uint32_t *ap = (uint32_t *)(pack + a_off + (size_t)utg__thread_id() * UTG__PACK_A_FLOATS);
        int unit, n_pan = (N + 31) / 32;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (unit = 0; unit < 2 * n_grp; unit++) {
            utg__kunit u = utg__ksplit_unit(unit, n_grp, n_sl, K, khalf);
            uint32_t *bp = (uint32_t *)(pack + (size_t)unit * UTG__PACK_B_FLOATS);
            float *Cp = u.half ? part : C;
            int kc, sl, pan;
            for (kc = u.k0; kc < u.k1; kc += UTG__KC / 2) { /* 128 pairs deep, as the fp32 split's 128 */
                int kb = u.k1 - kc < UTG__KC / 2 ? u.k1 - kc : UTG__KC / 2, kp = (kb + 1) / 2;
                for (pan = 0; pan < n_pan; pan++)
                    utg__pack_b_pairs(bp + (size_t)pan * kp * 32, B, ldb, tb, N, kc, kb, pan * 32);
                for (sl = u.s0; sl < u.s1; sl++) {
                    int i0 = sl * 12, mr = M - i0 < 12 ? M - i0 : 12;
                    utg__pack_a_pairs(ap, A, lda, ta, M, i0, kc, kb, alpha);
                    for (pan = 0; pan < n_pan; pan++) {
                        int j0 = pan * 32, nr = N - j0 < 32 ? N - j0 : 32;
                        utg__uk_bf16(kp, ap, bp + (size_t)pan * kp * 32, Cp + (size_t)i0 * N + j0, N, mr, nr,
                                     kc > u.k0 || (!u.half && beta != 0.0f));
                    }
                }
            }
        }
        utg__add_part(C, part, M, N);
    }
}
/* bf16 pairs on the blocked path (packed B panels of 32, A slivers of 12) */
static void utg__matmul_bf16(const utg__mm *p) {
    float *C = p->C, *pack = p->pack;
    const float *A = p->A, *B = p->B;
    int M = p->M, N = p->N, K = p->K, lda = p->lda, ldb = p->ldb, sym = p->sym;
    int n_sl = (M + 11) / 12;
    utg_trans ta = p->ta, tb = p->tb;
    float alpha = p->alpha, beta = p->beta;
    size_t a_off = p->a_off;
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        uint32_t *bp = (uint32_t *)pack;
        uint32_t *ap = (uint32_t *)(pack + a_off + (size_t)utg__thread_id() * UTG__PACK_A_FLOATS);
        int jc, kc;
        for (jc = 0; jc < N; jc += UTG__NC) {
            int nc = N - jc < UTG__NC ? N - jc : UTG__NC, n_pan = (nc + 31) / 32;
            for (kc = 0; kc < K; kc += 2 * UTG__KCP) {
                int kb = K - kc < 2 * UTG__KCP ? K - kc : 2 * UTG__KCP, kp = (kb + 1) / 2, pan, sl;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
                for (pan = 0; pan < n_pan; pan++)
                    utg__pack_b_pairs(bp + (size_t)pan * kp * 32, B, ldb, tb, N, kc, kb, jc + pan * 32);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
                for (sl = 0; sl < n_sl; sl++) {
                    int i0 = sl * 12, mr = M - i0 < 12 ? M - i0 : 12;
                    if (sym && jc + nc <= i0) continue;
                    utg__pack_a_pairs(ap, A, lda, ta, M, i0, kc, kb, alpha);
                    for (pan = 0; pan < n_pan; pan++) {
                        int j0 = jc + pan * 32, nr = N - j0 < 32 ? N - j0 : 32;
                        if (sym && j0 + nr <= i0) continue;
                        utg__uk_bf16(kp, ap, bp + (size_t)pan * kp * 32, C + (size_t)i0 * N + j0, N, mr, nr,
                                     kc > 0 || beta != 0.0f);
                    }
                }
            }
        }
    }
    if (sym) utg__mirror_lower(C, N);
}
#endif
/* The fp32 k split (see utg__matmul_run): per (half, sliver group) unit, 128-deep k blocks */
static void utg__matmul_ksplit(const utg__mm *p) {
    const utg__gk *gk = p->gk;
    float *C = p->C, *pack = p->pack, *part = p->part;
    const float *A = p->A, *B = p->B;
    int M = p->M, N = p->N, K = p->K, lda = p->lda, ldb = p->ldb, n_sl = p->n_sl, n_grp = p->n_grp;
    int khalf = p->khalf;
    utg_trans ta = p->ta;
    float alpha = p->alpha, beta = p->beta;
    size_t a_off = p->a_off;
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        float *ap = pack + a_off + (size_t)utg__thread_id() * UTG__PACK_A_FLOATS;
        int kcs = UTG__KC / 4, unit; /* 128-deep: a B panel and the A sliver stay in L1 */
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (unit = 0; unit < 2 * n_grp; unit++) {
            utg__kunit u = utg__ksplit_unit(unit, n_grp, n_sl, K, khalf);
            float *Cp = u.half ? part : C;
            int kc, sl;
            for (kc = u.k0; kc < u.k1; kc += kcs) {
                int kb = u.k1 - kc < kcs ? u.k1 - kc : kcs;
                for (sl = u.s0; sl < u.s1; sl++)
                    utg__gemm_sliver(gk, ap, NULL, B + (size_t)kc * ldb, ldb, Cp, N, A, lda, ta, M, N, sl * gk->mr, kc,
                                     kb, 0, N, alpha, 0, 0, kc > u.k0 || (!u.half && beta != 0.0f));
            }
        }
        utg__add_part(C, part, M, N);
    }
}
/* The blocked path: N in blocks of UTG__NC, k blocks, B panels packed (or read in place), then the
   A slivers over the threads */
static void utg__matmul_blocked(const utg__mm *p) {
    const utg__gk *gk = p->gk;
    float *C = p->C, *pack = p->pack;
    const float *A = p->A, *B = p->B;
    int M = p->M, N = p->N, K = p->K, lda = p->lda, ldb = p->ldb, n_sl = p->n_sl, sym = p->sym;
    int bf16 = p->bf16;
    utg_trans ta = p->ta, tb = p->tb;
    float alpha = p->alpha, beta = p->beta;
    size_t a_off = p->a_off;
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        float *ap = pack + a_off + (size_t)utg__thread_id() * UTG__PACK_A_FLOATS;
        /* whole panels of a non-transposed B are read in place (no pack phase, which costs most where
           there are few slivers), with k blocks short enough that the block's rows fit half the L2 */
        int bin = !tb && !bf16 && N <= 512, kcs = !bin || N <= 256 ? UTG__KC : UTG__KC / 2, jc, kc;
        for (jc = 0; jc < N; jc += UTG__NC) {
            int nc = N - jc < UTG__NC ? N - jc : UTG__NC, n_pan = (nc + gk->nr - 1) / gk->nr;
            for (kc = 0; kc < K; kc += kcs) {
                int kb = K - kc < kcs ? K - kc : kcs, pan, sl;
                const float *bd = bin ? B + (size_t)kc * ldb : NULL;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
                for (pan = 0; pan < n_pan; pan++)
                    if (!bd || N - (jc + pan * gk->nr) < gk->nr)
                        utg__pack_b(gk, pack + (size_t)pan * kb * gk->nr, B, ldb, tb, N, kc, kb, jc + pan * gk->nr, bf16);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
                for (sl = 0; sl < n_sl; sl++)
                    utg__gemm_sliver(gk, ap, pack, bd, ldb, C, N, A, lda, ta, M, N, sl * gk->mr, kc, kb, jc, nc, alpha, bf16, sym,
                                     kc > 0 || beta != 0.0f);
            }
        }
    }
    if (sym) utg__mirror_lower(C, N);
}
static void utg__matmul_run(utg_backend *be, float *C, const float *A, const float *B, int M, int N, int K, utg_trans ta_sym,
                            utg_trans tb, float alpha, float beta, int bf16) {
    const utg__gk *gk = utg__cpu_of(be)->gk;
    utg_trans ta = (utg_trans)(ta_sym & 1);
    int sym = (ta_sym & 2) && M == N && beta == 0.0f; /* the tiles wholly below the diagonal are skipped */
    int nth = utg__max_threads(), lda = ta ? M : K, ldb = tb ? K : N, n_sl = (M + gk->mr - 1) / gk->mr;
    /* A^T B with K long beside M x N (the weight gradients: K = the tokens): K in two fixed halves,
       each summed on its own (its slivers split further when there are more than two threads) and
       then added, half 0 + half 1: each thread streams its own k blocks of B through its own L2,
       with no barrier per block (which costs 11-17% at the model's shapes), in blocks of 128 (4-24%
       faster than 512 or 256). The halves depend on the shape only, so the bits do not depend on the
       thread count. */
    int split = ta && !tb && !sym && K >= 2 * UTG__KC && N <= 512, ksplit = split && !bf16 && N % gk->nr == 0,
        khalf = (K / 2 + UTG__KC - 1) / UTG__KC * UTG__KC, n_grp = (nth + 1) / 2, ks16 = 0;
    size_t a_off = UTG__PACK_B_FLOATS; /* the packed B block(s), then each thread's A sliver, then half 1's sums */
    float *pack, *part = NULL;
    utg__mm p;
    if (M <= 0 || N <= 0) return;
    UTG_ASSERT(!utg__overlap(C, (size_t)M * N, A, (size_t)M * (K > 0 ? K : 0)) &&
               !utg__overlap(C, (size_t)M * N, B, (size_t)N * (K > 0 ? K : 0)));
    if (K <= 0) { /* no products: C = beta C */
        if (beta == 0.0f) memset(C, 0, (size_t)M * N * sizeof(float));
        return;
    }
    /* with beta 0 the first k block stores its tiles instead of adding them (no memset, no C read) */
#if defined(UTG__X86_KERNELS)
    /* the same split with bf16 pairs: each (half, sliver group) packs its own B blocks */
    ks16 = split && bf16 && utg__cpu_of(be)->bf16_hw;
    if (ks16) a_off = 2 * (size_t)n_grp * UTG__PACK_B_FLOATS;
#endif
    pack = utg__cpu_scratch(be, a_off + (size_t)nth * UTG__PACK_A_FLOATS + (ksplit || ks16 ? (size_t)M * N : 0));
    UTG_ASSERT(pack != NULL);
    if (pack && (ksplit || ks16)) part = pack + a_off + (size_t)nth * UTG__PACK_A_FLOATS;
    if (!pack) { /* out of memory: a defined result (C = beta C) rather than what C held */
        if (beta == 0.0f) memset(C, 0, (size_t)M * N * sizeof(float));
        return;
    }
    p.gk = gk; p.C = C; p.A = A; p.B = B; p.M = M; p.N = N; p.K = K; p.lda = lda; p.ldb = ldb;
    p.n_sl = n_sl; p.n_grp = n_grp; p.khalf = khalf; p.sym = sym; p.bf16 = bf16; p.ta = ta; p.tb = tb;
    p.alpha = alpha; p.beta = beta; p.pack = pack; p.part = part; p.a_off = a_off;
#if defined(UTG__X86_KERNELS)
    if (ks16) { utg__matmul_ksplit_bf16(&p); return; }
    if (bf16 && utg__cpu_of(be)->bf16_hw) { utg__matmul_bf16(&p); return; }
#endif
    if (ksplit) utg__matmul_ksplit(&p);
    else utg__matmul_blocked(&p);
}
/* The table's matmul and matmul_bf16: one driver, bf16 as its last argument. */
static void utg__cpu_matmul_f32(utg_backend *be, float *C, const float *A, const float *B, int M, int N,
                                int K, utg_trans ta, utg_trans tb, float alpha, float beta) {
    utg__matmul_run(be, C, A, B, M, N, K, ta, tb, alpha, beta, 0);
}
static void utg__cpu_matmul_bf16_f32(utg_backend *be, float *C, const float *A, const float *B, int M, int N,
                                     int K, utg_trans ta, utg_trans tb, float alpha, float beta) {
    utg__matmul_run(be, C, A, B, M, N, K, ta, tb, alpha, beta, 1);
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_rows
   Row-wise building blocks shared by the ops below: the embedding gather and scatter, e^x
   without libm (so that the bits do not depend on the C library), and the max, sum and dot
   product of a row in 16 fixed lanes (vectorized without -ffast-math, summed in a fixed order).
   ------------------------------------------------------------------------------------------------ */

/* embed_fwd: out[i, :] = table[ids[i], :], rows [n, d]; each output row copied by one thread. */
static void utg__cpu_embed_fwd_f32(utg_backend *be, float *out, const float *table, const int32_t *ids, int n,
                                   int d) {
    int i;
    (void)be;
    UTG__OMP_FOR
    for (i = 0; i < n; i++) memcpy(out + (size_t)i * d, table + (size_t)ids[i] * d, (size_t)d * sizeof(float));
}

/* Column blocks per thread: each table entry is written by one thread, in token order. */
/* Channels c0..c1-1 of the embedding backward, every token in order (so the sums repeat). */
static void utg__embed_bwd_cols(float *dtable, const float *dout, const int32_t *ids, int n, int d, int c0, int c1) {
    int i, c;
    for (i = 0; i < n; i++) {
        float *dst = dtable + (size_t)ids[i] * d;
        const float *src = dout + (size_t)i * d;
        for (c = c0; c < c1; c++) dst[c] += src[c];
    }
}

static void utg__cpu_embed_bwd_f32(utg_backend *be, float *dtable, const float *dout, const int32_t *ids,
                                   int n, int d) {
    int cb, nblk = (d + 63) / 64;
    (void)be;
    UTG__OMP_FOR
    for (cb = 0; cb < nblk; cb++) utg__embed_bwd_cols(dtable, dout, ids, n, d, cb * 64, cb * 64 + 64 < d ? cb * 64 + 64 : d);
}

/* e^x without libm (the same bits whatever the C library): Cody-Waite reduction by ln 2 and a
   degree-6 polynomial, relative error below 3e-7 on [-87, 88] (tests/test_ops.c checks). The
   caller keeps x inside [-87, 88]; the floor below relies on x*log2(e) > -128. */
static float utg__expf_core(float x) {
    float t = x * 1.44269504088896341f + 128.5f;
    /* n = floor(x log2 e + 1/2). t stays in [1, 255] before the conversion, which a NaN or an
       infinity would make undefined: a NaN converts as 1 and r keeps it NaN. Callers clamp x to
       [-87, 88], where t is in [3, 255.5) and the bounds change nothing. */
    int32_t n = (int32_t)(t >= 1.0f ? (t <= 255.0f ? t : 255.0f) : 1.0f) - 128;
    float r = x - (float)n * 0.693145751953125f, p, two_n;          /* ln 2, high bits (exact) */
    int32_t e = (n + 127) << 23;
    r = r - (float)n * 1.42860682030941723e-6f; /* ln 2, low bits */
    p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    memcpy(&two_n, &e, 4);
    return p * two_n;
}
/* e^x for any x (clamped to [-87, 88]; e^-87 is negligible beside the 1 of a row's maximum). */
static float utg__expf(float x) { return utg__expf_core(x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x)); }
/* x[i] = e^(x[i] - shift) in place, in two passes so that GCC vectorizes both (it does not
   vectorize the clamp and the polynomial in one loop). */
static void utg__exp_row(float *UTG_RESTRICT x, int n, float shift) {
    int i;
    for (i = 0; i < n; i++) {
        float v = x[i] - shift;
        v = v < -87.0f ? -87.0f : v;
        x[i] = v > 88.0f ? 88.0f : v;
    }
    for (i = 0; i < n; i++) x[i] = utg__expf_core(x[i]);
}

/* 16 lane sums folded pairwise (8 + 8, 4 + 4, 2 + 2, 1 + 1): a fixed order that vectorizes,
   where summing the lanes one after another is a chain of 16 dependent adds */
static UTG__FORCE_INLINE float utg__fold16(float *acc) {
    int l;
    for (l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (l = 0; l < 4; l++) acc[l] += acc[l + 4];
    for (l = 0; l < 2; l++) acc[l] += acc[l + 2];
    return acc[0] + acc[1];
}
/* The largest of m and x[0..n); the sum of x[0..n) in 16 lanes, then folded: loops that
   vectorize without -ffast-math, for the short rows of the attention and cross-entropy */
static float utg__row_max(const float *UTG_RESTRICT x, int n, float m) {
    int i;
    UTG__SIMD_MAX_M /* a maximum does not depend on the order it is taken in */
    for (i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}
/* The sum of x[0..n): lane i % 16 collects x[i], the lanes folded by utg__fold16. */
static UTG__FORCE_INLINE float utg__row_sum(const float *UTG_RESTRICT x, int n) {
    float acc[16] = {0};
    int i = 0, l;
    for (; i + 16 <= n; i += 16)
        for (l = 0; l < 16; l++) acc[l] += x[i + l];
    for (; i < n; i++) acc[i & 15] += x[i];
    return utg__fold16(acc);
}

/* Sum of a[i]*b[i] in 16 independent lanes (vectorizes without -ffast-math), then folded. */
static UTG__FORCE_INLINE float utg__dot(const float *UTG_RESTRICT a, const float *UTG_RESTRICT b, int n) {
    float acc[16] = {0};
    int i = 0, l;
    for (; i + 16 <= n; i += 16)
        for (l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) acc[i & 15] += a[i] * b[i];
    return utg__fold16(acc);
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_norm_rope
   RMSNorm over rows and the fused q/k head norm + RoPE + q_gain. Forward rows are independent (one
   thread each); the backward's reductions (dgain) go through UTG__CPU_RED_CHUNKS fixed token
   chunks added in chunk order.
   ------------------------------------------------------------------------------------------------ */
/* one row of RMSNorm: y = x / sqrt(mean(x^2) + eps), returns 1/rms (rmsnorm_fwd and mix_rmsnorm_fwd) */
static float utg__rms_row(float *UTG_RESTRICT yr, const float *UTG_RESTRICT xr, int cols, float eps) {
    float rs = 1.0f / sqrtf(utg__dot(xr, xr, cols) / (float)cols + eps);
    int c;
    for (c = 0; c < cols; c++) yr[c] = xr[c] * rs;
    return rs;
}
/* rmsnorm_fwd: y[rows, cols] normalized rows of x, rstd[rows] = 1/rms per row (kept for the backward). */
static void utg__cpu_rmsnorm_fwd_f32(utg_backend *be, float *y, float *rstd, const float *x, int rows,
                                     int cols, float eps) {
    int r;
    (void)be;
    UTG__OMP_FOR
    for (r = 0; r < rows; r++) rstd[r] = utg__rms_row(y + (size_t)r * cols, x + (size_t)r * cols, cols, eps);
}

/* dx += rstd * (dy - y * mean(dy*y)) */
/* One row of the RMSNorm backward: dx += rstd * (dy - y * mean(dy . y)). */
static void utg__rmsnorm_bwd_row(float *dxr, const float *dyr, const float *yr, float rs, int cols) {
    float m = utg__dot(dyr, yr, cols) / (float)cols;
    int c;
    for (c = 0; c < cols; c++) dxr[c] += rs * (dyr[c] - yr[c] * m);
}

static void utg__cpu_rmsnorm_bwd_f32(utg_backend *be, float *dx, const float *dy, const float *y,
                                     const float *rstd, int rows, int cols) {
    int r;
    (void)be;
    UTG__OMP_FOR
    for (r = 0; r < rows; r++)
        utg__rmsnorm_bwd_row(dx + (size_t)r * cols, dy + (size_t)r * cols, y + (size_t)r * cols, rstd[r], cols);
}

/* One head's vector: xn = x * rstd, then y = g * rope(xn) (pairs (i, i + half) with cos c[i] and sin s[i]) */
static float utg__qk_row_fwd(float *UTG_RESTRICT y, float *UTG_RESTRICT xn, const float *UTG_RESTRICT x,
                             const float *cs, const float *sn, float g, int hd, int half, float eps) {
    float rs = 1.0f / sqrtf(utg__dot(x, x, hd) / (float)hd + eps);
    int i;
    for (i = 0; i < hd; i++) xn[i] = x[i] * rs;
    for (i = 0; i < half; i++) {
        float x1 = xn[i], x2 = xn[i + half];
        y[i] = g * (x1 * cs[i] + x2 * sn[i]);
        y[i + half] = g * (x2 * cs[i] - x1 * sn[i]);
    }
    for (i = 2 * half; i < hd; i++) y[i] = g * xn[i];
    return rs;
}
/* qk_norm_rope_fwd: one thread per token, its heads in order; token row t sits at position
   t % seq_len of the RoPE table. */
static void utg__cpu_qk_norm_rope_fwd_f32(utg_backend *be, float *y, float *xn, float *rstd, const float *x,
                                      const float *cos_sin, const float *gain, int n_tok, int seq_len,
                                      int n_heads, int head_dim, int rot_dims, float eps) {
    int t, half = rot_dims / 2;
    const float *sin_tab = cos_sin + (size_t)seq_len * half;
    (void)be;
    UTG__OMP_FOR
    for (t = 0; t < n_tok; t++) {
        int pos = t % seq_len, h;
        for (h = 0; h < n_heads; h++) {
            size_t o = ((size_t)t * n_heads + h) * head_dim;
            rstd[(size_t)t * n_heads + h] =
                utg__qk_row_fwd(y + o, xn + o, x + o, cos_sin + (size_t)pos * half,
                                sin_tab + (size_t)pos * half, gain ? gain[h] : 1.0f, head_dim, half, eps);
        }
    }
}
/* One head's backward: r = rope(xn), dn = rope^T(g dy) into the caller's scratch, dx = rstd (dn - xn (dn .
   xn) / hd); returns dy . r (its share of dgain). Restrict-qualified so that the loops vectorize. */
static float utg__qk_row_bwd(float *UTG_RESTRICT out, float *UTG_RESTRICT r, float *UTG_RESTRICT dn,
                             const float *UTG_RESTRICT d, const float *UTG_RESTRICT n,
                             const float *UTG_RESTRICT cs, const float *UTG_RESTRICT sn, float g, float rs,
                             int hd, int half, int want_dgain) {
    float m, dg = 0.0f;
    int i;
    for (i = 0; i < half; i++) {
        float x1 = n[i], x2 = n[i + half], d1 = g * d[i], d2 = g * d[i + half];
        r[i] = x1 * cs[i] + x2 * sn[i];
        r[i + half] = x2 * cs[i] - x1 * sn[i];
        dn[i] = d1 * cs[i] - d2 * sn[i];
        dn[i + half] = d1 * sn[i] + d2 * cs[i];
    }
    for (i = 2 * half; i < hd; i++) { r[i] = n[i]; dn[i] = g * d[i]; }
    if (want_dgain) dg = utg__dot(d, r, hd);
    m = utg__dot(dn, n, hd) / (float)hd;
    for (i = 0; i < hd; i++) out[i] = rs * (dn[i] - n[i] * m);
    return dg;
}
/* The backward by fixed chunks of tokens: each chunk writes its tokens' dx and sums its share of dgain
   in token order; the chunks' shares are added in chunk order, so no bit depends on the thread count. */
static void utg__cpu_qk_norm_rope_bwd_f32(utg_backend *be, float *dx, float *dgain, const float *dy,
                                          const float *xn, const float *rstd, const float *cos_sin,
                                          const float *gain, int n_tok, int seq_len, int n_heads,
                                          int head_dim, int rot_dims) {
    int half = rot_dims / 2, nch = n_tok < UTG__CPU_RED_CHUNKS ? (n_tok > 0 ? n_tok : 1) : UTG__CPU_RED_CHUNKS, ch, h;
    size_t per = (2 * (size_t)head_dim + 15) / 16 * 16, base = ((size_t)nch * n_heads + 15) / 16 * 16; /* whole lines */
    const float *sin_tab = cos_sin + (size_t)seq_len * half;
    float *scr = utg__cpu_scratch(be, base + (size_t)utg__max_threads() * per);
    UTG_ASSERT(scr != NULL);
    if (!scr) return;
    UTG__OMP_FOR
    for (ch = 0; ch < nch; ch++) {
        int t0 = (int)((long long)n_tok * ch / nch), t1 = (int)((long long)n_tok * (ch + 1) / nch), t, hh;
        float *part = scr + (size_t)ch * n_heads, *r = scr + base + (size_t)utg__thread_id() * per;
        for (hh = 0; hh < n_heads; hh++) part[hh] = 0.0f;
        for (t = t0; t < t1; t++) {
            int pos = t % seq_len;
            const float *cs = cos_sin + (size_t)pos * half, *sn = sin_tab + (size_t)pos * half;
            for (hh = 0; hh < n_heads; hh++) {
                size_t o = ((size_t)t * n_heads + hh) * head_dim;
                part[hh] += utg__qk_row_bwd(dx + o, r, r + head_dim, dy + o, xn + o, cs, sn, gain ? gain[hh] : 1.0f,
                                            rstd[(size_t)t * n_heads + hh], head_dim, half, dgain != NULL);
            }
        }
    }
    if (dgain)
        for (h = 0; h < n_heads; h++) {
            float s = 0.0f;
            for (ch = 0; ch < nch; ch++) s += scr[(size_t)ch * n_heads + h];
            dgain[h] += s;
        }
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_attention
   Causal GQA attention (attn_fwd, attn_bwd), flash style on top of the gemm microkernels: the
   scratch layout of a task (utg__fa_buf), tile products (utg__fa_tile, utg__fa_acc, utg__fa_kv),
   the causal mask and the column-wise online softmax (utg__fa_mask, utg__fa_exp, utg__fa_colmax,
   utg__fa_colsum).
   ------------------------------------------------------------------------------------------------ */
/* Attention, flash style on the CPU, with the score tiles laid out keys x queries. One task per
   (batch, kv head), so the query heads sharing a kv head run together and dK/dV rows belong to one
   task. The task packs K and V once (keys as A slivers, and as B panels with k = the keys).
   Queries go in panels of NR (the microkernel's width) and keys in tiles of KB, so only KB x NR
   tiles of scores exist (no T x T or NR x T matrix). With the queries across the tile, the softmax
   is column-wise: the running max, the sums and the rescales run over NR query lanes at once, with
   no reduction across a vector; and the tile, read with a row stride of NR, is already the A
   operand of O += P V and dQ += dS K. The forward rescales its NR x hd block of O as tiles arrive
   (online softmax); the backward recomputes each tile from the saved log-sum-exp and sums dQ, dK
   and dV tile by tile (the tile's rows are read in place as A for dV and dK). Every sum runs in a
   fixed order inside one task: the bits do not depend on the thread count. */
#define UTG__FA_KB 96 /* keys per tile: a multiple of every kernel's MR */
#define UTG__RUP(x, m) (((x) + (m) - 1) / (m) * (m))

/* rows [0, n) of X (row stride ld), columns [0, w), times alpha, as MR-row A slivers with k = the
   columns (sliver s at dst + s * w * MR) */
static void utg__pack_a_rows(const utg__gk *gk, float *dst, const float *X, int ld, int n, int w, float alpha) {
    const int MR = gk->mr;
    int s;
    for (s = 0; s * MR < n; s++) {
        float *d = dst + (size_t)s * w * MR;
        gk->pack_t(d, MR, X + (size_t)s * MR * ld, ld, n - s * MR < MR ? n - s * MR : MR, w, alpha);
    }
}
/* X's rows [0, n) (k) by columns [0, w) (N) as B panels of NR columns, panel p at dst + p * n * NR */
static void utg__pack_b_all(const utg__gk *gk, float *dst, const float *X, int ld, int n, int w) {
    int p;
    for (p = 0; p * gk->nr < w; p++) utg__pack_b(gk, dst + (size_t)p * n * gk->nr, X, ld, UTG_NO_TRANS, w, 0, n, p * gk->nr, 0);
}

/* One task's scratch, in floats: K (scaled) and V as A slivers with the keys as rows; V or K as B
   panels with k = the keys; Q^T and dO^T panels (k = hd); Q and dO panels (k = the panel's
   queries); the score and dP tiles (each with MR floats of slack: the microkernel reads whole
   slivers); a partial sliver of a tile packed as A; the O block; four lanes of NR per query. */
typedef struct {
    float *ka, *vr, *bn, *qt, *dt, *qb, *db, *st, *dp, *pa, *ob, *l0, *l1, *l2, *l3;
} utg__fa_buf;
/* The slack: read as A for O += P V and dQ += dS K (k = the keys, k-stride NR), the tile is taken in
   slivers of MR query columns, and the last may run up to MR - 1 floats past NR (into the next
   key row, or past the last one): those values land only in rows of C that are never stored. */
#define UTG__FA_TILE ((size_t)UTG__FA_KB * UTG__NR_MAX + UTG__MR_MAX)
/* Floats of one thread's utg__fa_buf for sequence length T and head size hd (T padded to whole
   key tiles, hd to whole NR panels), rounded up to whole 64-byte lines. */
static size_t utg__attn_scratch_per_thread(int T, int hd) {
    size_t TR = (size_t)UTG__RUP(T, UTG__FA_KB), hdN = (size_t)UTG__RUP(hd, UTG__NR_MAX), NR = UTG__NR_MAX;
    return (2 * TR * (size_t)hd + hdN * TR + 2 * (size_t)hd * NR + 2 * NR * hdN + 2 * UTG__FA_TILE + UTG__MR_MAX * NR +
           NR * hdN + 4 * NR + 64 + 15) / 16 * 16; /* whole cache lines per thread */
}
/* Lays utg__fa_buf over p (utg__attn_scratch_per_thread(T, hd) floats) in the order of that sum,
   and zeroes the two tiles so that their slack holds finite values. */
static utg__fa_buf utg__fa_carve(float *p, int T, int hd) {
    size_t TR = (size_t)UTG__RUP(T, UTG__FA_KB), hdN = (size_t)UTG__RUP(hd, UTG__NR_MAX), NR = UTG__NR_MAX;
    utg__fa_buf f;
    f.ka = p; f.vr = f.ka + TR * hd; f.bn = f.vr + TR * hd; f.qt = f.bn + hdN * TR; f.dt = f.qt + (size_t)hd * NR;
    f.qb = f.dt + (size_t)hd * NR; f.db = f.qb + NR * hdN; f.st = f.db + NR * hdN; f.dp = f.st + UTG__FA_TILE; f.pa = f.dp + UTG__FA_TILE;
    f.ob = f.pa + UTG__MR_MAX * NR; f.l0 = f.ob + NR * hdN; f.l1 = f.l0 + NR; f.l2 = f.l1 + NR; f.l3 = f.l2 + NR;
    memset(f.st, 0, sizeof(float) * 2 * UTG__FA_TILE); /* the slack is read (into rows never stored): keep it finite */
    return f;
}
/* dst (nk x NR) = the tile's slivers of A (keys kb0.., k = hd) times the panel B (k = hd) */
static void utg__fa_tile(const utg__gk *gk, float *dst, const float *A, const float *B, int kb0, int nk, int hd) {
    const int MR = gk->mr, NR = gk->nr;
    int s;
    for (s = 0; s * MR < nk; s++)
        gk->fn(hd, A + (size_t)(kb0 / MR + s) * hd * MR, MR, B, NR, dst + (size_t)s * MR * NR, NR, nk - s * MR < MR ? nk - s * MR : MR,
               NR, 0);
}
/* C (nq x hd, row stride ldc) += (acc 0: =) the tile (nk keys x NR queries, read as A with k = the
   keys) times the B panels of the keys kb0.. (panel p at Bn + p * T * NR): O += P V, dQ += dS K */
static void utg__fa_acc(const utg__gk *gk, float *C, int ldc, const float *t, const float *Bn, int T, int kb0, int nk, int nq, int hd,
                        int acc) {
    const int MR = gk->mr, NR = gk->nr;
    int s, p;
    for (s = 0; s * MR < nq; s++)
        for (p = 0; p * NR < hd; p++)
            gk->fn(nk, t + s * MR, NR, Bn + (size_t)p * T * NR + (size_t)kb0 * NR, NR, C + (size_t)s * MR * ldc + p * NR, ldc,
                   nq - s * MR < MR ? nq - s * MR : MR, hd - p * NR < NR ? hd - p * NR : NR, acc);
}
/* C (nk x hd, row stride ldc) += the tile (nk keys x NR queries) times the B panels of the panel's
   queries (k = nq; panel p at Bq + p * nq * NR): dV += P^T dO, dK += dS^T Q. Whole slivers of the
   tile are read in place as A's rows where the kernel can (fn_rows); the rest is packed into pa. */
static void utg__fa_kv(const utg__gk *gk, float *C, int ldc, const float *t, const float *Bq, float *pa,
                       int nk, int nq, int hd) {
    const int MR = gk->mr, NR = gk->nr;
    int s, p;
    for (s = 0; s * MR < nk; s++) {
        int mr = nk - s * MR < MR ? nk - s * MR : MR;
        float *c = C + (size_t)s * MR * ldc;
        if (mr == MR && gk->fn_rows) {
            for (p = 0; p * NR < hd; p++)
                gk->fn_rows(nq, t + (size_t)s * MR * NR, NR, Bq + (size_t)p * nq * NR, NR, c + p * NR, ldc,
                            hd - p * NR < NR ? hd - p * NR : NR, 1);
        } else {
            gk->pack_t(pa, MR, t + (size_t)s * MR * NR, NR, mr, nq, 1.0f);
            for (p = 0; p * NR < hd; p++)
                gk->fn(nq, pa, MR, Bq + (size_t)p * nq * NR, NR, c + p * NR, ldc, mr,
                       hd - p * NR < NR ? hd - p * NR : NR, 1);
        }
    }
}
/* tile rows i whose key kb0 + i comes after some query p0 + j of the panel: those entries to v */
static void utg__fa_mask(float *t, int NR, int kb0, int nk, int p0, float v) {
    int i, j;
    for (i = p0 + 1 - kb0 > 0 ? p0 + 1 - kb0 : 0; i < nk; i++)
        for (j = 0; j < kb0 + i - p0 && j < NR; j++) t[(size_t)i * NR + j] = v;
}
/* t[i][j] = e^(t[i][j] - shift[j]) over the tile, clamped as utg__exp_row (two passes that vectorize) */
static void utg__fa_exp(float *UTG_RESTRICT t, int NR, int nk, const float *UTG_RESTRICT shift) {
    int i, j;
    for (i = 0; i < nk; i++)
        for (j = 0; j < NR; j++) {
            float v = t[(size_t)i * NR + j] - shift[j];
            v = v < -87.0f ? -87.0f : v;
            t[(size_t)i * NR + j] = v > 88.0f ? 88.0f : v;
        }
    for (i = 0; i < nk * NR; i++) t[i] = utg__expf_core(t[i]);
}
/* m[j] = max(m[j], t[i][j]) and sm[j] += t[i][j] over the tile's rows, four rows a step (loops
   over the columns, which vectorize; the sums in a fixed order) */
static void utg__fa_colmax(float *UTG_RESTRICT m, const float *UTG_RESTRICT t, int NR, int nk) {
    int i = 0, j;
    for (; i + 4 <= nk; i += 4)
        for (j = 0; j < NR; j++) {
            const float *c = t + (size_t)i * NR + j;
            float a = c[0] > c[NR] ? c[0] : c[NR], b = c[2 * NR] > c[3 * NR] ? c[2 * NR] : c[3 * NR];
            a = a > b ? a : b;
            m[j] = a > m[j] ? a : m[j];
        }
    for (; i < nk; i++)
        for (j = 0; j < NR; j++) m[j] = t[(size_t)i * NR + j] > m[j] ? t[(size_t)i * NR + j] : m[j];
}
/* sm[j] += the column sums of the tile (see utg__fa_colmax: four rows a step, pairs first). */
static void utg__fa_colsum(float *UTG_RESTRICT sm, const float *UTG_RESTRICT t, int NR, int nk) {
    int i = 0, j;
    for (; i + 4 <= nk; i += 4)
        for (j = 0; j < NR; j++) {
            const float *c = t + (size_t)i * NR + j;
            sm[j] += (c[0] + c[NR]) + (c[2 * NR] + c[3 * NR]);
        }
    for (; i < nk; i++)
        for (j = 0; j < NR; j++) sm[j] += t[(size_t)i * NR + j];
}

/* attn_fwd: per (sequence, kv head) task, per query head of the group and panel of NR queries,
   the key tiles up to the panel's last query with an online softmax: m = running max, sm = the
   running sum rescaled by al = e^(m_old - m_new), O rescaled by al too; y = O / sm and
   lse = m + log(sm) at the end. Tiles wholly above the diagonal are never computed. */
static void utg__cpu_attn_fwd_f32(utg_backend *be, float *y, float *lse, const float *q, const float *k,
                                  const float *v, int B, int T, int H, int Hkv, int hd, float scale) {
    int task, group = H / Hkv, qw = H * hd, kw = Hkv * hd;
    const utg__gk *gk = utg__cpu_of(be)->gk;
    const int NR = gk->nr;
    size_t per = utg__attn_scratch_per_thread(T, hd);
    float *scr = utg__cpu_scratch(be, (size_t)utg__max_threads() * per);
    UTG_ASSERT(scr != NULL);
    if (!scr) return;
    UTG__OMP_FOR_DYN
    for (task = 0; task < B * Hkv; task++) {
        int b = task % B, kh = task / B, g, p0, kb0, i, j; /* b fastest: see utg__cpu_attn_bwd_f32 */
        utg__fa_buf f = utg__fa_carve(scr + (size_t)utg__thread_id() * per, T, hd);
        float *mx = f.l0, *sm = f.l1, *mn = f.l2, *al = f.l3;
        size_t ko = (size_t)b * T * kw + (size_t)kh * hd;
        utg__pack_a_rows(gk, f.ka, k + ko, kw, T, hd, scale); /* scaled K: the scores come out scaled */
        utg__pack_b_all(gk, f.bn, v + ko, kw, T, hd);         /* V as B panels, k = the keys */
        for (g = 0; g < group; g++) {
            int h = kh * group + g;
            for (p0 = 0; p0 < T; p0 += NR) {
                int nq = T - p0 < NR ? T - p0 : NR, qmax = p0 + nq - 1;
                size_t ro = ((size_t)b * T + p0) * qw + (size_t)h * hd;
                utg__pack_b(gk, f.qt, q + ro, qw, UTG_TRANS, nq, 0, hd, 0, 0); /* Q^T, zero past nq */
                memset(f.ob, 0, sizeof(float) * (size_t)nq * hd);
                for (j = 0; j < NR; j++) { mx[j] = -INFINITY; sm[j] = 0.0f; }
                for (kb0 = 0; kb0 <= qmax; kb0 += UTG__FA_KB) {
                    int nk = qmax + 1 - kb0 < UTG__FA_KB ? qmax + 1 - kb0 : UTG__FA_KB; /* keys some query of the panel sees */
                    float *t = f.st;
                    utg__fa_tile(gk, t, f.ka, f.qt, kb0, nk, hd);
                    utg__fa_mask(t, NR, kb0, nk, p0, -INFINITY);
                    for (j = 0; j < NR; j++) mn[j] = mx[j];
                    utg__fa_colmax(mn, t, NR, nk);
                    utg__fa_exp(t, NR, nk, mn);
                    utg__fa_mask(t, NR, kb0, nk, p0, 0.0f);
                    for (j = 0; j < NR; j++) { al[j] = mx[j] == -INFINITY ? 0.0f : utg__expf(mx[j] - mn[j]); sm[j] *= al[j]; mx[j] = mn[j]; }
                    utg__fa_colsum(sm, t, NR, nk);
                    if (kb0 > 0)
                        for (j = 0; j < nq; j++)
                            for (i = 0; i < hd; i++) f.ob[(size_t)j * hd + i] *= al[j];
                    utg__fa_acc(gk, f.ob, hd, t, f.bn, T, kb0, nk, nq, hd, 1); /* O += P V */
                }
                for (j = 0; j < nq; j++) {
                    float inv = 1.0f / sm[j], *yr = y + ro + (size_t)j * qw;
                    for (i = 0; i < hd; i++) yr[i] = f.ob[(size_t)j * hd + i] * inv;
                    lse[((size_t)b * T + p0 + j) * H + h] = mx[j] + logf(sm[j]);
                }
            }
        }
    }
}

/* attn_bwd (FlashAttention-2's backward): D = rowsum(dO * O) per query, P recomputed from S and the
   saved lse, dS = P (dP - D) scale; dV += P^T dO, dK += dS^T Q, dQ += dS K. dK and dV rows belong
   to one task, so they are summed without atomics; dq rows are written by the task of their head. */
static void utg__cpu_attn_bwd_f32(utg_backend *be, float *dq, float *dk, float *dv, const float *dy,
                                  const float *q, const float *k, const float *v, const float *y,
                                  const float *lse, int B, int T, int H, int Hkv, int hd, float scale) {
    int task, group = H / Hkv, qw = H * hd, kw = Hkv * hd;
    const utg__gk *gk = utg__cpu_of(be)->gk;
    const int NR = gk->nr;
    size_t per = utg__attn_scratch_per_thread(T, hd);
    float *scr = utg__cpu_scratch(be, (size_t)utg__max_threads() * per);
    UTG_ASSERT(scr != NULL);
    if (!scr) return;
    /* b runs fastest over the tasks, so the tasks running at once work on different sequences: two
       kv heads of one sequence write halves of the same dq, dk and dv rows, and running those side by
       side moves cache lines between the cores (about 15% of the backward on two threads) */
    UTG__OMP_FOR_DYN
    for (task = 0; task < B * Hkv; task++) {
        int b = task % B, kh = task / B, g, p0, kb0, i, j;
        utg__fa_buf f = utg__fa_carve(scr + (size_t)utg__thread_id() * per, T, hd);
        float *Dr = f.l0, *L = f.l1;
        size_t ko = (size_t)b * T * kw + (size_t)kh * hd;
        utg__pack_a_rows(gk, f.ka, k + ko, kw, T, hd, scale); /* scaled K, keys as rows: the scores */
        utg__pack_a_rows(gk, f.vr, v + ko, kw, T, hd, 1.0f);  /* V, keys as rows: dP^T = V dO^T */
        utg__pack_b_all(gk, f.bn, k + ko, kw, T, hd);         /* K as B panels, k = the keys: dQ += dS K */
        for (i = 0; i < T; i++) { /* the task's dK and dV rows are sums over its panels and heads */
            memset(dk + ko + (size_t)i * kw, 0, (size_t)hd * sizeof(float));
            memset(dv + ko + (size_t)i * kw, 0, (size_t)hd * sizeof(float));
        }
        for (g = 0; g < group; g++) {
            int h = kh * group + g;
            for (p0 = 0; p0 < T; p0 += NR) {
                int nq = T - p0 < NR ? T - p0 : NR, qmax = p0 + nq - 1;
                size_t ro = ((size_t)b * T + p0) * qw + (size_t)h * hd;
                utg__pack_b(gk, f.qt, q + ro, qw, UTG_TRANS, nq, 0, hd, 0, 0);  /* Q^T and dO^T (k = hd), zero past nq */
                utg__pack_b(gk, f.dt, dy + ro, qw, UTG_TRANS, nq, 0, hd, 0, 0);
                utg__pack_b_all(gk, f.qb, q + ro, qw, nq, hd);  /* Q and dO as B panels, k = the panel's queries */
                utg__pack_b_all(gk, f.db, dy + ro, qw, nq, hd);
                for (j = 0; j < NR; j++) {
                    Dr[j] = j < nq ? utg__dot(dy + ro + (size_t)j * qw, y + ro + (size_t)j * qw, hd) : 0.0f;
                    L[j] = j < nq ? lse[((size_t)b * T + p0 + j) * H + h] : 0.0f;
                }
                for (kb0 = 0; kb0 <= qmax; kb0 += UTG__FA_KB) {
                    int nk = qmax + 1 - kb0 < UTG__FA_KB ? qmax + 1 - kb0 : UTG__FA_KB;
                    float *t = f.st, *d = f.dp;
                    utg__fa_tile(gk, t, f.ka, f.qt, kb0, nk, hd); /* S^T */
                    utg__fa_tile(gk, d, f.vr, f.dt, kb0, nk, hd); /* dP^T */
                    utg__fa_exp(t, NR, nk, L);                    /* P^T = e^(S^T - lse) */
                    utg__fa_mask(t, NR, kb0, nk, p0, 0.0f);
                    for (i = 0; i < nk; i++) /* dS^T = P^T (dP^T - D) scale */
                        for (j = 0; j < NR; j++) d[(size_t)i * NR + j] = t[(size_t)i * NR + j] * (d[(size_t)i * NR + j] - Dr[j]) * scale;
                    /* dV += P^T dO and dK += dS^T Q over the tile's keys (k = the panel's queries) */
                    utg__fa_kv(gk, dv + ko + (size_t)kb0 * kw, kw, t, f.db, f.pa, nk, nq, hd);
                    utg__fa_kv(gk, dk + ko + (size_t)kb0 * kw, kw, d, f.qb, f.pa, nk, nq, hd);
                    utg__fa_acc(gk, dq + ro, qw, d, f.bn, T, kb0, nk, nq, hd, kb0 > 0); /* dQ (=, then +=) dS K */
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_elementwise
   The per-token ops of a block: relu^2 (the MLP activation), XSA, the gated skip (lerp), the
   attention output gate, SmearGate and the channel mix (every residual add). Per-token work is
   split over the threads by token; every weight gradient is summed down the tokens in order (or
   in fixed chunks), in double where the sum is long.
   ------------------------------------------------------------------------------------------------ */

/* relu2_fwd: y = leaky_relu(x, slope)^2 elementwise (train_gpt.py's relu(x).square() at slope 0). */
static void utg__cpu_relu2_fwd_f32(utg_backend *be, float *y, const float *x, size_t n, float slope) {
    long long i;
    (void)be;
    UTG__OMP_FOR
    for (i = 0; i < (long long)n; i++) { float r = x[i] > 0.0f ? x[i] : slope * x[i]; y[i] = r * r; }
}
/* relu2_bwd: WRITES dx = dy * 2x * (x > 0 ? 1 : slope^2), which is 2 r r' with r = leaky_relu(x). */
static void utg__cpu_relu2_bwd_f32(utg_backend *be, float *dx, const float *dy, const float *x, size_t n,
                                   float slope) {
    long long i;
    float s2 = slope * slope;
    (void)be;
    UTG__OMP_FOR
    for (i = 0; i < (long long)n; i++) dx[i] = 2.0f * x[i] * dy[i] * (x[i] > 0.0f ? 1.0f : s2);
}

/* xsa_fwd: removes from each query head's output its component along the token's own value
   vector (kv head h / (H / Hkv)); a zero value vector leaves the output as it is. */
static void utg__cpu_xsa_fwd_f32(utg_backend *be, float *y, const float *x, const float *v, int n_tok, int H,
                             int Hkv, int hd) {
    int t, g = H / Hkv;
    (void)be;
    UTG__OMP_FOR
    for (t = 0; t < n_tok; t++) {
        int h, i;
        for (h = 0; h < H; h++) {
            const float *xr = x + ((size_t)t * H + h) * hd, *vr = v + ((size_t)t * Hkv + h / g) * hd;
            float *yr = y + ((size_t)t * H + h) * hd;
            float vv = utg__dot(vr, vr, hd),
                  s = vv > 0.0f ? utg__dot(xr, vr, hd) / vv : 0.0f; /* (x.u) u = (x.v / v.v) v */
            for (i = 0; i < hd; i++) yr[i] = xr[i] - s * vr[i];
        }
    }
}
/* with u = v/|v| and s = x.u:  dx = dy - (dy.u) u;  du = -(s dy + (dy.u) x);  dv = (du - (du.u) u) / |v| */
static void utg__cpu_xsa_bwd_f32(utg_backend *be, float *dx, float *dv, const float *dy, const float *x,
                             const float *v, int n_tok, int H, int Hkv, int hd) {
    int t, g = H / Hkv;
    (void)be;
    UTG__OMP_FOR
    for (t = 0; t < n_tok; t++) {
        int h, i;
        for (h = 0; h < H; h++) {
            const float *xr = x + ((size_t)t * H + h) * hd, *vr = v + ((size_t)t * Hkv + h / g) * hd;
            const float *dyr = dy + ((size_t)t * H + h) * hd;
            float *dxr = dx + ((size_t)t * H + h) * hd, *dvr = dv + ((size_t)t * Hkv + h / g) * hd;
            float vv = utg__dot(vr, vr, hd), nv, s, a, du_u = 0.0f;
            if (!(vv > 0.0f)) { for (i = 0; i < hd; i++) dxr[i] += dyr[i]; continue; }
            nv = sqrtf(vv);
            s = utg__dot(xr, vr, hd) / nv;
            a = utg__dot(dyr, vr, hd) / nv; /* dy.u */
            for (i = 0; i < hd; i++) dxr[i] += dyr[i] - a * vr[i] / nv;
            for (i = 0; i < hd; i++) du_u += -(s * dyr[i] + a * xr[i]) * vr[i] / nv;
            /* query heads of one kv head run in order inside this thread's token: deterministic */
            for (i = 0; i < hd; i++) dvr[i] += (-(s * dyr[i] + a * xr[i]) - du_u * vr[i] / nv) / nv;
        }
    }
}

/* lerp_fwd (the gated skip of PR #1089): out = a x + (1 - a) s z per column, a = sigmoid(g[c]). */
/* One row of the gated skip: out = a x + (1 - a) s z, a = sigmoid(g) per channel. */
static void utg__lerp_row(float *out, const float *x, const float *z, const float *g, const float *s, int cols) {
    int c;
    for (c = 0; c < cols; c++) {
        float a = 1.0f / (1.0f + expf(-g[c]));
        out[c] = a * x[c] + (1.0f - a) * (s ? s[c] : 1.0f) * z[c];
    }
}

static void utg__cpu_lerp_fwd_f32(utg_backend *be, float *out, const float *x, const float *z, const float *g,
                                  const float *s, int rows, int cols) {
    int r;
    (void)be;
    UTG__OMP_FOR
    for (r = 0; r < rows; r++)
        utg__lerp_row(out + (size_t)r * cols, x + (size_t)r * cols, z + (size_t)r * cols, g, s, cols);
}
/* column sums run down the rows in order (one column per thread): the same bits for any thread count */
static void utg__cpu_lerp_bwd_f32(utg_backend *be, float *dx, float *dz, float *dg, float *ds,
                                  const float *dout, const float *y, const float *z, const float *g,
                                  const float *s, int rows, int cols) {
    int c, r;
    (void)be;
    UTG__OMP_FOR
    for (c = 0; c < cols; c++) {
        float a = 1.0f / (1.0f + expf(-g[c])), b = 1.0f - a, sc = s ? s[c] : 1.0f;
        double sg = 0.0, ss = 0.0;
        int i;
        for (i = 0; i < rows; i++) {
            size_t o = (size_t)i * cols + c;
            float d = dout[o];
            sg += (double)d * ((double)y[o] - (double)sc * z[o]);
            ss += (double)d * z[o];
            dz[o] += d * b * sc;
        }
        dg[c] += (float)(b * sg); /* d out / d g = a (1 - a) (x - s z) = (1 - a) (y - s z) */
        if (ds) ds[c] += (float)(b * ss);
    }
    UTG__OMP_FOR
    for (r = 0; r < rows; r++) {
        int k;
        for (k = 0; k < cols; k++)
            dx[(size_t)r * cols + k] = dout[(size_t)r * cols + k] / (1.0f + expf(-g[k]));
    }
}

/* gate_fwd: per token and head, g = mult * sigmoid(scale * W[h, :win] . x[t, :win]) (saved for the
   backward) and y = g yin. */
static void utg__cpu_gate_fwd_f32(utg_backend *be, float *y, float *g, const float *yin, const float *x,
                              const float *W, int n_tok, int H, int hd, int x_cols, int win, float scale,
                              float mult) {
    int t;
    (void)be;
    UTG__OMP_FOR
    for (t = 0; t < n_tok; t++) {
        int h, i;
        for (h = 0; h < H; h++) {
            float z = scale * utg__dot(W + (size_t)h * win, x + (size_t)t * x_cols, win),
                  gv = mult / (1.0f + expf(-z));
            const float *a = yin + ((size_t)t * H + h) * hd;
            float *o = y + ((size_t)t * H + h) * hd;
            g[(size_t)t * H + h] = gv;
            for (i = 0; i < hd; i++) o[i] = gv * a[i];
        }
    }
}
/* dz is recomputed where needed (cheap: one dot per head) so every reduction runs in a fixed order */
static float utg__gate_dz(const float *dy, const float *yin, const float *g, int t, int h, int H, int hd, float mult) {
    float gv = g[(size_t)t * H + h];
    return utg__dot(dy + ((size_t)t * H + h) * hd, yin + ((size_t)t * H + h) * hd, hd) * gv * (1.0f - gv / mult);
}
/* gate_bwd: two passes, per token (dyin, dx) and per weight (dW, in double down the tokens). */
static void utg__cpu_gate_bwd_f32(utg_backend *be, float *dyin, float *dx, float *dW, const float *dy,
                              const float *yin, const float *x, const float *W, const float *g, int n_tok,
                              int H, int hd, int x_cols, int win, float scale, float mult) {
    int t, hi;
    (void)be;
    UTG__OMP_FOR
    for (t = 0; t < n_tok; t++) { /* per token: dyin and dx */
        int h, i;
        for (h = 0; h < H; h++) {
            float gv = g[(size_t)t * H + h], dz = utg__gate_dz(dy, yin, g, t, h, H, hd, mult);
            const float *a = dy + ((size_t)t * H + h) * hd;
            float *o = dyin + ((size_t)t * H + h) * hd;
            for (i = 0; i < hd; i++) o[i] += gv * a[i];
            for (i = 0; i < win; i++) dx[(size_t)t * x_cols + i] += scale * dz * W[(size_t)h * win + i];
        }
    }
    UTG__OMP_FOR
    for (hi = 0; hi < H * win; hi++) { /* per weight: down the tokens in order */
        int h = hi / win, i = hi % win, k;
        double s = 0.0;
        for (k = 0; k < n_tok; k++)
            s += (double)utg__gate_dz(dy, yin, g, k, h, H, hd, mult) * x[(size_t)k * x_cols + i];
        dW[hi] += (float)(scale * s);
    }
}

/* Whether token row t mixes in its predecessor: not the first of its sequence, and not a BOS
   token (PR #1855's mask, so no document leaks into the next through the gate). */
static int utg__smear_on(const int32_t *ids, int t, int seq_len, int bos) { return t % seq_len != 0 && ids[t] != bos; }
/* smear_fwd (PR #1667): y_t = x_t + lam sigmoid(w . x_t[0:win]) x_{t-1} where utg__smear_on. */
static void utg__cpu_smear_fwd_f32(utg_backend *be, float *y, const float *x, const float *w,
                                   const float *lam, const int32_t *ids, int n_tok, int seq_len, int d,
                                   int win, int bos) {
    int t;
    (void)be;
    UTG__OMP_FOR
    for (t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * d;
        float *yt = y + (size_t)t * d;
        int i;
        if (!utg__smear_on(ids, t, seq_len, bos)) { for (i = 0; i < d; i++) yt[i] = xt[i]; continue; }
        {
            float a = lam[0] / (1.0f + expf(-utg__dot(w, xt, win)));
            for (i = 0; i < d; i++) yt[i] = xt[i] + a * xt[i - d];
        }
    }
}
/* smear_bwd: ADDS dx per token (its own dy, the next token's gate times its dy, and the gate's
   input term), then dw and dlam as double sums down the tokens, one after the other. */
static void utg__cpu_smear_bwd_f32(utg_backend *be, float *dx, float *dw, float *dlam, const float *dy,
                                   const float *x, const float *w, const float *lam, const int32_t *ids,
                                   int n_tok, int seq_len, int d, int win, int bos) {
    int t, i;
    double sl = 0.0;
    (void)be;
    /* dx_t += dy_t + (gate of t+1) dy_{t+1} + the gate's own input term: each row written by one thread */
    UTG__OMP_FOR
    for (t = 0; t < n_tok; t++) {
        const float *dyt = dy + (size_t)t * d, *xt = x + (size_t)t * d;
        float *dxt = dx + (size_t)t * d;
        int k;
        for (k = 0; k < d; k++) dxt[k] += dyt[k];
        if (t + 1 < n_tok && utg__smear_on(ids, t + 1, seq_len, bos)) {
            float a = lam[0] / (1.0f + expf(-utg__dot(w, xt + d, win)));
            for (k = 0; k < d; k++) dxt[k] += a * dyt[k + d];
        }
        if (utg__smear_on(ids, t, seq_len, bos)) {
            float s = 1.0f / (1.0f + expf(-utg__dot(w, xt, win)));
            float dz = lam[0] * utg__dot(dyt, xt - d, d) * s * (1.0f - s);
            for (k = 0; k < win; k++) dxt[k] += dz * w[k];
        }
    }
    for (i = 0; i < win; i++) { /* the weights: down the tokens in order */
        double s2 = 0.0;
        for (t = 0; t < n_tok; t++) {
            const float *xt = x + (size_t)t * d;
            float s;
            if (!utg__smear_on(ids, t, seq_len, bos)) continue;
            s = 1.0f / (1.0f + expf(-utg__dot(w, xt, win)));
            s2 += (double)(lam[0] * utg__dot(dy + (size_t)t * d, xt - d, d) * s * (1.0f - s)) * xt[i];
        }
        dw[i] += (float)s2;
    }
    for (t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * d;
        if (!utg__smear_on(ids, t, seq_len, bos)) continue;
        sl += (double)utg__dot(dy + (size_t)t * d, xt - d, d) / (1.0 + exp(-(double)utg__dot(w, xt, win)));
    }
    dlam[0] += (float)sl;
}

/* one row of the channel mix (mix_fwd and mix_rmsnorm_fwd); x and out are the row's, z may be NULL */
static void utg__mix_row(float *out, const float *x, const float *wx, int sx, const float *z, const float *wz, int sz, int cols) {
    int c;
    for (c = 0; c < cols; c++) {
        float a = wx ? wx[c * sx] * x[c] : x[c], bz;
        if (z) bz = wz ? wz[c * sz] * z[c] : z[c];
        else bz = wz ? wz[c * sz] : 0.0f;
        out[c] = a + bz;
    }
}
/* the residual add and the next norm in one pass: each row is mixed, then normalized while in L1
   (y NULL: the mix alone, mix_fwd) */
static void utg__cpu_mix_rmsnorm_fwd_f32(utg_backend *be, float *out, float *y, float *rstd, const float *x,
                                     const float *wx, const float *z, const float *wz, int rows, int cols,
                                     int flags, float eps) {
    int r, sx = (flags & UTG_MIX_WX_SCALAR) ? 0 : 1, sz = (flags & UTG_MIX_WZ_SCALAR) ? 0 : 1;
    float sig = wz && (flags & UTG_MIX_WZ_SIGMOID) ? 1.0f / (1.0f + expf(-wz[0])) : 0.0f;
    (void)be;
    if (wz && (flags & UTG_MIX_WZ_SIGMOID)) wz = &sig;
    UTG__OMP_FOR
    for (r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        utg__mix_row(out + o, x + o, wx, sx, z ? z + o : NULL, wz, sz, cols);
        if (y) rstd[r] = utg__rms_row(y + o, out + o, cols, eps);
    }
}
/* mix_fwd: mix_rmsnorm_fwd without the norm (y NULL). */
static void utg__cpu_mix_fwd_f32(utg_backend *be, float *out, const float *x, const float *wx, const float *z,
                             const float *wz, int rows, int cols, int flags) {
    utg__cpu_mix_rmsnorm_fwd_f32(be, out, NULL, NULL, x, wx, z, wz, rows, cols, flags, 0.0f);
}

/* One pass over the rows: each fixed chunk of rows sums its share of dwx (dout x) and dwz (dout z)
   in row order, then writes or adds dx and dz for the row (so dx may even alias dout); the chunks'
   shares are added in chunk order, so no bit depends on the thread count. */
static void utg__cpu_mix_bwd_f32(utg_backend *be, float *dx, float *dz, float *dwx, float *dwz,
                                 const float *dout, const float *x, const float *wx, const float *z,
                                 const float *wz, int rows, int cols, int flags) {
    int sx = (flags & UTG_MIX_WX_SCALAR) ? 0 : 1, sz = (flags & UTG_MIX_WZ_SCALAR) ? 0 : 1, sig_w = wz && (flags & UTG_MIX_WZ_SIGMOID);
    int nch = rows < UTG__CPU_RED_CHUNKS ? (rows > 0 ? rows : 1) : UTG__CPU_RED_CHUNKS, ch, c, set_x = flags & UTG_MIX_DX_SET,
        set_z = flags & UTG_MIX_DZ_SET;
    float sig = sig_w ? 1.0f / (1.0f + expf(-wz[0])) : 0.0f, *part = NULL;
    if (sig_w) wz = &sig;
    if (!z) dz = NULL;
    if (rows <= 0 || cols <= 0) return;
    if (dwx || dwz) {
        part = utg__cpu_scratch(be, (size_t)nch * 2 * cols);
        UTG_ASSERT(part != NULL);
        if (!part) return;
    }
    UTG__OMP_FOR
    for (ch = 0; ch < nch; ch++) {
        int r0 = (int)((long long)rows * ch / nch), r1 = (int)((long long)rows * (ch + 1) / nch), r, cc;
        float *px = part ? part + (size_t)ch * 2 * cols : NULL, *pz = px ? px + cols : NULL;
        if (px) memset(px, 0, 2 * (size_t)cols * sizeof(float));
        for (r = r0; r < r1; r++) {
            size_t o = (size_t)r * cols;
            const float *g = dout + o;
            if (dwx) {
                if (x) for (cc = 0; cc < cols; cc++) px[cc] += g[cc] * x[o + cc];
                else for (cc = 0; cc < cols; cc++) px[cc] += g[cc];
            }
            if (dwz) {
                if (z) for (cc = 0; cc < cols; cc++) pz[cc] += g[cc] * z[o + cc];
                else for (cc = 0; cc < cols; cc++) pz[cc] += g[cc];
            }
            if (dz && set_z) for (cc = 0; cc < cols; cc++) dz[o + cc] = wz ? wz[cc * sz] * g[cc] : g[cc];
            else if (dz) for (cc = 0; cc < cols; cc++) dz[o + cc] += wz ? wz[cc * sz] * g[cc] : g[cc];
            if (dx && set_x) for (cc = 0; cc < cols; cc++) dx[o + cc] = wx ? wx[cc * sx] * g[cc] : g[cc];
            else if (dx) for (cc = 0; cc < cols; cc++) dx[o + cc] += wx ? wx[cc * sx] * g[cc] : g[cc];
        }
    }
    if (dwx) {
        if (!sx) {
            double acc = 0.0;
            for (ch = 0; ch < nch; ch++)
                for (c = 0; c < cols; c++) acc += part[(size_t)ch * 2 * cols + c];
            dwx[0] += (float)acc;
        } else {
            for (ch = 0; ch < nch; ch++)
                for (c = 0; c < cols; c++) dwx[c] += part[(size_t)ch * 2 * cols + c];
        }
    }
    if (dwz) {
        if (!sz || sig_w) {
            double acc = 0.0;
            float a;
            for (ch = 0; ch < nch; ch++)
                for (c = 0; c < cols; c++) acc += part[(size_t)ch * 2 * cols + cols + c];
            a = (float)acc;
            dwz[0] += sig_w ? a * sig * (1.0f - sig) : a; /* d sigmoid(w) / dw = s (1 - s) */
        } else {
            for (ch = 0; ch < nch; ch++)
                for (c = 0; c < cols; c++) dwz[c] += part[(size_t)ch * 2 * cols + cols + c];
        }
    }
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_xent
   The softcapped cross-entropy of the head: c tanh(z / c) (train_gpt.py's logit softcap), the
   log-sum-exp per row and, in the same pass, the gradient written over the logits, so the
   [rows, V] logits never need a second buffer.
   ------------------------------------------------------------------------------------------------ */
/* tanh without libm, in loops GCC vectorizes: an odd Taylor polynomial below |y| = 1/4 (relative
   error under 1e-8 there), sign(y) (1 - 2/(e^2|y| + 1)) above (e^2|y| from utg__expf_core; |y| clamped to 9,
   where tanh rounds to 1). Relative error below 5e-7 (tests/test_ops.c checks against double). */
#define UTG__XCHUNK 256
static void utg__tanh_chunk(float *UTG_RESTRICT out, const float *UTG_RESTRICT y, float *UTG_RESTRICT tmp,
                            int n, float mult) {
    int i;
    for (i = 0; i < n; i++) {
        float v = y[i];
        v = v < -9.0f ? -9.0f : v;
        tmp[i] = v > 9.0f ? 9.0f : v;
    }
    for (i = 0; i < n; i++) out[i] = utg__expf_core(2.0f * fabsf(tmp[i])); /* e^2|y|: odd by construction */
    for (i = 0; i < n; i++) {
        float v = tmp[i], t = v * v, e = out[i];
        float p =
            v + v * t * (-1.0f / 3.0f + t * (2.0f / 15.0f + t * (-17.0f / 315.0f + t * (62.0f / 2835.0f))));
        float big = 1.0f - 2.0f / (e + 1.0f);
        big = v < 0.0f ? -big : big;
        out[i] = mult * (t < 0.0625f ? p : big);
    }
}

/* Softcapped cross-entropy of each row, and (dscale != 0) its gradient in place: rows are
   independent, each worked in chunks of UTG__XCHUNK (the same bits for any thread count). */
static void utg__cpu_xent_fwd_f32(utg_backend *be, float *logits, float *row_loss, const int32_t *targets,
                                  int rows, int V, float softcap, float dscale) {
    int r;
    (void)be;
    UTG__OMP_FOR
    for (r = 0; r < rows; r++) {
        float *z = logits + (size_t)r * V, mx, sum = 0.0f, inv, zt;
        float tmp[UTG__XCHUNK], tmp2[UTG__XCHUNK];
        int j, c0, tgt = targets[r];
        if (softcap > 0.0f) {
            float ic = 1.0f / softcap;
            for (c0 = 0; c0 < V; c0 += UTG__XCHUNK) {
                int n = V - c0 < UTG__XCHUNK ? V - c0 : UTG__XCHUNK;
                for (j = 0; j < n; j++) tmp2[j] = z[c0 + j] * ic;
                utg__tanh_chunk(z + c0, tmp2, tmp, n, softcap);
            }
        }
        mx = utg__row_max(z, V, -INFINITY);
        for (c0 = 0; c0 < V; c0 += UTG__XCHUNK) { /* chunk sums added in order */
            int n = V - c0 < UTG__XCHUNK ? V - c0 : UTG__XCHUNK;
            memcpy(tmp, z + c0, sizeof(float) * (size_t)n);
            utg__exp_row(tmp, n, mx);
            sum += utg__row_sum(tmp, n);
        }
        zt = z[tgt];
        row_loss[r] = mx + logf(sum) - zt;
        if (dscale != 0.0f) {
            float ic = softcap > 0.0f ? 1.0f / softcap : 0.0f;
            inv = dscale / sum;
            for (c0 = 0; c0 < V; c0 += UTG__XCHUNK) {
                int n = V - c0 < UTG__XCHUNK ? V - c0 : UTG__XCHUNK;
                float *zc = z + c0;
                memcpy(tmp, zc, sizeof(float) * (size_t)n);
                utg__exp_row(tmp, n, mx);
                if (softcap > 0.0f)
                    for (j = 0; j < n; j++) { float th = zc[j] * ic; zc[j] = tmp[j] * inv * (1.0f - th * th); }
                else
                    for (j = 0; j < n; j++) zc[j] = tmp[j] * inv;
            }
            { /* the target's -dscale, through the same softcap derivative */
                float e = utg__expf(zt - mx), th = zt * ic;
                z[tgt] = (e * inv - dscale) * (softcap > 0.0f ? 1.0f - th * th : 1.0f);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_optim
   The optimizer's elementwise ops: axpby (EMA, SWA, gradient scaling), Muon's momentum, the
   deterministic sum of squares (clipping, norms), the row normalization of MuonEq-R and the
   Adam(W) step. All elementwise or per row, so no result depends on the thread count.
   ------------------------------------------------------------------------------------------------ */

/* axpby: y = alpha x + beta y; alpha 0 (or x NULL) scales y alone and never reads x. */
static void utg__cpu_axpby(utg_backend *be, float *y, float alpha, const float *x, float beta, size_t n) {
    ptrdiff_t i, nn = (ptrdiff_t)n;
    (void)be;
    if (alpha == 0.0f || !x) {
        UTG__OMP_FOR
        for (i = 0; i < nn; i++) y[i] = beta * y[i];
        return;
    }
    if (beta == 0.0f) { /* y is not read: a NaN there does not survive */
        UTG__OMP_FOR
        for (i = 0; i < nn; i++) y[i] = alpha * x[i];
        return;
    }
    UTG__OMP_FOR
    for (i = 0; i < nn; i++) y[i] = alpha * x[i] + beta * y[i];
}

/* muon_momentum: m = mu m + g, then u = g + mu m (nesterov, train_gpt.py's default) or u = m. */
static void utg__cpu_muon_momentum(utg_backend *be, float *u, float *m, const float *g, float mu,
                                   int nesterov, size_t n) {
    ptrdiff_t i, nn = (ptrdiff_t)n;
    (void)be;
    if (nesterov) {
        UTG__OMP_FOR
        for (i = 0; i < nn; i++) {
            float b = g[i] + mu * m[i];
            m[i] = b;
            u[i] = g[i] + mu * b;
        }
    } else {
        UTG__OMP_FOR
        for (i = 0; i < nn; i++) u[i] = m[i] = g[i] + mu * m[i];
    }
}

/* Deterministic sum of x or of x^2: at most UTG__SUM_PARTS chunks whose size depends only on n,
   each summed in double in 8 lanes folded in a fixed order, then the partial sums added in chunk
   order. */
#define UTG__SUM_PARTS 256
static double utg__cpu_sum(const float *x, size_t n, int squares) {
    double part[UTG__SUM_PARTS], total = 0.0;
    size_t chunk = (n + UTG__SUM_PARTS - 1) / UTG__SUM_PARTS;
    int c, n_parts;
    if (chunk < 4096) chunk = 4096;
    n_parts = (int)((n + chunk - 1) / chunk);
    UTG__OMP_FOR
    for (c = 0; c < n_parts; c++) {
        size_t i, lo = (size_t)c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double acc[8] = {0};
        int l;
        if (squares) {
            for (i = lo; i + 8 <= hi; i += 8) /* 8 lanes (a loop that vectorizes), folded pairwise */
                for (l = 0; l < 8; l++) acc[l] += (double)x[i + l] * (double)x[i + l];
            for (; i < hi; i++) acc[(i - lo) & 7] += (double)x[i] * (double)x[i];
        } else {
            for (i = lo; i + 8 <= hi; i += 8)
                for (l = 0; l < 8; l++) acc[l] += (double)x[i + l];
            for (; i < hi; i++) acc[(i - lo) & 7] += (double)x[i];
        }
        for (l = 0; l < 4; l++) acc[l] += acc[l + 4];
        part[c] = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    }
    for (c = 0; c < n_parts; c++) total += part[c];
    return total;
}

static void utg__cpu_reduce_f64(utg_backend *be, double *out, const float *x, size_t n, double scale,
                                int flags) {
    double v = scale * utg__cpu_sum(x, n, (flags & UTG_REDUCE_SQUARES) != 0);
    (void)be;
    out[0] = (flags & UTG_REDUCE_ADD) ? out[0] + v : v;
}

/* normalize_frob: the scale is computed in double and applied in float, as axpby would. */
static void utg__cpu_normalize_frob(utg_backend *be, float *x, size_t n, double eps) {
    float inv = (float)(1.0 / (sqrt(utg__cpu_sum(x, n, 1)) + eps));
    ptrdiff_t i, nn = (ptrdiff_t)n;
    (void)be;
    UTG__OMP_FOR
    for (i = 0; i < nn; i++) x[i] = inv * x[i];
}

/* row_normalize: each row of x[rows, cols] divided by max(||row||_2, eps), the norm summed in double. */
static void utg__cpu_row_normalize(utg_backend *be, float *x, int rows, int cols, float eps) {
    int r;
    (void)be;
    UTG__OMP_FOR
    for (r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols;
        double s = 0.0;
        float nrm, inv;
        int j;
        for (j = 0; j < cols; j++) s += (double)row[j] * row[j];
        nrm = (float)sqrt(s);
        inv = 1.0f / (nrm > eps ? nrm : eps);
        for (j = 0; j < cols; j++) row[j] *= inv;
    }
}

/* fake_quant_rows, QAT=ste: each row through utg__quant_row (the quantizer's own arithmetic, so
   the bits match utg_quantize_rows + utg_dequantize_rows) with symbols in a row-sized scratch. */
static void utg__cpu_fake_quant_ste(utg_backend *be, float *out, const float *w, int rows, int cols, int bits,
                                    int clip, double clip_param) {
    int i, r = (1 << (bits - 1)) - 1;
    UTG__OMP_FOR
    for (i = 0; i < rows; i++) {
        const float *wr = w + (size_t)i * cols;
        float *o = out + (size_t)i * cols, s16;
        int8_t sym[512], *q = cols <= 512 ? sym : (int8_t *)utg__cpu_scratch(be, ((size_t)cols + 3) / 4);
        uint16_t scale16;
        int c, finite = 1;
        for (c = 0; c < cols; c++) finite &= isfinite(wr[c]) != 0;
        if (!q) { /* out of memory: NaN, which the step refuses, rather than an unquantized row */
            for (c = 0; c < cols; c++) o[c] = NAN;
        } else if (!finite) { /* nothing sensible to round: pass the row through */
            memcpy(o, wr, sizeof(float) * (size_t)cols);
        } else {
            float lo = clip == UTG_CLIP_SDCLIP ? 1e-10f : 1.0f / (float)r;
            utg__quant_row(wr, cols, r, utg__row_clip_direct(wr, cols, (utg_clip_mode)clip, clip_param), lo,
                           q, &scale16);
            s16 = utg_f16_to_f32(scale16);
            for (c = 0; c < cols; c++) o[c] = (float)q[c] * s16;
        }
    }
}

/* The counter-based uniform draw of fake_quant_rows: 24 bits of the splitmix64 finalizer of
   key + (i + 1) * 0x9E3779B97F4A7C15, as a float in [0, 1). */
static float utg__counter_uniform(uint64_t key, uint64_t i) {
    uint64_t x = key + i * 0x9e3779b97f4a7c15ull;
    return (float)(utg__splitmix64(&x) >> 40) * (1.0f / 16777216.0f);
}

/* fake_quant_rows, QAT=noisy: one quantization step of uniform noise per weight, scaled by the row max. */
static void utg__cpu_fake_quant_noise(float *out, const float *w, int rows, int cols, int bits,
                                      uint64_t key) {
    int i, r = (1 << (bits - 1)) - 1;
    UTG__OMP_FOR
    for (i = 0; i < rows; i++) {
        const float *wr = w + (size_t)i * cols;
        float mx = 0.0f, step;
        int c;
        for (c = 0; c < cols; c++) mx = fabsf(wr[c]) > mx ? fabsf(wr[c]) : mx;
        step = mx / (float)r;
        for (c = 0; c < cols; c++) {
            uint64_t at = (uint64_t)i * (uint64_t)cols + (uint64_t)c;
            out[(size_t)at] = fmaf(utg__counter_uniform(key, at) - 0.5f, step, wr[c]);
        }
    }
}

static void utg__cpu_fake_quant_rows(utg_backend *be, float *out, const float *w, int rows, int cols,
                                     int bits, int clip, double clip_param, uint64_t noise_key) {
    if (noise_key) utg__cpu_fake_quant_noise(out, w, rows, cols, bits, noise_key);
    else utg__cpu_fake_quant_ste(be, out, w, rows, cols, bits, clip, clip_param);
}

/* adam_step: torch.optim.AdamW's update with the bias corrections folded into step and rbc2. */
static void utg__cpu_adam_step(utg_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                               float lr, float beta1, float beta2, float eps, float wd, float bc1,
                               float bc2) {
    ptrdiff_t i, nn = (ptrdiff_t)n;
    float step = lr / bc1, rbc2 = 1.0f / sqrtf(bc2), decay = 1.0f - lr * wd;
    (void)be;
    UTG__OMP_FOR
    for (i = 0; i < nn; i++) {
        float gi = g[i], mi = beta1 * m[i] + (1.0f - beta1) * gi,
              vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi) * rbc2 + eps);
    }
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_storage
   bf16 activation storage on the CPU. An op whose activation operands are BF16 converts each of them
   to fp32 scratch (utg__stage), runs the fp32 kernel, and rounds what it wrote back to bf16 once
   (utg__stage_end). This is the table's precision rule executed literally, so it is the reference
   a GPU's native bf16 kernels are checked against; it is not a fast path (ACTIVATION_DTYPE=auto
   picks F32 on the CPU). F32 operands go straight to the kernels.
   ------------------------------------------------------------------------------------------------ */
enum { UTG__STAGE_IN, UTG__STAGE_OUT, UTG__STAGE_INOUT };
#define UTG__MAX_STAGED 12

/* The fp32 views of one op's BF16 operands. On a failed allocation no kernel runs and every output
   is filled with NaN (the step then refuses a non-finite loss) rather than left as it was. */
typedef struct utg__stager {
    utg_backend *be;
    int n, failed;
    struct {
        const void *dev;
        float *f; /* NULL after a failed allocation */
        size_t n;
        int write_back;
    } slot[UTG__MAX_STAGED];
} utg__stager;

static void utg__stage_begin(utg__stager *st, utg_backend *be) { /* cheap: F32 ops stage nothing */
    st->be = be;
    st->n = st->failed = 0;
}

/* n floats of scratch for a view (the CPU allocator under the lock the scratch slots use) */
static float *utg__stage_alloc(utg_backend *be, size_t n) {
    utg__cpu *c = utg__cpu_of(be);
    size_t bytes;
    float *f = NULL;
    if (!utg__mul_ok(n ? n : 1, sizeof(float), &bytes)) return NULL;
#ifdef _OPENMP
#pragma omp critical(utg__cpu_alloc)
#endif
    f = (float *)utg__aligned_alloc(&c->alloc, bytes);
    return f;
}

/* The fp32 view of an operand of n elements stored as dtype (F32: the operand itself; NULL stays
   NULL). An operand staged twice (an output that aliases an input) has one view. Every view is
   loaded, so an output the op adds into keeps what it held. */
static float *utg__stage(utg__stager *st, utg_dtype dtype, const void *dev, size_t n, int mode) {
    const uint16_t *h = (const uint16_t *)dev;
    ptrdiff_t k, nn = (ptrdiff_t)n;
    float *f;
    int i;
    if (!dev || dtype == UTG_DT_F32) return (float *)(uintptr_t)dev;
    for (i = 0; i < st->n; i++)
        if (st->slot[i].dev == dev) {
            st->slot[i].write_back |= mode != UTG__STAGE_IN;
            return st->slot[i].f;
        }
    UTG_ASSERT(st->n < UTG__MAX_STAGED);
    if (st->n >= UTG__MAX_STAGED) { st->failed = 1; return NULL; }
    f = utg__stage_alloc(st->be, n);
    st->slot[st->n].dev = dev, st->slot[st->n].f = f, st->slot[st->n].n = n;
    st->slot[st->n++].write_back = mode != UTG__STAGE_IN;
    if (!f) { st->failed = 1; return NULL; }
    UTG__OMP_FOR
    for (k = 0; k < nn; k++) f[k] = utg__bf16_to_f32(h[k]);
    return f;
}

/* The outputs back to bf16 (each element rounded once; NaN after a failed allocation), and the
   scratch freed. */
static void utg__stage_end(utg__stager *st) {
    utg__cpu *c = utg__cpu_of(st->be);
    int i;
    for (i = 0; i < st->n; i++) {
        uint16_t *h = (uint16_t *)(uintptr_t)st->slot[i].dev;
        const float *f = st->slot[i].f;
        ptrdiff_t k, nn = (ptrdiff_t)st->slot[i].n;
        if (st->slot[i].write_back) {
            UTG__OMP_FOR
            for (k = 0; k < nn; k++) h[k] = (uint16_t)(st->failed ? 0x7fc0u : utg__bf16_bits(f[k]));
        }
#ifdef _OPENMP
#pragma omp critical(utg__cpu_alloc)
#endif
        utg__aligned_free(&c->alloc, st->slot[i].f);
    }
}

/* matmul and matmul_bf16 with per-operand types: C is loaded too when beta is not 0. */
static void utg__cpu_mm_typed(utg_backend *be, int bf16_products, int types, void *C, const void *A,
                              const void *B, int M, int N, int K, utg_trans ta, utg_trans tb, float alpha,
                              float beta) {
    void (*mm)(utg_backend *, float *, const float *, const float *, int, int, int, utg_trans, utg_trans,
               float, float) = bf16_products ? utg__cpu_matmul_bf16_f32 : utg__cpu_matmul_f32;
    utg__stager st;
    float *cf, *af, *bf;
    utg__stage_begin(&st, be);
    cf = utg__stage(&st, UTG_MM_TYPE_C(types), C, (size_t)M * N,
                    beta != 0.0f ? UTG__STAGE_INOUT : UTG__STAGE_OUT);
    af = utg__stage(&st, UTG_MM_TYPE_A(types), A, (size_t)M * K, UTG__STAGE_IN);
    bf = utg__stage(&st, UTG_MM_TYPE_B(types), B, (size_t)K * N, UTG__STAGE_IN);
    if (!st.failed) mm(be, cf, af, bf, M, N, K, ta, tb, alpha, beta);
    utg__stage_end(&st);
}
static void utg__cpu_matmul(utg_backend *be, int types, void *C, const void *A, const void *B, int M, int N,
                            int K, utg_trans ta, utg_trans tb, float alpha, float beta) {
    utg__cpu_mm_typed(be, 0, types, C, A, B, M, N, K, ta, tb, alpha, beta);
}
static void utg__cpu_matmul_bf16(utg_backend *be, int types, void *C, const void *A, const void *B, int M,
                                 int N, int K, utg_trans ta, utg_trans tb, float alpha, float beta) {
    utg__cpu_mm_typed(be, 1, types, C, A, B, M, N, K, ta, tb, alpha, beta);
}

/* fill: F32 through the chunked fill; BF16 as the rounded value's 16 bits. */
static void utg__cpu_fill(utg_backend *be, void *dst, utg_dtype dtype, float v, size_t n) {
    uint16_t b = (uint16_t)utg__bf16_bits(v), *h = (uint16_t *)dst;
    ptrdiff_t i, nn = (ptrdiff_t)n;
    if (dtype != UTG_DT_BF16) {
        utg__cpu_fill_f32(be, (float *)dst, v, n);
        return;
    }
    UTG__OMP_FOR
    for (i = 0; i < nn; i++) h[i] = b;
}

/* The table's ops on the CPU: each stages its BF16 operands (F32 ones pass through untouched) and
   runs its fp32 kernel. */
static void utg__cpu_embed_fwd(utg_backend *be, utg_dtype at, void *out, const float *table,
                               const int32_t *ids, int n, int d) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *out_f = utg__stage(&st, at, out, (size_t)n * d, UTG__STAGE_OUT);
    if (!st.failed) utg__cpu_embed_fwd_f32(be, out_f, table, ids, n, d);
    utg__stage_end(&st);
}
static void utg__cpu_embed_bwd(utg_backend *be, utg_dtype at, float *dtable, const void *dout,
                               const int32_t *ids, int n, int d) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dout_f = utg__stage(&st, at, dout, (size_t)n * d, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_embed_bwd_f32(be, dtable, dout_f, ids, n, d);
    utg__stage_end(&st);
}
static void utg__cpu_rmsnorm_fwd(utg_backend *be, utg_dtype at, void *y, float *rstd, const void *x, int rows,
                                 int cols, float eps) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *y_f = utg__stage(&st, at, y, (size_t)rows * cols, UTG__STAGE_OUT);
    float *x_f = utg__stage(&st, at, x, (size_t)rows * cols, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_rmsnorm_fwd_f32(be, y_f, rstd, x_f, rows, cols, eps);
    utg__stage_end(&st);
}
static void utg__cpu_rmsnorm_bwd(utg_backend *be, utg_dtype at, void *dx, const void *dy, const void *y,
                                 const float *rstd, int rows, int cols) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dx_f = utg__stage(&st, at, dx, (size_t)rows * cols, UTG__STAGE_OUT);
    float *dy_f = utg__stage(&st, at, dy, (size_t)rows * cols, UTG__STAGE_IN);
    float *y_f = utg__stage(&st, at, y, (size_t)rows * cols, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_rmsnorm_bwd_f32(be, dx_f, dy_f, y_f, rstd, rows, cols);
    utg__stage_end(&st);
}
static void utg__cpu_qk_norm_rope_fwd(utg_backend *be, utg_dtype at, void *y, void *xn, float *rstd,
                                      const void *x, const float *cos_sin, const float *gain, int n_tok,
                                      int seq_len, int n_heads, int head_dim, int rot_dims, float eps) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *y_f = utg__stage(&st, at, y, (size_t)n_tok * n_heads * head_dim, UTG__STAGE_OUT);
    float *xn_f = utg__stage(&st, at, xn, (size_t)n_tok * n_heads * head_dim, UTG__STAGE_OUT);
    float *x_f = utg__stage(&st, at, x, (size_t)n_tok * n_heads * head_dim, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_qk_norm_rope_fwd_f32(be, y_f, xn_f, rstd, x_f, cos_sin, gain, n_tok, seq_len,
                                                  n_heads, head_dim, rot_dims, eps);
    utg__stage_end(&st);
}
static void utg__cpu_qk_norm_rope_bwd(utg_backend *be, utg_dtype at, void *dx, float *dgain, const void *dy,
                                      const void *xn, const float *rstd, const float *cos_sin,
                                      const float *gain, int n_tok, int seq_len, int n_heads, int head_dim,
                                      int rot_dims) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dx_f = utg__stage(&st, at, dx, (size_t)n_tok * n_heads * head_dim, UTG__STAGE_OUT);
    float *dy_f = utg__stage(&st, at, dy, (size_t)n_tok * n_heads * head_dim, UTG__STAGE_IN);
    float *xn_f = utg__stage(&st, at, xn, (size_t)n_tok * n_heads * head_dim, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_qk_norm_rope_bwd_f32(be, dx_f, dgain, dy_f, xn_f, rstd, cos_sin, gain, n_tok,
                                                  seq_len, n_heads, head_dim, rot_dims);
    utg__stage_end(&st);
}
static void utg__cpu_attn_fwd(utg_backend *be, utg_dtype at, void *y, float *lse, const void *q,
                              const void *k, const void *v, int B, int T, int H, int Hkv, int hd,
                              float scale) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *y_f = utg__stage(&st, at, y, (size_t)B * T * H * hd, UTG__STAGE_OUT);
    float *q_f = utg__stage(&st, at, q, (size_t)B * T * H * hd, UTG__STAGE_IN);
    float *k_f = utg__stage(&st, at, k, (size_t)B * T * Hkv * hd, UTG__STAGE_IN);
    float *v_f = utg__stage(&st, at, v, (size_t)B * T * Hkv * hd, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_attn_fwd_f32(be, y_f, lse, q_f, k_f, v_f, B, T, H, Hkv, hd, scale);
    utg__stage_end(&st);
}
static void utg__cpu_attn_bwd(utg_backend *be, utg_dtype at, void *dq, void *dk, void *dv, const void *dy,
                              const void *q, const void *k, const void *v, const void *y, const float *lse,
                              int B, int T, int H, int Hkv, int hd, float scale) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dq_f = utg__stage(&st, at, dq, (size_t)B * T * H * hd, UTG__STAGE_OUT);
    float *dk_f = utg__stage(&st, at, dk, (size_t)B * T * Hkv * hd, UTG__STAGE_OUT);
    float *dv_f = utg__stage(&st, at, dv, (size_t)B * T * Hkv * hd, UTG__STAGE_OUT);
    float *dy_f = utg__stage(&st, at, dy, (size_t)B * T * H * hd, UTG__STAGE_IN);
    float *q_f = utg__stage(&st, at, q, (size_t)B * T * H * hd, UTG__STAGE_IN);
    float *k_f = utg__stage(&st, at, k, (size_t)B * T * Hkv * hd, UTG__STAGE_IN);
    float *v_f = utg__stage(&st, at, v, (size_t)B * T * Hkv * hd, UTG__STAGE_IN);
    float *y_f = utg__stage(&st, at, y, (size_t)B * T * H * hd, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_attn_bwd_f32(be, dq_f, dk_f, dv_f, dy_f, q_f, k_f, v_f, y_f, lse, B, T, H, Hkv,
                                          hd, scale);
    utg__stage_end(&st);
}
static void utg__cpu_relu2_fwd(utg_backend *be, utg_dtype at, void *y, const void *x, size_t n, float slope) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *y_f = utg__stage(&st, at, y, n, UTG__STAGE_OUT);
    float *x_f = utg__stage(&st, at, x, n, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_relu2_fwd_f32(be, y_f, x_f, n, slope);
    utg__stage_end(&st);
}
static void utg__cpu_relu2_bwd(utg_backend *be, utg_dtype at, void *dx, const void *dy, const void *x,
                               size_t n, float slope) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dx_f = utg__stage(&st, at, dx, n, UTG__STAGE_OUT);
    float *dy_f = utg__stage(&st, at, dy, n, UTG__STAGE_IN);
    float *x_f = utg__stage(&st, at, x, n, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_relu2_bwd_f32(be, dx_f, dy_f, x_f, n, slope);
    utg__stage_end(&st);
}
static void utg__cpu_xsa_fwd(utg_backend *be, utg_dtype at, void *y, const void *x, const void *v, int n_tok,
                             int H, int Hkv, int hd) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *y_f = utg__stage(&st, at, y, (size_t)n_tok * H * hd, UTG__STAGE_OUT);
    float *x_f = utg__stage(&st, at, x, (size_t)n_tok * H * hd, UTG__STAGE_IN);
    float *v_f = utg__stage(&st, at, v, (size_t)n_tok * Hkv * hd, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_xsa_fwd_f32(be, y_f, x_f, v_f, n_tok, H, Hkv, hd);
    utg__stage_end(&st);
}
static void utg__cpu_xsa_bwd(utg_backend *be, utg_dtype at, void *dx, void *dv, const void *dy, const void *x,
                             const void *v, int n_tok, int H, int Hkv, int hd) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dx_f = utg__stage(&st, at, dx, (size_t)n_tok * H * hd, UTG__STAGE_INOUT);
    float *dv_f = utg__stage(&st, at, dv, (size_t)n_tok * Hkv * hd, UTG__STAGE_INOUT);
    float *dy_f = utg__stage(&st, at, dy, (size_t)n_tok * H * hd, UTG__STAGE_IN);
    float *x_f = utg__stage(&st, at, x, (size_t)n_tok * H * hd, UTG__STAGE_IN);
    float *v_f = utg__stage(&st, at, v, (size_t)n_tok * Hkv * hd, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_xsa_bwd_f32(be, dx_f, dv_f, dy_f, x_f, v_f, n_tok, H, Hkv, hd);
    utg__stage_end(&st);
}
static void utg__cpu_lerp_fwd(utg_backend *be, utg_dtype at, void *out, const void *x, const void *z,
                              const float *g, const float *s, int rows, int cols) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *out_f = utg__stage(&st, at, out, (size_t)rows * cols, UTG__STAGE_OUT);
    float *x_f = utg__stage(&st, at, x, (size_t)rows * cols, UTG__STAGE_IN);
    float *z_f = utg__stage(&st, at, z, (size_t)rows * cols, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_lerp_fwd_f32(be, out_f, x_f, z_f, g, s, rows, cols);
    utg__stage_end(&st);
}
static void utg__cpu_lerp_bwd(utg_backend *be, utg_dtype at, void *dx, void *dz, float *dg, float *ds,
                              const void *dout, const void *y, const void *z, const float *g, const float *s,
                              int rows, int cols) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dx_f = utg__stage(&st, at, dx, (size_t)rows * cols, UTG__STAGE_OUT);
    float *dz_f = utg__stage(&st, at, dz, (size_t)rows * cols, UTG__STAGE_INOUT);
    float *dout_f = utg__stage(&st, at, dout, (size_t)rows * cols, UTG__STAGE_IN);
    float *y_f = utg__stage(&st, at, y, (size_t)rows * cols, UTG__STAGE_IN);
    float *z_f = utg__stage(&st, at, z, (size_t)rows * cols, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_lerp_bwd_f32(be, dx_f, dz_f, dg, ds, dout_f, y_f, z_f, g, s, rows, cols);
    utg__stage_end(&st);
}
static void utg__cpu_gate_fwd(utg_backend *be, utg_dtype at, void *y, float *g, const void *yin,
                              const void *x, const float *W, int n_tok, int H, int hd, int x_cols, int win,
                              float scale, float mult) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *y_f = utg__stage(&st, at, y, (size_t)n_tok * H * hd, UTG__STAGE_OUT);
    float *yin_f = utg__stage(&st, at, yin, (size_t)n_tok * H * hd, UTG__STAGE_IN);
    float *x_f = utg__stage(&st, at, x, (size_t)n_tok * x_cols, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_gate_fwd_f32(be, y_f, g, yin_f, x_f, W, n_tok, H, hd, x_cols, win, scale, mult);
    utg__stage_end(&st);
}
static void utg__cpu_gate_bwd(utg_backend *be, utg_dtype at, void *dyin, void *dx, float *dW, const void *dy,
                              const void *yin, const void *x, const float *W, const float *g, int n_tok,
                              int H, int hd, int x_cols, int win, float scale, float mult) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dyin_f = utg__stage(&st, at, dyin, (size_t)n_tok * H * hd, UTG__STAGE_INOUT);
    float *dx_f = utg__stage(&st, at, dx, (size_t)n_tok * x_cols, UTG__STAGE_INOUT);
    float *dy_f = utg__stage(&st, at, dy, (size_t)n_tok * H * hd, UTG__STAGE_IN);
    float *yin_f = utg__stage(&st, at, yin, (size_t)n_tok * H * hd, UTG__STAGE_IN);
    float *x_f = utg__stage(&st, at, x, (size_t)n_tok * x_cols, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_gate_bwd_f32(be, dyin_f, dx_f, dW, dy_f, yin_f, x_f, W, g, n_tok, H, hd, x_cols,
                                          win, scale, mult);
    utg__stage_end(&st);
}
static void utg__cpu_smear_fwd(utg_backend *be, utg_dtype at, void *y, const void *x, const float *w,
                               const float *lam, const int32_t *ids, int n_tok, int seq_len, int d, int win,
                               int bos) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *y_f = utg__stage(&st, at, y, (size_t)n_tok * d, UTG__STAGE_OUT);
    float *x_f = utg__stage(&st, at, x, (size_t)n_tok * d, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_smear_fwd_f32(be, y_f, x_f, w, lam, ids, n_tok, seq_len, d, win, bos);
    utg__stage_end(&st);
}
static void utg__cpu_smear_bwd(utg_backend *be, utg_dtype at, void *dx, float *dw, float *dlam,
                               const void *dy, const void *x, const float *w, const float *lam,
                               const int32_t *ids, int n_tok, int seq_len, int d, int win, int bos) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dx_f = utg__stage(&st, at, dx, (size_t)n_tok * d, UTG__STAGE_INOUT);
    float *dy_f = utg__stage(&st, at, dy, (size_t)n_tok * d, UTG__STAGE_IN);
    float *x_f = utg__stage(&st, at, x, (size_t)n_tok * d, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_smear_bwd_f32(be, dx_f, dw, dlam, dy_f, x_f, w, lam, ids, n_tok, seq_len, d, win,
                                           bos);
    utg__stage_end(&st);
}
static void utg__cpu_mix_fwd(utg_backend *be, utg_dtype at, void *out, const void *x, const float *wx,
                             const void *z, const float *wz, int rows, int cols, int flags) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *out_f = utg__stage(&st, at, out, (size_t)rows * cols, UTG__STAGE_OUT);
    float *x_f = utg__stage(&st, at, x, (size_t)rows * cols, UTG__STAGE_IN);
    float *z_f = utg__stage(&st, at, z, (size_t)rows * cols, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_mix_fwd_f32(be, out_f, x_f, wx, z_f, wz, rows, cols, flags);
    utg__stage_end(&st);
}
static void utg__cpu_mix_bwd(utg_backend *be, utg_dtype at, void *dx, void *dz, float *dwx, float *dwz,
                             const void *dout, const void *x, const float *wx, const void *z, const float *wz,
                             int rows, int cols, int flags) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *dx_f = utg__stage(&st, at, dx, (size_t)rows * cols, UTG__STAGE_INOUT);
    float *dz_f = utg__stage(&st, at, dz, (size_t)rows * cols, UTG__STAGE_INOUT);
    float *dout_f = utg__stage(&st, at, dout, (size_t)rows * cols, UTG__STAGE_IN);
    float *x_f = utg__stage(&st, at, x, (size_t)rows * cols, UTG__STAGE_IN);
    float *z_f = utg__stage(&st, at, z, (size_t)rows * cols, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_mix_bwd_f32(be, dx_f, dz_f, dwx, dwz, dout_f, x_f, wx, z_f, wz, rows, cols,
                                         flags);
    utg__stage_end(&st);
}
static void utg__cpu_mix_rmsnorm_fwd(utg_backend *be, utg_dtype at, void *out, void *y, float *rstd,
                                     const void *x, const float *wx, const void *z, const float *wz, int rows,
                                     int cols, int flags, float eps) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *out_f = utg__stage(&st, at, out, (size_t)rows * cols, UTG__STAGE_OUT);
    float *y_f = utg__stage(&st, at, y, (size_t)rows * cols, UTG__STAGE_OUT);
    float *x_f = utg__stage(&st, at, x, (size_t)rows * cols, UTG__STAGE_IN);
    float *z_f = utg__stage(&st, at, z, (size_t)rows * cols, UTG__STAGE_IN);
    if (!st.failed) utg__cpu_mix_rmsnorm_fwd_f32(be, out_f, y_f, rstd, x_f, wx, z_f, wz, rows, cols, flags,
                                                 eps);
    utg__stage_end(&st);
}
static void utg__cpu_xent_fwd(utg_backend *be, utg_dtype at, void *logits, float *row_loss,
                              const int32_t *targets, int rows, int V, float softcap, float dscale) {
    utg__stager st;
    utg__stage_begin(&st, be);
    float *logits_f = utg__stage(&st, at, logits, (size_t)rows * V, UTG__STAGE_INOUT);
    if (!st.failed) utg__cpu_xent_fwd_f32(be, logits_f, row_loss, targets, rows, V, softcap, dscale);
    utg__stage_end(&st);
}

/* ------------------------------------------------------------------------------------------------
// >>cpu_create
   The backend's life: synchronize (a no-op: every CPU op returns when done), destroy, and create,
   which picks the microkernel set once and fills the op table.
   ------------------------------------------------------------------------------------------------ */
static void utg__cpu_synchronize(utg_backend *be) { (void)be; }

/* destroy: frees the scratch slots, the private state and the table itself, with the allocator
   the backend was created with. */
static void utg__cpu_destroy(utg_backend *be) {
    utg__cpu *c;
    utg_allocator a;
    int i;
    if (!be) return;
    c = utg__cpu_of(be);
    a = c->alloc;
    for (i = 0; i < UTG_BACKEND_MAX_CALLERS; i++) utg__aligned_free(&a, c->scratch[i]);
    utg__free(&a, c);
    utg__free(&a, be);
}

UTGDEF const char *utg_backend_cpu_kernel(const utg_backend *be) {
    return be && be->name && !strcmp(be->name, "cpu") ? utg__cpu_of((utg_backend *)be)->gk->name : NULL;
}

UTGDEF utg_result utg_backend_cpu_create(const utg_allocator *alloc, utg_backend **out) {
    utg_allocator a;
    utg_backend *be;
    utg__cpu *c;
    if (!out) return UTG_ERR_INVALID;
    *out = NULL;
    memset(&a, 0, sizeof a);
    if (alloc) a = *alloc;
    be = (utg_backend *)utg__alloc(&a, sizeof *be);
    c = (utg__cpu *)utg__alloc(&a, sizeof *c);
    if (!be || !c) { utg__free(&a, be); utg__free(&a, c); return UTG_ERR_NOMEM; }
    memset(be, 0, sizeof *be);
    memset(c, 0, sizeof *c);
    c->alloc = a;
    c->gk = utg__gk_pick();
#if defined(UTG__X86_KERNELS)
    c->bf16_hw = c->gk == &utg__gk_avx512 && __builtin_cpu_supports("avx512bf16");
#endif
    be->abi_version = UTG_BACKEND_ABI_VERSION;
    be->struct_size = (uint32_t)sizeof(utg_backend);
    be->name = "cpu";
    be->impl = c;
    be->flags = UTG_BACKEND_CONCURRENT;
    be->storage_dtypes = 1u << UTG_DT_F32 | 1u << UTG_DT_BF16;
    be->auto_activation_dtype = UTG_DT_F32; /* its bf16 storage converts around fp32 kernels */
    be->rank = 0;
    be->world = 1;
    be->buf_alloc = utg__cpu_buf_alloc;
    be->buf_free = utg__cpu_buf_free;
    be->upload = utg__cpu_memcpy;
    be->download = utg__cpu_memcpy;
    be->fill = utg__cpu_fill;
    be->copy = utg__cpu_copy;
    be->matmul = utg__cpu_matmul;
    be->matmul_bf16 = utg__cpu_matmul_bf16;
    be->embed_fwd = utg__cpu_embed_fwd;
    be->embed_bwd = utg__cpu_embed_bwd;
    be->rmsnorm_fwd = utg__cpu_rmsnorm_fwd;
    be->rmsnorm_bwd = utg__cpu_rmsnorm_bwd;
    be->qk_norm_rope_fwd = utg__cpu_qk_norm_rope_fwd;
    be->qk_norm_rope_bwd = utg__cpu_qk_norm_rope_bwd;
    be->attn_fwd = utg__cpu_attn_fwd;
    be->attn_bwd = utg__cpu_attn_bwd;
    be->relu2_fwd = utg__cpu_relu2_fwd;
    be->relu2_bwd = utg__cpu_relu2_bwd;
    be->xsa_fwd = utg__cpu_xsa_fwd;
    be->xsa_bwd = utg__cpu_xsa_bwd;
    be->lerp_fwd = utg__cpu_lerp_fwd;
    be->lerp_bwd = utg__cpu_lerp_bwd;
    be->gate_fwd = utg__cpu_gate_fwd;
    be->gate_bwd = utg__cpu_gate_bwd;
    be->smear_fwd = utg__cpu_smear_fwd;
    be->smear_bwd = utg__cpu_smear_bwd;
    be->mix_fwd = utg__cpu_mix_fwd;
    be->mix_bwd = utg__cpu_mix_bwd;
    be->mix_rmsnorm_fwd = utg__cpu_mix_rmsnorm_fwd;
    be->xent_fwd = utg__cpu_xent_fwd;
    be->axpby = utg__cpu_axpby;
    be->muon_momentum = utg__cpu_muon_momentum;
    be->reduce_f64 = utg__cpu_reduce_f64;
    be->normalize_frob = utg__cpu_normalize_frob;
    be->fake_quant_rows = utg__cpu_fake_quant_rows;
    be->all_reduce = utg__cpu_all_reduce;
    be->broadcast = utg__cpu_broadcast;
    be->all_gather = utg__cpu_all_gather;
    be->row_normalize = utg__cpu_row_normalize;
    be->adam_step = utg__cpu_adam_step;
    be->synchronize = utg__cpu_synchronize;
    be->destroy = utg__cpu_destroy;
    *out = be;
    return UTG_OK;
}

UTGDEF void utg_backend_destroy(utg_backend *be) {
    if (be && be->destroy) be->destroy(be);
}

#endif /* UTGOLF_IMPLEMENTATION_INCLUDED */
#endif /* UTGOLF_IMPLEMENTATION */

/*
   LICENCE: MIT. Copyright (c) 2026 the utgolf authors.
   Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
   associated documentation files (the "Software"), to deal in the Software without restriction,
   including without limitation the rights to use, copy, modify, merge, publish, distribute,
   sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
   furnished to do so, subject to the following conditions: The above copyright notice and this
   permission notice shall be included in all copies or substantial portions of the Software.
   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.
*/
