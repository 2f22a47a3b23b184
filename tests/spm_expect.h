/* The byte-table row Parameter Golf's build_sentencepiece_luts gives a SentencePiece piece: byte
   pieces count one byte, normal and user-defined ones their UTF-8 bytes less a leading U+2581 (and
   have_leading_space), every other type is a boundary with no bytes. An independent oracle for the
   loader's tables, shared by test_tokenizer.c and fuzz_spm.c. */
#ifndef UTG_TEST_SPM_EXPECT_H
#define UTG_TEST_SPM_EXPECT_H
#include <string.h>

static void spm_expected_row(const char *piece, int type, int *boundary, int *lead, int *base) {
    *boundary = 1;
    *lead = *base = 0;
    if (type == UTG_PIECE_BYTE) {
        *boundary = 0;
        *base = 1;
    } else if (type == UTG_PIECE_NORMAL || type == UTG_PIECE_USER_DEFINED) {
        *boundary = 0;
        *lead = strncmp(piece, "\xe2\x96\x81", 3) == 0;
        *base = (int)strlen(piece) - 3 * *lead;
    }
}

#endif
