/* libFuzzer target over the token shard header, utg_shard_parse (make fuzz; clang
   -fsanitize=fuzzer,address,undefined). tests/fuzz_replay.c builds this file again with the normal
   compiler (UTG_STATIC, UTG_FUZZ_REPLAY) to replay tests/corpus/shard/.

   A failed parse must carry a message and leave the outputs alone. A successful one must agree with
   the format (exact size, tokens right after the 1024-byte header); every token is read with
   utg_shard_token and compared with the little-endian bytes, and utg_shard_write of those tokens
   must give the same magic, version, count and payload. Any broken invariant aborts, so libFuzzer
   reports it as a crash. */
#define UTGOLF_IMPLEMENTATION
#include "../utgolf.h"
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_NAME "fuzz_shard"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint8_t sentinel = 0;
    const uint8_t *tokens = &sentinel;
    size_t n = (size_t)-1, i;
    uint16_t *ids;
    uint8_t *again;
    utg_msg msg;
    utg_result r;
    memset(&msg, 0, sizeof msg);
    r = utg_shard_parse(data, size, &tokens, &n, &msg);
    if (r != UTG_OK) {
        FZ_REQUIRE(r == UTG_ERR_FORMAT, "result %d", (int)r);
        FZ_REQUIRE(msg.text[0] != 0, "result %d without a message", (int)r);
        FZ_REQUIRE(memchr(msg.text, 0, sizeof msg.text) != NULL, "message not terminated");
        FZ_REQUIRE(tokens == &sentinel && n == (size_t)-1, "a failed parse wrote its outputs");
        return 0;
    }
    FZ_REQUIRE(size >= UTG_SHARD_HEADER_BYTES, "accepted %zu bytes", size);
    FZ_REQUIRE(tokens == data + UTG_SHARD_HEADER_BYTES, "tokens do not start after the header");
    FZ_REQUIRE(n <= (size_t)INT32_MAX && UTG_SHARD_HEADER_BYTES + 2 * n == size, "%zu tokens in %zu bytes", n, size);
    FZ_REQUIRE(utg__rd_u32le(data) == UTG_SHARD_MAGIC && utg__rd_u32le(data + 4) == UTG_SHARD_VERSION &&
                   utg__rd_u32le(data + 8) == (uint32_t)n,
               "header fields");
    ids = (uint16_t *)malloc(2 * n + 2);
    again = (uint8_t *)malloc(size);
    if (!ids || !again) { free(ids); free(again); return 0; }
    for (i = 0; i < n; i++) {
        ids[i] = utg_shard_token(tokens, i);
        FZ_REQUIRE(ids[i] == (uint16_t)(data[UTG_SHARD_HEADER_BYTES + 2 * i] | (data[UTG_SHARD_HEADER_BYTES + 2 * i + 1] << 8)),
                   "token %zu", i);
    }
    FZ_REQUIRE(utg_shard_write(ids, n, again, size) == UTG_OK, "rewrite of %zu tokens", n);
    FZ_REQUIRE(memcmp(again, data, 12) == 0, "rewritten header differs");
    FZ_REQUIRE(memcmp(again + UTG_SHARD_HEADER_BYTES, tokens, 2 * n) == 0, "rewritten tokens differ");
    FZ_REQUIRE(utg_shard_write(ids, n, again, size - 1) == UTG_ERR_INVALID, "write into a short buffer");
    memset(&msg, 0, sizeof msg);
    FZ_REQUIRE(utg_shard_parse(again, size, &tokens, &n, &msg) == UTG_OK, "rewrite does not parse: %s", msg.text);
    free(ids);
    free(again);
    return 0;
}

#ifdef UTG_FUZZ_REPLAY
/* Seeds: valid shards from utg_shard_write (empty, one token, a few hundred with the extreme ids) and
   one whose reserved header words are not zero (the reader ignores them). */
int utg_fuzz_shard_seeds(const char *dir);
int utg_fuzz_shard_seeds(const char *dir) {
    static const size_t counts[] = {0, 1, 7, 300};
    char path[1024];
    utg_msg msg;
    size_t k, i;
    for (k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        size_t n = counts[k], bytes = UTG_SHARD_HEADER_BYTES + 2 * n;
        uint16_t ids[300];
        uint8_t *b = (uint8_t *)malloc(bytes);
        if (!b) return 1;
        for (i = 0; i < n; i++) ids[i] = i == 0 ? 0xFFFF : (uint16_t)(i * 2654435761u >> 20);
        if (utg_shard_write(ids, n, b, bytes) != UTG_OK) { free(b); return 1; }
        snprintf(path, sizeof path, "%s/seed-%zu.bin", dir, n);
        if (utg_write_file(path, b, bytes, &msg) != UTG_OK) { fprintf(stderr, "%s\n", msg.text); free(b); return 1; }
        if (n == 7) {
            for (i = 12; i < UTG_SHARD_HEADER_BYTES; i++) b[i] = (uint8_t)(i * 31);
            snprintf(path, sizeof path, "%s/seed-7-reserved.bin", dir);
            if (utg_write_file(path, b, bytes, &msg) != UTG_OK) { fprintf(stderr, "%s\n", msg.text); free(b); return 1; }
        }
        free(b);
    }
    return 0;
}
#endif
