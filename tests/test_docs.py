#!/usr/bin/env python3
"""The docs name only what exists: every identifier a page quotes as code must be defined in the code.

Checked pages: README.md and docs/*.md. Checked names, inside backticks:
  - any `name()` (a call): a function of utgolf.h, examples/, tools/ or tests/;
  - any `utg_...`, `utg__...` or `UTG_...` identifier, alone or as the first word of a longer span
    (`utg_model_create(&d, &m)`): a function, macro, type, enumerator or struct of those files, a
    configuration macro the header tests (#ifdef) or an environment variable it reads (getenv);
  - a file path (`tests/test_plan.c`, `examples/train.c`): an existing file or directory.
Symbols come from universal-ctags (--language-force=C). Prints "N passed, N failed" (one check per
distinct name) and lists each missing name with the pages that quote it."""
import glob
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SOURCES = ["utgolf.h"] + sorted(glob.glob("examples/*.c") + glob.glob("tools/*.c") +
                                glob.glob("tests/*.c") + glob.glob("tests/*.h") + glob.glob("tests/cuda/*.h") +
                                glob.glob("bench/*.c"))
PAGES = ["README.md"] + sorted(glob.glob("docs/*.md"))
CODE_SPAN = re.compile(r"`([^`\n]+)`")
CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\(\)")
LIB_NAME = re.compile(r"^((?:utg_|utg__|UTG_)[A-Za-z0-9_]*)")
PATH = re.compile(r"^((?:examples|tools|tests|docs|bench|recipes|data)/[A-Za-z0-9_./-]*[A-Za-z0-9_])/?$")


def symbols():
    out = subprocess.run(["ctags", "--options=NONE", "--language-force=C", "--kinds-C=+defgmpstuvx",
                          "-x", "--_xformat=%N"] + SOURCES, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("test_docs: ctags failed: " + out.stderr.strip())
    names = set(out.stdout.split())
    # X-macro generated names: the result codes and the config fields are spelled in their lists
    with open(os.path.join(ROOT, "utgolf.h")) as f:
        header = f.read()
    names.update(re.findall(r"X\((UTG_[A-Z0-9_]+),", header))
    # what a user defines before including the header, and the environment variables it reads
    names.update(re.findall(r"(?:#ifdef|#ifndef|defined\() *\(?(UTG_[A-Z0-9_]+)", header))
    names.update(re.findall(r'getenv\("([A-Z0-9_]+)"\)', header))
    with open(os.path.join(ROOT, "tests/cuda/emu.h")) as f:  # the CUDA emulator's switches
        names.update(re.findall(r'(?:getenv|env_is)\("([A-Z0-9_]+)"', f.read()))
    return names


def quoted_names():
    """{name: set of pages} for the names the pages quote, and {path: pages} for quoted paths."""
    names, paths = {}, {}
    for page in PAGES:
        with open(os.path.join(ROOT, page)) as f:
            text = f.read()
        text = re.sub(r"```.*?```", "", text, flags=re.S)  # fenced blocks are examples, not references
        for span in CODE_SPAN.findall(text):
            span = span.strip()
            for name in CALL.findall(span):
                names.setdefault(name, set()).add(page)
            m = LIB_NAME.match(span)
            if m and not m.group(1).endswith("_"):
                names.setdefault(m.group(1), set()).add(page)
            m = PATH.match(span)
            if m and "*" not in span:
                paths.setdefault(m.group(1), set()).add(page)
    return names, paths


def main():
    os.chdir(ROOT)
    if shutil.which("ctags") is None:
        print("test_docs: skipped: universal-ctags is not installed (make deps installs it)")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    defined = symbols()
    names, paths = quoted_names()
    passed = failed = 0
    for name in sorted(names):
        if name in defined:
            passed += 1
        else:
            failed += 1
            print("  not defined: %s (quoted in %s)" % (name, ", ".join(sorted(names[name]))))
    for path in sorted(paths):
        if os.path.exists(path):
            passed += 1
        else:
            failed += 1
            print("  no such file: %s (quoted in %s)" % (path, ", ".join(sorted(paths[path]))))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
