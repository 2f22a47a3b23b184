#!/bin/sh
# Regenerates every file of data/austen from the Debian package r-cran-janeaustenr:
#   train.txt, val.txt                          the novels, split before Persuasion
#   sp1024.model, sp1024.vocab                  SentencePiece BPE, Parameter Golf's flags
#   austen_{train,val}_000000.bin               sp1024 token shards
#   bytes/austen_{train,val}_000000.bin         byte260 token shards
# Run from anywhere: sh data/austen/make_data.sh. Needs /usr/bin/python3, cc, spm_train and
# spm_encode (apt-get install sentencepiece), and either the installed package
# (apt-get install r-cran-janeaustenr) or apt-get download to fetch the .deb (no R needed).
# Environment: DEB=path/to/r-cran-janeaustenr_1.0.0-1_all.deb to use a given .deb; CC, PYTHON.
# Identical runs give identical bytes (README.md lists the sha256 of every output).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
D="$ROOT/data/austen"
PY=${PYTHON:-/usr/bin/python3}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"

# 1. The lazy-load database holding the novels: from DEB, the installed package, or a fresh .deb.
RDB_PATH=usr/lib/R/site-library/janeaustenr/data/Rdata.rdb
if [ -z "${DEB:-}" ] && [ -f "/$RDB_PATH" ]; then
    RDB="/$RDB_PATH"
else
    if [ -z "${DEB:-}" ]; then
        apt-get download r-cran-janeaustenr >/dev/null
        DEB=$(ls "$T"/r-cran-janeaustenr_*.deb)
    fi
    dpkg-deb -x "$DEB" "$T/deb"
    RDB="$T/deb/$RDB_PATH"
fi
echo "source: $RDB"

# 2. Extract, check, split at the line "Persuasion" (line 65,095).
"$PY" "$D/extract_austen.py" "$RDB" > austen.txt
echo "f2516f2139e3cecf49657122fed58ac46313f1fdff32a26fc66789293e92d573  austen.txt" | sha256sum -c --quiet
[ "$(sed -n 65095p austen.txt)" = "Persuasion" ] || { echo "make_data.sh: line 65095 is not Persuasion" >&2; exit 1; }
head -n 65094 austen.txt > "$D/train.txt"
tail -n +65095 austen.txt > "$D/val.txt"

# 3. Paragraph documents, one per line: runs of non-blank lines, each line stripped of ASCII
#    whitespace, joined with one space (the same rule as utg-shards bytes).
"$PY" - "$D/train.txt" "$D/val.txt" train_paragraphs.txt val_paragraphs.txt <<'EOF'
import sys
def paragraphs(text):
    docs, cur = [], []
    for line in text.split(b"\n"):
        line = line.strip(b" \t\r\v\f")
        if line:
            cur.append(line)
        elif cur:
            docs.append(b" ".join(cur)); cur = []
    if cur:
        docs.append(b" ".join(cur))
    return docs
for src, dst in ((sys.argv[1], sys.argv[3]), (sys.argv[2], sys.argv[4])):
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(b"".join(d + b"\n" for d in paragraphs(f.read())))
EOF

# 4. The tokenizer. Relative paths: the .model records --input and --model_prefix.
spm_train --input=train_paragraphs.txt --model_prefix=sp1024 --model_type=bpe --vocab_size=1024 \
    --character_coverage=0.999 --byte_fallback=true --split_digits=true \
    --normalization_rule_name=nmt_nfkc --add_dummy_prefix=false \
    --pad_id=0 --bos_id=1 --eos_id=2 --unk_id=3 --hard_vocab_limit=false --num_threads=1 \
    2>spm_train.log || { cat spm_train.log >&2; exit 1; }
grep -E 'Skipped [0-9]+ too long' spm_train.log || true  # Austen: 4 paragraphs over 4192 bytes
cp sp1024.model sp1024.vocab "$D/"

# 5. Shards: sp1024 ids through utg-shards ids, raw bytes through utg-shards bytes.
${CC:-cc} -std=c99 -O2 -Wall -Wextra -Werror -fopenmp -o utg-shards "$ROOT/tools/utg-shards.c" -lm
mkdir -p "$D/bytes"
for split in train val; do
    spm_encode --model="$D/sp1024.model" --output_format=id --extra_options=bos \
        < ${split}_paragraphs.txt > ${split}_ids.txt
    ./utg-shards ids --in ${split}_ids.txt --out "$D/austen_$split" --vocab 1024
    ./utg-shards bytes --in "$D/$split.txt" --out "$D/bytes/austen_$split"
done

# 6. Cross-checks: the byte shards hold exactly the paragraph documents; the sp1024 shards hold
#    exactly spm_encode's ids; bytes counted for bits-per-byte.
"$PY" - "$D" <<'EOF'
import struct, sys
import sentencepiece as spm
d = sys.argv[1]
def shard(path):
    b = open(path, "rb").read()
    magic, version, n = struct.unpack("<3i", b[:12])
    assert magic == 20240520 and version == 1 and len(b) == 1024 + 2 * n, path
    return list(struct.unpack("<%dH" % n, b[1024:]))
sp = spm.SentencePieceProcessor(model_file=d + "/sp1024.model")
for split in ("train", "val"):
    docs = open(split + "_paragraphs.txt", "rb").read().split(b"\n")[:-1]
    byte_ids = shard("%s/bytes/austen_%s_000000.bin" % (d, split))
    assert byte_ids == [t for doc in docs for t in [1] + [c + 4 for c in doc]], split
    ids = [int(t) for line in open(split + "_ids.txt") for t in line.split()]
    sp_ids = shard("%s/austen_%s_000000.bin" % (d, split))
    assert sp_ids == ids, split
    docs_sp = [[]]
    for t in sp_ids[1:]:
        if t == 1: docs_sp.append([])
        else: docs_sp[-1].append(t)
    decoded = sum(len(sp.decode(x).encode("utf-8")) for x in docs_sp)
    raw = sum(len(x) for x in docs)
    print("%-5s %5d docs, %8d paragraph bytes, %8d nmt_nfkc bytes; byte260 %8d tokens (%.4f B/tok); "
          "sp1024 %7d tokens (%.4f B/tok)" % (split, len(docs), raw, decoded, len(byte_ids),
          raw / len(byte_ids), len(sp_ids), decoded / len(sp_ids)))
print("standalone U+2581 piece:", sp.piece_to_id("\u2581") != sp.unk_id())
EOF

cd "$ROOT"
sha256sum data/austen/train.txt data/austen/val.txt data/austen/sp1024.model data/austen/sp1024.vocab \
    data/austen/austen_train_000000.bin data/austen/austen_val_000000.bin \
    data/austen/bytes/austen_train_000000.bin data/austen/bytes/austen_val_000000.bin
