#!/bin/sh
# Two builds of bench_train against each other: runs them alternately (old, new, old, new, ...) so that
# a machine's drift hits both alike, and prints each one's median training tokens/s per shape and the
# ratio new / old. Use it to show that a change costs no speed.
# Usage: sh bench/ab.sh OLD_BENCH_TRAIN NEW_BENCH_TRAIN [ROUNDS (5)] [BENCH_TRAIN OPTIONS...]
#   e.g. sh bench/ab.sh /tmp/base/build/bench_train build/bench_train 5 --precs fp32
# Nothing is asserted: the figures are for reading, on the machine it names.
set -eu
old=$1
new=$2
rounds=${3:-5}
[ $# -ge 3 ] && shift 3 || shift $#
log=$(mktemp)
trap 'rm -f "$log"' EXIT

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_bf16)$' | tr '\n' ' ')
echo "cpu: ${cpu:-unknown} (${flags:-no flags read}), $(nproc) threads; $rounds rounds, alternated"
i=1
while [ "$i" -le "$rounds" ]; do
    for which in old new; do
        bin=$old
        [ "$which" = new ] && bin=$new
        "$bin" "$@" | grep '^utgolf shape:' | sed "s/^/$which /" >>"$log"
    done
    i=$((i + 1))
done
# one line per build and shape: the median train_tok_s over the rounds, then the ratio
awk '
{
    b = $1; shape = ""; prec = ""; tok = ""
    for (f = 2; f <= NF; f++) {
        split($f, kv, ":")
        if (kv[1] == "shape") shape = kv[2]
        else if (kv[1] == "prec") prec = kv[2]
        else if (kv[1] == "train_tok_s") tok = kv[2]
    }
    key = shape " " prec
    n[b, key]++
    v[b, key, n[b, key]] = tok + 0
    keys[key] = 1
}
function median(b, key,    m, i, j, t, a) {
    m = n[b, key]
    for (i = 1; i <= m; i++) a[i] = v[b, key, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
END {
    for (key in keys) {
        o = median("old", key); w = median("new", key)
        printf "shape %s: old %.1f tok/s, new %.1f tok/s (median of %d), new/old %.3f\n", key, o, w, n["new", key], w / o
    }
}' "$log" | sort
