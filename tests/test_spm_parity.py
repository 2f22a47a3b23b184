"""Parity test: utgolf's tokenizer tables and byte counts (utgolf.h >>tokenizer, via tests/spm_bytes.c) vs
the sentencepiece Python module and Parameter Golf's own build_sentencepiece_luts.

Run with /usr/bin/python3 (Debian's python3-sentencepiece; the pyenv python has no sentencepiece).
For each case it trains a SentencePiece model with exactly the Parameter Golf flags
(data/download_hf_docs_and_tokenize.py), encodes the documents with BOS before each (no EOS, as in
the shards), builds the lookup tables the way train_gpt.py does, and compares with utgolf:

  pieces    every piece's text, score and type; n_pieces == sp.vocab_size(); special ids
  luts      is_boundary / has_leading_space / base_bytes for every id of the table
  bytes     the byte count of the whole stream: exact
  bpb       val_loss and val_bpb for random fp32 per-token losses: 1e-12 relative
  docs      per document, utgolf's byte count == the UTF-8 length of sp.decode(ids) (the text
            after nmt_nfkc normalisation, which is what the tokens actually encode)

Cases: a generated multilingual text with digits; a model with user-defined and control symbols;
the Austen training text plus non-ASCII documents, and data/austen/sp1024.model on the Austen
validation text (when present); DATA.md's lossless setting (identity normalisation, whitespace-only
pieces), where the rule and utgolf still agree exactly but a "▁▁" piece makes the count exceed the
decoded length, so that comparison is printed as a note, not checked. Env CC overrides the compiler.
Prints "ok    name" / "FAIL  name" per check and "N passed, N failed"; exit status 1 on failure.
"""
import contextlib
import math
import os
import random
import struct
import subprocess
import sys
import tempfile

try:
    import sentencepiece as spm
except ImportError:
    print("sentencepiece is not importable (use /usr/bin/python3 with python3-sentencepiece): skipped")
    print("0 passed, 0 failed, 1 skipped")
    sys.exit(0)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = os.environ.get("CC", "cc")
SPACE = "\u2581"

# data/download_hf_docs_and_tokenize.py, SentencePieceTrainer.train(...)
PG_FLAGS = dict(model_type="bpe", character_coverage=0.999, byte_fallback=True, split_digits=True,
                normalization_rule_name="nmt_nfkc", add_dummy_prefix=False, pad_id=0, bos_id=1,
                eos_id=2, unk_id=3, hard_vocab_limit=False)

results = []


def check(ok, name, detail="", always=False):
    """One result line; the detail is shown on failure, or always for figures worth reading."""
    results.append(bool(ok))
    shown = detail and (always or not ok)
    print("%s  %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if shown else ""))
    sys.stdout.flush()


def note(text):
    print("      " + text)


# ---- Parameter Golf's tables, as in train_gpt.py (lists instead of numpy) ----

def build_sentencepiece_luts(sp, vocab_size):
    sp_vocab_size = int(sp.vocab_size())
    table_size = max(sp_vocab_size, vocab_size)
    base_bytes = [0] * table_size
    has_leading_space = [False] * table_size
    is_boundary_token = [True] * table_size
    for token_id in range(sp_vocab_size):
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
            continue
        is_boundary_token[token_id] = False
        if sp.is_byte(token_id):
            base_bytes[token_id] = 1
            continue
        piece = sp.id_to_piece(token_id)
        if piece.startswith("\u2581"):
            has_leading_space[token_id] = True
            piece = piece[1:]
        base_bytes[token_id] = len(piece.encode("utf-8"))
    return base_bytes, has_leading_space, is_boundary_token


def sp_type(sp, i):
    """The piece type as far as the Python API tells (NORMAL and USER_DEFINED both give 1)."""
    if sp.is_control(i):
        return 3
    if sp.is_unknown(i):
        return 2
    if sp.is_unused(i):
        return 5
    if sp.is_byte(i):
        return 6
    return 1


# ---- texts ----

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her she there been one all we their has would when what will no if more out so "
         "said who up can time about into only could new them man some these then two first may any like now my "
         "such make over our even most me state after also made many did must before back see through way where "
         "get much go well your know should down work year because come people just say each those take day good "
         "how long little both life very under last right never while").split()
FOREIGN = ("café naïve façade résumé Straße Größe über Ärger déjà-vu coöperate señor año niño mañana "
           "Привет мир спасибо Москва Ελλάδα καλημέρα αλφάβητο 日本語 東京 こんにちは ありがとう "
           "中文 北京 你好 한국어 안녕하세요 עברית שלום العربية مرحبا हिन्दी नमस्ते ไทย "
           "€5 £3 ¥100 ½ ¼ ™ © ° ± × ÷ … — – “quoted” ‘single’ «guillemets» 🙂 🚀 🎉").split()
# NFKC changes these: ligatures, fullwidth forms, superscripts, a decomposed é, the ideographic space
NFKC_CHANGES = ["ﬁne", "ﬂow", "ＡＢＣ", "１２３", "x²", "e\u0301te", "a\u3000b", "Ⅻ", "ｶﾀｶﾅ"]
RARE = "".join(chr(c) for c in range(0x4E00 + 500, 0x4E00 + 700))  # each used once -> byte fallback


def generated_docs(seed, n_docs):
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        parts = []
        for _ in range(rng.randint(20, 250)):
            r = rng.random()
            if r < 0.70:
                w = rng.choice(WORDS)
                parts.append(w.capitalize() if rng.random() < 0.1 else w)
            elif r < 0.82:
                parts.append(rng.choice(FOREIGN))
            elif r < 0.92:
                parts.append(rng.choice([str(rng.randint(0, 99)), str(rng.randint(1700, 2030)),
                                         "%d.%02d" % (rng.randint(0, 999), rng.randint(0, 99)),
                                         "%d,%03d" % (rng.randint(1, 99), rng.randint(0, 999))]))
            elif r < 0.95:
                parts.append(rng.choice(NFKC_CHANGES))
            elif r < 0.97:
                parts.append(rng.choice(RARE))
            else:
                parts.append(rng.choice([",", ".", ";", "!", "?", "(x)", "'s", "-", ":"]))
            if rng.random() < 0.03:
                parts.append(rng.choice(["\n", "\n\n", "\t", "  "]))
        docs.append(" ".join(parts) + rng.choice(["", ".", " ", "\n"]))
    return docs


def austen_docs(path, limit_bytes=None):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if limit_bytes:
        text = text[:limit_bytes]
    return [p for p in text.split("\n\n") if p.strip()]


# ---- running things ----

@contextlib.contextmanager
def quiet_stderr():
    """The trainer logs to fd 2 from C++; keep it unless something fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except Exception:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", "replace")[-3000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def train(tmp, name, docs, vocab_size, **extra):
    prefix = os.path.join(tmp, name)
    flags = dict(PG_FLAGS)
    flags.update(extra)
    # as in Parameter Golf: \x00 -> space and stripped, for training only
    train_docs = [d.replace("\x00", " ").strip() for d in docs]
    with quiet_stderr():
        spm.SentencePieceTrainer.train(sentence_iterator=iter(train_docs), model_prefix=prefix,
                                       vocab_size=vocab_size, num_threads=2, **flags)
    return prefix + ".model"


def build_helper(tmp):
    exe = os.path.join(tmp, "spm_bytes")
    cmd = [CC, "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-o", exe,
           os.path.join(REPO, "tests", "spm_bytes.c"), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    check(proc.returncode == 0, "build tests/spm_bytes.c", proc.stderr.strip()[-600:])
    return exe if proc.returncode == 0 else None


def run_helper(exe, model, table_size, pairs_path=None):
    cmd = [exe, model, str(table_size)] + ([pairs_path] if pairs_path else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr.strip()
    out = {"piece": {}, "lut": {}, "doc": {}}
    for line in proc.stdout.splitlines():
        f = line.split()
        if f[0] == "piece":
            text = bytes.fromhex(f[4]) if len(f) > 4 else b""
            out["piece"][int(f[1])] = (int(f[2]), float.fromhex(f[3]), text)
        elif f[0] == "lut":
            out["lut"][int(f[1])] = (int(f[2]), int(f[3]), int(f[4]))
        elif f[0] == "doc":
            out["doc"][int(f[1])] = int(f[2])
        elif f[0] == "specials":
            out["specials"] = [int(x) for x in f[1:]]
        elif f[0] in ("loss_sum", "loss", "bpb"):
            out[f[0]] = float.fromhex(f[1])
        else:
            out[f[0]] = int(f[1])
    return out, ""


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


# ---- one case ----

def compare_model(name, exe, model, table_size, extra_types=None):
    """Pieces, specials and tables. Returns (sp, helper output) or (None, None)."""
    sp = spm.SentencePieceProcessor(model_file=model)
    out, err = run_helper(exe, model, table_size)
    check(out is not None, name + ": utgolf loads the model", err)
    if out is None:
        return None, None
    n = int(sp.vocab_size())
    check(out["n_pieces"] == n and out["table_size"] == max(n, table_size),
          name + ": n_pieces == sp.vocab_size()", "utgolf %d, sp %d" % (out["n_pieces"], n), always=True)
    bad = []
    for i in range(n):
        t, score, text = out["piece"][i]
        want_t = sp_type(sp, i)
        got_t = 1 if t == 4 else t
        if extra_types and i in extra_types and t != extra_types[i]:
            bad.append("id %d type %d, want %d" % (i, t, extra_types[i]))
        if got_t != want_t or score != sp.get_score(i) or text != sp.id_to_piece(i).encode("utf-8"):
            bad.append("id %d: utgolf (%d, %r, %r) sp (%d, %r, %r)" % (
                i, t, score, text, want_t, sp.get_score(i), sp.id_to_piece(i)))
    check(not bad, name + ": every piece's text, score and type", "; ".join(bad[:3]))
    space = sp.piece_to_id(SPACE)
    want = [sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id(), space if space != sp.unk_id() else -1]
    check(out["specials"] == want, name + ": bos/eos/unk/pad and the standalone \u2581 id",
          "utgolf %s, sp %s" % (out["specials"], want), always=True)
    base, lead, boundary = build_sentencepiece_luts(sp, table_size)
    bad = [i for i in range(len(base))
           if out["lut"].get(i) != (int(boundary[i]), int(lead[i]), base[i])]
    check(not bad and len(out["lut"]) == len(base), name + ": lookup tables == build_sentencepiece_luts",
          "%d of %d ids differ, first %s" % (len(bad), len(base), bad[:5]))
    return sp, out


def compare_stream(name, exe, model, sp, docs, table_size, tmp, seed, decode_must_match=True):
    """Bytes and bpb of the BOS-prefixed stream; per-document decode lengths (a check, or with
    decode_must_match=False a note saying how far Parameter Golf's rule is from the decoded text)."""
    encoded = sp.encode(docs, out_type=int)
    stream, doc_of = [], []
    for d, ids in enumerate(encoded):
        stream += [sp.bos_id()] + ids
        doc_of += [d] * (len(ids) + 1)
    rng = random.Random(seed)
    base, lead, boundary = build_sentencepiece_luts(sp, table_size)
    pairs_path = os.path.join(tmp, name + ".pairs")
    loss_sum, n_bytes = 0.0, 0
    doc_bytes = [0] * len(encoded)
    with open(pairs_path, "w") as f:
        for i in range(len(stream) - 1):
            prev, tgt = stream[i], stream[i + 1]
            loss = f32(rng.uniform(0.0, 8.0))
            b = base[tgt] + int(lead[tgt] and not boundary[prev])  # eval_val, one position
            n_bytes += b
            doc_bytes[doc_of[i + 1]] += b
            loss_sum += loss
            f.write("%d %d %s %d\n" % (prev, tgt, loss.hex(), doc_of[i + 1]))
    n_tok = len(stream) - 1
    val_loss = loss_sum / n_tok
    val_bpb = (val_loss / math.log(2.0)) * (n_tok / n_bytes)

    out, err = run_helper(exe, model, table_size, pairs_path)
    check(out is not None, name + ": utgolf scores the stream", err)
    if out is None:
        return
    check(out["tokens"] == n_tok and out["bytes"] == n_bytes and out["count_bytes"] == n_bytes,
          name + ": byte count (exact)", "utgolf %d (count_bytes %d), Parameter Golf LUTs %d over %d tokens" % (
              out["bytes"], out["count_bytes"], n_bytes, n_tok), always=True)
    rel = abs(out["bpb"] - val_bpb) / val_bpb
    check(rel <= 1e-12 and abs(out["loss"] - val_loss) <= 1e-12 * val_loss,
          name + ": val_loss and val_bpb (1e-12 relative)",
          "bpb utgolf %.17g, python %.17g, rel %.1e" % (out["bpb"], val_bpb, rel), always=True)

    decoded = [len(sp.decode(ids).encode("utf-8")) for ids in encoded]
    bad_utg = [d for d in range(len(encoded)) if out["doc"].get(d, 0) != doc_bytes[d]]
    check(not bad_utg, name + ": per document, utgolf bytes == Parameter Golf LUT bytes",
          "%d of %d documents differ, first %s" % (len(bad_utg), len(encoded), bad_utg[:5]))
    bad = [d for d in range(len(encoded)) if decoded[d] != doc_bytes[d]]
    if decode_must_match:
        check(not bad, name + ": per document, bytes == UTF-8 length of sp.decode(ids)",
              "%d of %d documents differ, first (doc, decoded, counted) %s" % (len(bad), len(encoded), [
                  (d, decoded[d], doc_bytes[d]) for d in bad[:3]]))
    else:
        multi = [sp.id_to_piece(i) for i in range(sp.vocab_size())
                 if not sp.is_byte(i) and SPACE in sp.id_to_piece(i)[1:]]
        note("%s: the rule counts %d bytes, sp.decode gives %d (%+d, %d of %d documents differ): pieces "
             "with a \u2581 after the first (%s) count it as its 3 UTF-8 bytes, not as a space" % (
                 name, n_bytes, sum(decoded), n_bytes - sum(decoded), len(bad), len(encoded),
                 " ".join(multi[:5]) or "none"))
    raw = sum(len(d.encode("utf-8")) for d in docs)
    n_byte_tokens = sum(1 for t in stream if sp.is_byte(t))
    note("%s: %d pieces, %d docs, %d scored tokens, %d bytes (%.3f bytes/token); decoded text %d bytes, "
         "raw text %d bytes; %d byte-fallback tokens; bpb of the random losses %.6f" % (
             name, sp.vocab_size(), len(docs), n_tok, n_bytes, n_bytes / n_tok, sum(decoded), raw,
             n_byte_tokens, val_bpb))


def case(name, fn):
    """A case that raises (trainer refusal, missing helper output) is one failure, not a crash."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        check(False, name + ": case ran", "%s: %s" % (type(e).__name__, str(e)[:500]))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_helper(tmp)
        if exe is None:
            return

        docs = generated_docs(1234, 600)

        def generated():  # 1. multilingual text with digits, NFKC-changed forms and rare characters
            model = train(tmp, "gen", docs, 1024)
            sp, _ = compare_model("generated", exe, model, 1100)
            if sp:
                compare_stream("generated", exe, model, sp, docs, 1100, tmp, 1)

        def user_defined():  # 2. user-defined and control symbols (types 4 and 3 beyond the defaults)
            udocs = [d.replace(" of ", " <mask> of ", 1).replace(" and ", " @@ and ", 1) for d in docs[:300]]
            model = train(tmp, "user", udocs, 700, user_defined_symbols=["<mask>", "@@", SPACE + "hi"],
                          control_symbols=["<ctl>"])
            probe = spm.SentencePieceProcessor(model_file=model)
            types = {probe.piece_to_id(p): 4 for p in ["<mask>", "@@", SPACE + "hi"]}
            types[probe.piece_to_id("<ctl>")] = 3
            sp, _ = compare_model("user-defined", exe, model, 700, types)
            if sp:
                compare_stream("user-defined", exe, model, sp, udocs, 700, tmp, 2)

        train_txt = os.path.join(REPO, "data", "austen", "train.txt")
        adocs = (austen_docs(train_txt) if os.path.exists(train_txt) else []) + generated_docs(99, 40)

        def austen():  # 3. the Austen text (another step extracts it) plus non-ASCII documents
            model = train(tmp, "austen", adocs, 1024)
            sp, _ = compare_model("austen+foreign", exe, model, 1024)
            if sp:
                compare_stream("austen+foreign", exe, model, sp, adocs, 1024, tmp, 3)

        def repo_model():  # 4. the repository's tokenizer (spm_train) on the validation text
            sp1024 = os.path.join(REPO, "data", "austen", "sp1024.model")
            val_txt = os.path.join(REPO, "data", "austen", "val.txt")
            sp, _ = compare_model("data/austen/sp1024.model", exe, sp1024, 1024)
            if sp:
                compare_stream("sp1024-val", exe, sp1024, sp, austen_docs(val_txt), 1024, tmp, 4)

        def cli():  # 6. a model trained here by Debian's spm_train with the PG flags (one doc per line)
            import shutil
            if not shutil.which("spm_train"):
                note("spm_train not installed (apt sentencepiece): CLI case left out")
                return
            txt = os.path.join(tmp, "cli_docs.txt")
            with open(txt, "w", encoding="utf-8") as f:
                for d in docs:
                    f.write(d.replace("\n", " ").replace("\x00", " ").strip() + "\n")
            prefix = os.path.join(tmp, "cli")
            cmd = ["spm_train", "--input=" + txt, "--model_prefix=" + prefix, "--vocab_size=1024",
                   "--num_threads=1"] + ["--%s=%s" % (k, str(v).lower() if isinstance(v, bool) else v)
                                         for k, v in PG_FLAGS.items()]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            check(proc.returncode == 0, "spm_train (CLI) with the Parameter Golf flags", proc.stderr.strip()[-600:])
            if proc.returncode != 0:
                return
            sp, _ = compare_model("spm_train", exe, prefix + ".model", 1024)
            if sp:
                compare_stream("spm_train", exe, prefix + ".model", sp, docs, 1024, tmp, 6)

        def lossless():  # 5. DATA.md's lossless setting: the rule still matches; decoding is only reported
            model = train(tmp, "identity", adocs, 1024, normalization_rule_name="identity",
                          remove_extra_whitespaces=False, allow_whitespace_only_pieces=True)
            sp, _ = compare_model("identity", exe, model, 1024)
            if sp:
                compare_stream("identity", exe, model, sp, adocs, 1024, tmp, 5, decode_must_match=False)

        case("generated", generated)
        case("user-defined", user_defined)
        if os.path.exists(train_txt):
            case("austen+foreign", austen)
        else:
            note("data/austen/train.txt not present: Austen case left out")
        if all(os.path.exists(os.path.join(REPO, "data", "austen", f)) for f in ("sp1024.model", "val.txt")):
            case("sp1024-val", repo_model)
        else:
            note("data/austen/sp1024.model or val.txt not present: left out")
        case("identity", lossless)
        case("spm_train", cli)

if __name__ == "__main__":
    main()
    failed = results.count(False)
    print("%d passed, %d failed" % (len(results) - failed, failed))
    sys.exit(1 if failed else 0)
