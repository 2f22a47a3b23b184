#!/bin/sh
# utg-inspect end to end on artifacts from mk_artifact (stored and brotli): the default view, --json
# (valid, every tensor listed), --verify (passes good files; names the failing stage with exit 1 for a
# truncated file, a flipped byte, and payloads patched with a fixed-up CRC so that each later stage
# fails), --budget (groups add up to the file, the SVG parses), --strip (smaller, verifies, no PROV,
# same META and tensors), escaping of control characters, usage errors, and no crash on mutants.
# usage: sh tests/test_inspect.sh BUILD_DIR   (or BUILD=dir; needs BUILD_DIR/utg-inspect, mk_artifact)
B=${1:-${BUILD:-build}}
U="$B/utg-inspect"
MK="$B/mk_artifact"
PY=${PYTHON:-python3}
. "$(dirname "$0")/lib.sh"

# Rewrite a stored artifact's payload and fix its CRC: patch IN OUT WHAT [ARGS] [-- OUT WHAT [ARGS]]...
# (several jobs per call: python3 takes most of a second to start here). WHAT:
#   i32 KEY V | u32 KEY V    the META scalar KEY set to V
#   kvtype KEY T             the type byte of META KEY
#   dtype NAME T | dim0 NAME V   a TENS field of tensor NAME
#   symbol NAME V            the first Q symbol of NAME (int8)
#   str KEY BYTES            the META string KEY overwritten in place (Python bytes literal, same length)
#   name NAME BYTES          the tensor name overwritten in place (same length)
patch() {
    "$PY" - "$@" <<'EOF'
import ast, struct, sys, zlib
P = 20  # the payload starts after the envelope
def section(b, tag):
    for i in range(struct.unpack_from("<H", b, P + 2)[0]):
        e = P + 16 + 16 * i
        if b[e:e + 4] == tag.encode():
            off, size = struct.unpack_from("<II", b, e + 8)
            return P + off, size
def find(b, tag, s):
    off, size = section(b, tag)
    i = b.find(s.encode(), off, off + size)
    assert i >= 0, s
    return i
def after_name(b, name):  # then dtype, qbits, scale kind, ndim, group u16, 2 reserved, dims, planes
    return find(b, "TENS", name) + len(name)
def job(b, what, args):
    if what in ("i32", "u32"):
        struct.pack_into("<i" if what == "i32" else "<I", b, find(b, "META", args[0]) + len(args[0]) + 1, int(args[1]))
    elif what == "kvtype":
        b[find(b, "META", args[0]) + len(args[0])] = int(args[1])
    elif what == "dtype":
        b[after_name(b, args[0])] = int(args[1])
    elif what == "dim0":
        struct.pack_into("<I", b, after_name(b, args[0]) + 8, int(args[1]))
    elif what == "symbol":
        t = after_name(b, args[0])
        vo = struct.unpack_from("<I", b, t + 8 + 4 * b[t + 3])[0]
        struct.pack_into("<b", b, section(b, "DATA")[0] + vo, int(args[1]))
    elif what in ("str", "name"):
        new = ast.literal_eval(args[1])
        p = find(b, "META", args[0]) + len(args[0]) + 5 if what == "str" else find(b, "TENS", args[0])
        b[p:p + len(new)] = new
    struct.pack_into("<I", b, 16, zlib.crc32(bytes(b[P:])))
original = open(sys.argv[1], "rb").read()
assert original[:4] == b"UTGA" and original[5] == 0, "patch needs a stored artifact"
argv = sys.argv[2:] + ["--"]
while argv:
    n = argv.index("--")
    b = bytearray(original)
    job(b, argv[1], argv[2:n])
    open(argv[0], "wb").write(b)
    argv = argv[n + 1:]
EOF
}
# Runs the tool into $T/out and $T/err; sets st to the exit status.
run() { "$U" "$@" > "$T/out" 2> "$T/err"; st=$?; }
# JSON checks: pyjson FILE 'python expression over d'
pyjson() { "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)' "$1" "$2"; }
no_escape_byte() { ! grep -q "$(printf '\033')" "$@"; }
has() { grep -Fq -e "$2" "$1"; }   # FILE, fixed string
hasre() { grep -Eq -e "$2" "$1"; } # FILE, extended regex
status_is() { [ "$st" -eq "$1" ]; }

check "$U is built" [ -x "$U" ]
check "$MK is built" [ -x "$MK" ]
"$MK" "$T/b.utga" > /dev/null && "$MK" "$T/s.utga" COMPRESSOR=stored > /dev/null &&
    "$MK" "$T/v.utga" MATRIX_BITS=6 TIE_EMBEDDINGS=0 NUM_LOOPS=1 LOOP_START=0 LOOP_END=1 > /dev/null &&
    "$MK" "$T/vs.utga" COMPRESSOR=stored MATRIX_BITS=6 TIE_EMBEDDINGS=0 > /dev/null
check "mk_artifact writes brotli and stored artifacts" [ -s "$T/b.utga" ] && [ -s "$T/vs.utga" ]
size_of() { wc -c < "$1" | tr -d ' '; }

# --help and usage errors
run --help
check "--help exits 0 and names every mode" sh -c "[ $st -eq 0 ] && grep -q -- --verify '$T/out' && grep -q -- --budget '$T/out' && grep -q -- --strip '$T/out'"
usage_case() { # name, message (grep -E), arguments
    name=$1 msg=$2
    shift 2
    run "$@"
    if [ $st -eq 2 ] && grep -Eq -e "$msg" "$T/err"; then ok "$name"; else no "$name (status $st)"; fi
}
usage_case "no arguments: exit 2 with usage" '^usage: utg-inspect'
usage_case "unknown option: exit 2" 'unknown option: --frobnicate' "$T/b.utga" --frobnicate
usage_case "two files: exit 2" 'more than one artifact' "$T/b.utga" "$T/s.utga"
usage_case "two modes: exit 2" 'give one of them' "$T/b.utga" --verify --budget
usage_case "--svg without --budget: exit 2" 'go with --budget' "$T/b.utga" --svg "$T/x.svg"
usage_case "--strip without a value: exit 2" 'missing value after: --strip' "$T/b.utga" --strip
usage_case "--code-bytes not a number: exit 2" 'code-bytes wants a byte count' "$T/b.utga" --budget --code-bytes 12k
run "$T/missing.utga"
check "missing file: exit 1, file named" sh -c "[ $st -eq 1 ] && grep -q 'cannot open.*missing.utga' '$T/err'"
: > "$T/empty.utga"
run "$T/empty.utga"
check "empty file: exit 1 with a message" sh -c "[ $st -eq 1 ] && grep -q 'has 0 bytes, shorter than its magic \"UTGA\"' '$T/err'"
printf 'not an artifact, just text that is long enough\n' > "$T/text.utga"
run "$T/text.utga" --json
check "not an artifact: exit 1, magic named, nothing on stdout" sh -c "[ $st -eq 1 ] && grep -q 'not a UTGA file' '$T/err' && [ ! -s '$T/out' ]"

# the default view, on both codecs
for f in b s; do
    run "$T/$f.utga"
    check "$f.utga default view: exit 0" [ $st -eq 0 ]
    check "$f.utga default view: envelope summary" sh -c "grep -q '^format    UTGA 1.0' '$T/out' && grep -q '^crc32     [0-9a-f]\{8\} ok' '$T/out'"
    check "$f.utga default view: META table with typed values" sh -c "grep -Eq '^  utg.arch +str +\"utgolf.ut\"$' '$T/out' && grep -Eq '^  utg.plan.layers +u32\[2\] +\[0, 1\]$' '$T/out' && grep -Eq '^  utg.config.model_dim +i32 +64$' '$T/out'"
    check "$f.utga default view: tensor table row" grep -Eq '^  tok_emb.weight +q +8 +row f16 +96x64 +6,144 +192 +[0-9]\.[0-9]{3}$' "$T/out"
    check "$f.utga default view: totals" has "$T/out" '  parameters   64,068 in 22 tensors'
    check "$f.utga default view: sections, PROV shown escaped" hasre "$T/out" '^  PROV  ancillary +[0-9,]+ +27  "tool=mk_artifact\\nseed=1234\\n"$'
done
run "$T/b.utga"
grep -q '^codec     brotli' "$T/out" && run "$T/s.utga" && grep -q '^codec     stored' "$T/out"
check "the codec is named (brotli, stored)" [ $? -eq 0 ]
run "$T/v.utga"
check "MATRIX_BITS=6, untied head: q6 tensors and lm_head listed" sh -c "grep -Eq '^  blocks.0.mlp.fc.weight +q +6 ' '$T/out' && grep -Eq '^  lm_head.weight +q +8 ' '$T/out' && grep -q '^  q6 ' '$T/out'"

# --json: valid, every tensor, the same META
for f in b s v; do
    run "$T/$f.utga" --json
    cp "$T/out" "$T/$f.json"
    check "$f.utga --json: exit 0, valid JSON (python3 -m json.tool)" sh -c "[ $st -eq 0 ] && '$PY' -m json.tool '$T/$f.json' > /dev/null"
    run "$T/$f.utga"
    want=$(sed -n '/^TENS/,/^$/p' "$T/out" | sed '1,2d;/^$/d' | awk '{ print $1 }' | tr '\n' ' ')
    check "$f.utga --json lists every tensor of the table, in order" pyjson "$T/$f.json" "' '.join(t['name'] for t in d['tensors']) + ' ' == '$want'"
done
check "--json: envelope, types and values" pyjson "$T/b.json" \
    "d['envelope']['codec'] == 'brotli' and d['envelope']['crc_ok'] and d['envelope']['file_bytes'] == $(size_of "$T/b.utga") and
     {m['key']: m['value'] for m in d['meta']}['utg.plan.layers'] == [0, 1] and {m['key']: m['type'] for m in d['meta']}['utg.model.params'] == 'u64' and
     d['totals']['parameters'] == 64068 and [s['tag'] for s in d['sections']] == ['META', 'TENS', 'DATA', 'PROV']"
check "--json: Q tensors carry entropy, floats null" pyjson "$T/b.json" \
    "all((t['entropy_bits'] is None) == (t['dtype'] != 'q') for t in d['tensors']) and all(0 <= (t['entropy_bits'] or 0) <= t['bits'] for t in d['tensors'])"
check "--json: the same META and tensors for stored and brotli" "$PY" -c "
import json, sys
a, b = (json.load(open(sys.argv[i])) for i in (1, 2))
sys.exit(0 if a['meta'] == b['meta'] and a['tensors'] == b['tensors'] else 1)" "$T/b.json" "$T/s.json"

# --verify on good files
for f in b s v; do
    run "$T/$f.utga" --verify
    check "$f.utga --verify: exit 0, all 8 stages ok" sh -c "[ $st -eq 0 ] && [ \$(grep -c '^  ok ' '$T/out') -eq 8 ] && grep -q '^all 8 stages passed' '$T/out'"
done
run "$T/v.utga" --verify --json
check "--verify --json: valid, ok, 8 passed stages" pyjson "$T/out" "d['ok'] and [s['status'] for s in d['stages']] == ['passed'] * 8"

# --verify on bad files: exit 1, the failing stage, the message on stderr
vfail() { # name, file, stage, message (grep -E)
    run "$2" --verify
    if [ $st -eq 1 ] && grep -q "^  FAIL  $3 " "$T/out" && grep -q "^FAILED at $3\$" "$T/out" && grep -Eq -e "$4" "$T/err"; then ok "$1"
    else no "$1 (status $st)"; fi
}
head -c 5000 "$T/b.utga" > "$T/trunc.utga"
vfail "truncated brotli file fails at envelope" "$T/trunc.utga" envelope 'envelope: .*truncated'
head -c 30000 "$T/s.utga" > "$T/trunc_s.utga"
vfail "truncated stored file fails at envelope" "$T/trunc_s.utga" envelope 'truncated or padded'
flip() { # IN OUT OFFSET: the byte at OFFSET inverted
    cp "$1" "$2"
    # shellcheck disable=SC2059 # the format is the octal escape of the new byte
    printf "\\$(printf '%03o' $((255 - $(od -An -tu1 -j "$3" -N 1 "$1"))))" | dd of="$2" bs=1 seek="$3" conv=notrunc 2> /dev/null
}
flip "$T/s.utga" "$T/flip_s.utga" 3000
vfail "stored file with a flipped byte fails at decode + CRC" "$T/flip_s.utga" 'decode + CRC' 'CRC-32 mismatch'
flip "$T/b.utga" "$T/flip_b.utga" 9000
vfail "brotli file with a flipped byte fails at decode + CRC" "$T/flip_b.utga" 'decode + CRC' 'decode|CRC'
flip "$T/b.utga" "$T/flip_m.utga" 0
vfail "flipped magic fails at envelope" "$T/flip_m.utga" envelope 'not a UTGA file'
run "$T/flip_s.utga"
check "default view of a corrupt file: exit 1, message, no table" sh -c "[ $st -eq 1 ] && grep -q 'CRC mismatch' '$T/err' && [ ! -s '$T/out' ]"
# payloads patched behind a correct CRC, so each later stage is the one that fails
patch "$T/s.utga" "$T/p_meta.utga" kvtype utg.arch 9 -- "$T/p_tens.utga" dtype tok_emb.weight 7 -- \
    "$T/p_plane.utga" dim0 tok_emb.weight 95 -- "$T/p_sym.utga" symbol blocks.0.mlp.fc.weight -128 -- \
    "$T/p_dim.utga" i32 utg.config.model_dim 32 -- "$T/p_sched.utga" u32 utg.plan.physical_blocks 1 -- \
    "$T/esc.utga" str utg.quant.clip 'b"\x1b[31m\"\\\n\x07x"' -- "$T/escname.utga" name blocks.0.mlp.fc.weight 'b"\x1b[2J"'
vfail "META type byte 9 fails at META" "$T/p_meta.utga" META 'unknown type 9'
vfail "dtype 7 fails at TENS" "$T/p_tens.utga" TENS 'unknown dtype 7'
vfail "a shape that disagrees with the plane fails at planes" "$T/p_plane.utga" planes 'value plane of 6144 bytes'
vfail "symbol -128 in an 8-bit tensor fails at symbols and scales" "$T/p_sym.utga" 'symbols and scales' 'symbol -128'
vfail "META model_dim 32 against 64-wide tensors fails at model consistency" "$T/p_dim.utga" 'model consistency' 'META config describes [0-9]+ tensors and [0-9]+ parameters, the artifact holds'
vfail "a schedule naming block 1 of 1 fails at model consistency" "$T/p_sched.utga" 'model consistency' 'physical_blocks'
# limited CMD...: CMD with about 512 MB to allocate. ulimit -v, except under AddressSanitizer, which
# maps terabytes of shadow memory and cannot start so; there ASan's own cap on one allocation.
if (ulimit -v 524288; "$U" --help) > /dev/null 2>&1; then
    limited() { (ulimit -v 524288; "$@"); }
else
    limited() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}max_allocation_size_mb=512:allocator_may_return_null=1" "$@"; }
fi
# nothing is allocated from META before it is checked against the TENS table: a small file whose
# config asks for an 11 GB model fails in a process limited to 512 MB, with the counts named
patch "$T/s.utga" "$T/p_bomb.utga" i32 utg.config.model_dim 4096 -- "$T/p_blocks.utga" u32 utg.plan.physical_blocks 7
patch "$T/p_bomb.utga" "$T/p_bomb2.utga" i32 utg.config.num_layers 8
limited "$U" "$T/p_bomb2.utga" --verify > "$T/out" 2> "$T/err"; st=$?
check "META asking for MODEL_DIM=4096 x 8 layers: model consistency fails on the counts, within 512 MB" sh -c \
    "[ $st -eq 1 ] && grep -q '^FAILED at model consistency' '$T/out' && grep -q 'describes [0-9]* tensors and [0-9]* parameters' '$T/err'"
vfail "utg.plan.physical_blocks 7 against a 2-block model fails at model consistency" "$T/p_blocks.utga" 'model consistency' \
    'utg.plan.physical_blocks says 7, the META config builds'
# a file is judged by its first bytes before it is read whole: 1 GiB of zeros in 512 MB
truncate -s 1G "$T/big.bin"
limited "$U" "$T/big.bin" --verify > "$T/out" 2> "$T/err"; st=$?
check "a 1 GiB non-artifact is refused by its magic within 512 MB" sh -c "[ $st -eq 1 ] && grep -q 'magic' '$T/err' && ! grep -q 'out of memory' '$T/err'"
rm -f "$T/big.bin"
# a non-zero byte between DATA's planes is a planes failure, not a META one
"$U" "$T/s.utga" --json > "$T/s.json"
"$PY" - "$T/s.utga" "$T/s.json" "$T/p_gap.utga" <<'EOF2'
import json, struct, sys, zlib
b = bytearray(open(sys.argv[1], "rb").read())
d = json.load(open(sys.argv[2]))
data = [s for s in d["sections"] if s["tag"] == "DATA"][0]
used = set()
for t in d["tensors"]:
    used.update(range(t["values_offset"], t["values_offset"] + t["values_bytes"]))
    if t["scales_bytes"]:
        used.update(range(t["scales_offset"], t["scales_offset"] + t["scales_bytes"]))
gap = min(c for c in range(data["size"]) if c not in used)
b[20 + data["offset"] + gap] = 0x5A
struct.pack_into("<I", b, 16, zlib.crc32(bytes(b[20:])))
open(sys.argv[3], "wb").write(b)
EOF2
vfail "a stray byte in DATA between planes fails at planes" "$T/p_gap.utga" planes 'DATA has a non-zero byte'
run "$T/p_sym.utga" --verify --json
check "--verify --json on a bad file: valid, failed stage and the ones after it" pyjson "$T/out" \
    "not d['ok'] and [s['status'] for s in d['stages']] == ['passed'] * 6 + ['failed', 'not run']"

# control characters in strings and names are escaped: never a raw ESC on the terminal
run "$T/esc.utga"
check "a META string with ESC, quote, backslash, newline, BEL: exit 0" status_is 0
check "... escaped in the table" hasre "$T/out" '^  utg.quant.clip +str +"\\x1b\[31m\\"\\\\\\n\\x07x"$'
check "... and no raw ESC byte in the output" no_escape_byte "$T/out"
run "$T/esc.utga" --json
check "... and --json is valid with the exact string" "$PY" -c 'import json, sys
v = {m["key"]: m["value"] for m in json.load(open(sys.argv[1]))["meta"]}["utg.quant.clip"]
sys.exit(0 if v == "\x1b[31m\"\\\n\x07x" else 1)' "$T/out"
check "... with no raw ESC byte in the JSON" no_escape_byte "$T/out"
run "$T/esc.utga" --verify
check "... and the artifact still verifies" [ $st -eq 0 ]
run "$T/escname.utga"
check "a tensor name with ESC is refused: exit 1, message" sh -c "[ $st -eq 1 ] && grep -q 'not 1..64 printable ASCII' '$T/err'"
check "... and no raw ESC byte in the message" no_escape_byte "$T/err"
cp "$T/b.utga" "$T/a$(printf '\033')[31m.utga"
run "$T/a$(printf '\033')[31m.utga"
check "a file name with ESC is printed escaped" has "$T/out" 'a\x1b[31m.utga'
check "... and no raw ESC byte in the output" no_escape_byte "$T/out"

# --budget
for f in b s v; do
    run "$T/$f.utga" --budget --json
    cp "$T/out" "$T/$f.budget.json"
    check "$f.utga --budget --json: the groups add up to the file size" pyjson "$T/$f.budget.json" \
        "sum(g['bytes'] for g in d['groups']) == d['artifact_bytes'] == $(size_of "$T/$f.utga") and d['total_bytes'] == d['artifact_bytes'] and
         d['headroom_bytes'] == 16000000 - d['total_bytes'] and len(d['groups']) == 8"
    run "$T/$f.utga" --budget
    check "$f.utga --budget: the text rows add up to the artifact line" "$PY" -c '
import re, sys
rows = [re.match(r"^  (\S.*?)\s{2,}(\S+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)%", l) for l in open(sys.argv[1])]
rows = [r for r in rows if r]
groups = [int(r.group(4).replace(",", "")) for r in rows if r.group(1) != "artifact"]
art = [int(r.group(4).replace(",", "")) for r in rows if r.group(1) == "artifact"]
sys.exit(0 if len(groups) == 8 and art == [sum(groups)] == [int(sys.argv[2])] else 1)' "$T/out" "$(size_of "$T/$f.utga")"
done
check "--budget, stored: each tensor group is its exact plane bytes" pyjson "$T/s.budget.json" \
    "not d['approximate'] and all(g['bytes'] == g['raw_bytes'] for g in d['groups'] if g['group'] != 'container overhead')"
check "--budget: groups as expected (embedding, attention, MLP, floats, scales, PROV)" pyjson "$T/v.budget.json" \
    "{g['group']: g['planes'] for g in d['groups']} == {'embedding': 2, 'attention': 8, 'MLP': 4, 'other matrices': 0, 'float/control tensors': 9, 'scales': 14, 'container overhead': 0, 'ancillary sections': 1}"
"$MK" "$T/pt.utga" QUANT_PASSTHROUGH_NUMEL=4096 > /dev/null
"$U" "$T/pt.utga" --budget --json > "$T/pt.budget.json"
check "--budget: attention matrices kept f16 still count as attention, not control" pyjson "$T/pt.budget.json" \
    "{g['group']: g['planes'] for g in d['groups']} == {'embedding': 1, 'attention': 8, 'MLP': 4, 'other matrices': 0, 'float/control tensors': 9, 'scales': 5, 'container overhead': 0, 'ancillary sections': 1}"
run "$T/b.utga" --budget
check "--budget, brotli: labelled approximate, headroom shown" sh -c "grep -q 'approximate, the real stream shares context' '$T/out' && grep -Eq '^  headroom +[0-9,]+$' '$T/out'"
LC_ALL=C.UTF-8 "$U" "$T/b.utga" --budget > "$T/out"
check "--budget bars: block characters under a UTF-8 locale" grep -q "$(printf '\342\226\210')" "$T/out"
LC_ALL=C "$U" "$T/b.utga" --budget > "$T/out"
check "--budget bars: '#' otherwise" grep -Eq '^  attention .*%  #+$' "$T/out"
run "$T/s.utga" --budget --code-bytes 123456 --svg "$T/chart.svg"
tot=$(($(wc -c <"$T/s.utga") + 123456))
tot_c=$(printf '%d' "$tot" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta')
check "--code-bytes adds to the total ($tot_c)" sh -c "[ $st -eq 0 ] && grep -Eq '^  code \(--code-bytes\) +123,456$' '$T/out' && grep -Eq '^  total +$tot_c ' '$T/out'"
check "--svg writes a well-formed SVG (python3 xml) with a bar per group" "$PY" -c '
import sys, xml.etree.ElementTree as E
r = E.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
texts = [t.text for t in r.iter(ns + "text")]
sys.exit(0 if r.tag == ns + "svg" and len(list(r.iter(ns + "rect"))) >= 18 and "MLP" in texts and "attention" in texts else 1)' "$T/chart.svg"
run "$T/a$(printf '\033')[31m.utga" --budget --svg "$T/chart2.svg"
check "--svg: a file name with control characters stays well-formed XML" "$PY" -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$T/chart2.svg"
run "$T/b.utga" --budget --code-bytes 15990000
check "over the budget: exit 1, said so" sh -c "[ $st -eq 1 ] && grep -q 'OVER THE BUDGET' '$T/out'"
run "$T/b.utga" --budget --svg "$T/no/such/dir/x.svg"
check "--svg into a missing directory: exit 1, message" sh -c "[ $st -eq 1 ] && grep -q 'cannot create the SVG' '$T/err'"

# --strip
for f in b s; do
    run "$T/$f.utga" --strip "$T/$f.strip.utga"
    check "$f.utga --strip: exit 0, PROV dropped, old and new sizes printed" sh -c "[ $st -eq 0 ] && grep -q 'dropped PROV (ancillary, 27 bytes)' '$T/out' && grep -q '^  old [0-9,]* bytes, new [0-9,]* bytes' '$T/out'"
    check "$f.utga --strip: the copy is smaller" [ "$(size_of "$T/$f.strip.utga")" -lt "$(size_of "$T/$f.utga")" ]
    run "$T/$f.strip.utga" --verify
    check "$f.utga --strip: the copy verifies" [ $st -eq 0 ]
    "$U" "$T/$f.strip.utga" --json > "$T/$f.strip.json"
    check "$f.utga --strip: no PROV, same codec, same META and tensors" "$PY" -c "
import json, sys
a, b = (json.load(open(sys.argv[i])) for i in (1, 2))
sys.exit(0 if [s['tag'] for s in b['sections']] == ['META', 'TENS', 'DATA'] and a['envelope']['codec'] == b['envelope']['codec']
         and a['meta'] == b['meta'] and a['tensors'] == b['tensors'] else 1)" "$T/$f.json" "$T/$f.strip.json"
done
run "$T/s.strip.utga" --strip "$T/s.strip2.utga"
check "--strip of a stripped file: nothing to drop, identical bytes" sh -c "[ $st -eq 0 ] && grep -q 'no ancillary sections' '$T/out' && cmp -s '$T/s.strip.utga' '$T/s.strip2.utga'"
run "$T/b.utga" --strip "$T/no/such/dir/x.utga"
check "--strip into a missing directory: exit 1, message" sh -c "[ $st -eq 1 ] && grep -q 'cannot create' '$T/err'"
run "$T/flip_b.utga" --strip "$T/never.utga"
check "--strip of a corrupt file: exit 1, no output" sh -c "[ $st -eq 1 ] && [ ! -e '$T/never.utga' ]"

# mutants: never a crash. Random bytes changed, the CRC fixed up for half of them so they reach the
# parser's later checks; every mode must end with status 0 or 1 and no sanitizer report.
"$PY" - "$T/s.utga" "$T/b.utga" "$T/mut" <<'EOF'
import random, struct, sys, zlib
random.seed(7)
for k in range(40):
    b = bytearray(open(sys.argv[1 + k % 2], "rb").read())
    for _ in range(1 + k % 3):
        b[random.randrange(len(b) if k % 4 else 20)] = random.randrange(256)
    if k % 2 == 0 and len(b) > 20:
        struct.pack_into("<I", b, 16, zlib.crc32(bytes(b[20:])))
    open("%s%02d.utga" % (sys.argv[3], k), "wb").write(b)
EOF
bad_status=""
for m in "$T"/mut*.utga; do
    for mode in "" --json --verify --budget "--strip $T/mut.out"; do
        # shellcheck disable=SC2086 # mode is one option or an option and its value
        "$U" "$m" $mode > /dev/null 2> "$T/merr"
        s=$?
        # a sanitizer build may exit 1 on a memory error: look at what it printed too
        if [ $s -gt 1 ] || grep -Eq 'Sanitizer|runtime error' "$T/merr"; then bad_status="$bad_status $(basename "$m")$mode:$s"; fi
    done
done
check "40 mutated artifacts x 5 modes: exit status 0 or 1, never a crash${bad_status:+ (got$bad_status)}" [ -z "$bad_status" ]

summary
