#!/bin/sh
# utg-shards end to end: exact byte260 ids, an ids-file round trip, shard splitting, bad input
# refused with the right exit status and a message and no output file, and the committed
# data/austen shards: valid headers, ids below the vocabulary, byte shards reproducible.
# usage: sh tests/test_shards_tool.sh BUILD_DIR   (the binary is BUILD_DIR/utg-shards)
B=${1:-build}
U="$B/utg-shards"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
A="$ROOT/data/austen"
. "$(dirname "$0")/lib.sh"

# The ids of a shard, one per line, read as little-endian uint16 whatever the host.
ids_of() { od -An -v -tu1 -j 1024 "$1" | awk '{ for (i = 1; i < NF; i += 2) print $i + 256 * $(i + 1) }'; }
# "magic version count" from a shard header (little-endian int32).
header_of() { od -An -v -tu1 -N 12 "$1" | awk '{ for (i = 1; i <= NF; i += 4) printf "%s%d", (i > 1 ? " " : ""), $i + 256 * ($(i + 1) + 256 * ($(i + 2) + 256 * $(i + 3))); print "" }'; }
# True when a shard's header is magic 20240520, version 1, and its count matches the file size.
header_ok() {
    # shellcheck disable=SC2046 # the three header fields become $2 $3 $4
    set -- "$1" $(header_of "$1") "$(wc -c < "$1")"
    [ "$2" -eq 20240520 ] && [ "$3" -eq 1 ] && [ "$5" -eq $((1024 + 2 * $4)) ]
}
# Expected byte260 ids of one document given as a string: BOS, then each byte + 4.
doc_ids() { echo 1; printf '%s' "$1" | od -An -v -tu1 | awk '{ for (i = 1; i <= NF; i++) print $i + 4 }'; }
no_output() { for f in "$T"/out*; do [ -e "$f" ] && return 1; done; return 0; }

check "$U is built" [ -x "$U" ]
check "--help exits 0 and describes both modes" sh -c "'$U' --help | grep -q byte260 && '$U' --help | grep -q spm_encode"

# bytes mode: lines stripped, joined with one space, blank lines (even of spaces) end a document,
# every byte value kept (here 0x00, 0x80 and 0xff inside a line)
printf '  Hi  there \nyou\n \t \n\n\tB!\r\nx\000\200\377y\n' > "$T/a.txt"
"$U" bytes --in "$T/a.txt" --out "$T/a" > "$T/log" 2>&1
{ doc_ids 'Hi  there you'; doc_ids 'B! x'; echo 4; echo 132; echo 259; doc_ids y | sed 1d; } > "$T/a.want"
ids_of "$T/a_000000.bin" > "$T/a.got"
check "bytes mode: exact byte260 ids of paragraph documents" cmp -s "$T/a.want" "$T/a.got"
check "bytes mode: header bytes" [ "$(od -An -v -tu1 -N 16 "$T/a_000000.bin" | tr -s ' ')" = ' 136 216 52 1 1 0 0 0 23 0 0 0 0 0 0 0' ]
check "bytes mode: one-line summary" grep -q '^utg-shards: 2 documents, 23 tokens, 1 shard' "$T/log"

# ids mode: blank lines skipped, BOS prepended where missing, CRLF and tabs accepted
printf '1 5 7\n\n9 8\n  1\t3 1 2  \r\n1023\n' > "$T/i.txt"
"$U" ids --in "$T/i.txt" --out "$T/i" --vocab 1024 > "$T/log" 2>&1
check "ids mode: round trip with BOS prepended where missing" [ "$(ids_of "$T/i_000000.bin" | tr '\n' ' ')" = '1 5 7 1 9 8 1 3 1 2 1 1023 ' ]
check "ids mode: one-line summary" grep -q '^utg-shards: 4 documents, 12 tokens, 1 shard' "$T/log"
printf '65535 0\n' > "$T/k.txt"
"$U" ids --in "$T/k.txt" --out "$T/k" > /dev/null 2>&1
check "ids mode: default vocabulary 65536 accepts 65535" [ "$(ids_of "$T/k_000000.bin" | tr '\n' ' ')" = '1 65535 0 ' ]

# shard splitting: 23 tokens in shards of 7 = 7 + 7 + 7 + 2, concatenation unchanged, no fifth shard
"$U" bytes --in "$T/a.txt" --out "$T/s" --shard-tokens 7 > "$T/log" 2>&1
for k in 0 1 2 3; do ids_of "$T/s_00000$k.bin"; done > "$T/s.got"
sizes=$(for f in "$T"/s_*.bin; do header_ok "$f" && header_of "$f" | cut -d' ' -f3; done | tr '\n' ' ')
check "--shard-tokens 7: four valid shards of 7, 7, 7 and 2 tokens" [ "$sizes" = '7 7 7 2 ' ]
check "--shard-tokens 7: summary counts 4 shards" grep -q ' 23 tokens, 4 shards' "$T/log"
check "--shard-tokens 7: the shards concatenate to the single shard" cmp -s "$T/a.got" "$T/s.got"
"$U" bytes --in "$T/a.txt" --out "$T/s" > "$T/log" 2>&1
check "fewer shards than before: warns about the stale one" grep -q "s_000001.bin is left over" "$T/log"

# bad input: the exit status, a message naming the file (and line), and no output file
bad() { # name, expected status, expected message (grep -E), then the arguments
    name=$1 want=$2 msg=$3
    shift 3
    "$U" "$@" > "$T/log" 2>&1
    st=$?
    if [ $st -eq "$want" ] && grep -Eq -e "$msg" "$T/log" && no_output; then ok "$name"; else no "$name (status $st)"; fi
}
printf '1 5 7\n1 2 1024\n' > "$T/big.txt"
bad "id >= vocab: exit 1, file and line named" 1 'big.txt:2: token id 1024 is not below the vocabulary size 1024' \
    ids --in "$T/big.txt" --out "$T/out" --vocab 1024
printf '1 2\n1 99999999999999999999999999999999\n' > "$T/huge.txt"
bad "huge id: exit 1, no overflow" 1 'huge.txt:2: token id 9+\.\.\. is not below' ids --in "$T/huge.txt" --out "$T/out"
printf '1 2\n\n1 2 3x 4\n' > "$T/nan.txt"
bad "non-numeric token: exit 1, file and line named" 1 "nan.txt:3: '3x' is not a decimal token id" \
    ids --in "$T/nan.txt" --out "$T/out"
printf '1 -2\n' > "$T/neg.txt"
bad "negative id: exit 1" 1 "neg.txt:1: '-2' is not a decimal" ids --in "$T/neg.txt" --out "$T/out"
bad "missing file: exit 1, file named" 1 "cannot open '$T/nope.txt'" bytes --in "$T/nope.txt" --out "$T/out"
: > "$T/empty.txt"
bad "empty file: exit 1" 1 'empty.txt: no documents' ids --in "$T/empty.txt" --out "$T/out"
printf '\n  \n\t\n' > "$T/blank.txt"
bad "blank file: exit 1" 1 'blank.txt: no documents' bytes --in "$T/blank.txt" --out "$T/out"
bad "no arguments: exit 2 with usage" 2 '^usage: utg-shards'
bad "unknown mode: exit 2" 2 'unknown mode' words --in "$T/a.txt" --out "$T/out"
bad "no --out: exit 2" 2 '--out is required' bytes --in "$T/a.txt"
bad "--shard-tokens 0: exit 2" 2 'shard-tokens wants' bytes --in "$T/a.txt" --out "$T/out" --shard-tokens 0
bad "--vocab 65537: exit 2" 2 'vocab wants 2\.\.65536' ids --in "$T/i.txt" --out "$T/out" --vocab 65537
bad "unwritable output directory: exit 1" 1 'cannot create' bytes --in "$T/a.txt" --out "$T/out/none/x"

# the committed data
for f in austen_train_000000.bin austen_val_000000.bin; do
    check "data/austen/$f: magic 20240520, version 1, count matches size" header_ok "$A/$f"
done
max_high_byte() { od -An -v -tu1 -j 1024 "$1" | awk 'BEGIN { m = 0 } { for (i = 2; i <= NF; i += 2) if ($i > m) m = $i } END { print m }'; }
for s in train val; do
    f="$A/austen_${s}_000000.bin"
    check "data/austen sp1024 $s shard: ids below 1024" [ "$(max_high_byte "$f")" -lt 4 ]
    check "data/austen sp1024 $s shard: BOS first" [ "$(od -An -tu1 -j 1024 -N 2 "$f" | tr -s ' ')" = ' 1 0' ]
    "$U" bytes --in "$A/$s.txt" --out "$T/b$s" > /dev/null 2>&1
    check "data/austen byte $s shard: valid header" header_ok "$T/b${s}_000000.bin"
    # independent count: paragraphs (runs of non-blank lines, each line stripped, joined by one
    # space), one BOS plus one token per byte each
    want=$(python3 -c '
import sys
n, cur = 0, []
for line in open(sys.argv[1], "rb").read().split(b"\n") + [b""]:
    line = line.strip(b" \t\r\v\f")
    if line: cur.append(line)
    elif cur: n += len(b" ".join(cur)) + 1; cur = []
print(n)' "$A/$s.txt")
    have=$(( ($(wc -c < "$T/b${s}_000000.bin") - 1024) / 2 ))
    check "data/austen byte $s shard: $have tokens = paragraph bytes + BOS per paragraph ($want)" [ "$have" -eq "$want" ]
done

# a write that fails part-way (a full disk, made by the LD_PRELOAD shim of tests/iofault.c at the
# second shard's write) leaves the shards of an earlier run as they were, and nothing staged
if [ -f "$B/libiofault.so" ]; then
    mkdir -p "$T/fd"
    awk 'BEGIN { for (i = 0; i < 300; i++) printf "1 %d %d %d\n", i % 200 + 2, i % 7 + 3, i % 11 + 4 }' > "$T/ids_old.txt"
    awk 'BEGIN { for (i = 0; i < 300; i++) printf "1 %d %d\n", i % 100 + 9, i % 13 + 5 }' > "$T/ids_new.txt"
    "$U" ids --in "$T/ids_old.txt" --out "$T/fd/s" --shard-tokens 400 > /dev/null 2>&1
    mkdir -p "$T/fd_before"
    cp "$T"/fd/s_*.bin "$T/fd_before/"
    FD=$(cd "$T/fd" && pwd -P)
    # (an ASan build's runtime must come first among the libraries, which LD_PRELOAD changes)
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        IOFAULT_DIR=$FD IOFAULT_AT=5 IOFAULT_MODE=fail LD_PRELOAD="$(cd "$B" && pwd)/libiofault.so" \
            "$U" ids --in "$T/ids_new.txt" --out "$T/fd/s" --shard-tokens 400 > "$T/fd.out" 2> "$T/fd.err"
    st=$?
    same_shards() { for f in "$T"/fd_before/s_*.bin; do cmp -s "$f" "$T/fd/$(basename "$f")" || return 1; done; }
    check "a write failing at the second shard: exit 1 with a message" sh -c "[ $st -eq 1 ] && grep -q 'no shard was replaced' '$T/fd.err'"
    check "... the earlier run's $(ls "$T/fd_before" | wc -l) shards are byte for byte as they were" same_shards
    check "... and nothing staged or temporary is left" sh -c "! ls '$T/fd' | grep -q -e staged -e utgtmp"
else
    no "$B/libiofault.so is built (the fault-injection shim)"
fi

summary
