#!/usr/bin/python3
"""Extract Jane Austen's six novels as one plain-text file, without R.

Source: the Debian package r-cran-janeaustenr (the CRAN package janeaustenr 1.0.0 by Julia Silge,
MIT licence; the novels themselves are public domain, 1811-1818). Its lazy-load database
/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb holds one character vector per novel (one
element per line of text). This script decodes that file directly and writes the novels in
publication order, one text line per output line, which is byte-identical to the `text` column of
R's `janeaustenr::austen_books()` joined with newlines (4,025,029 bytes, sha256 f2516f2139e3cecf...).

usage: extract_austen.py Rdata.rdb > austen.txt

The format, as far as this script needs it: an .rdb file is a concatenation of blobs, each a 4-byte
big-endian length followed by a zlib stream; each decompresses to an R XDR serialization ("X\\n")
in which every string is a CHARSXP record: a 4-byte flags word with type 9 in the low byte, a 4-byte
big-endian length (-1 for NA), then the bytes. Following the recipe in the project's DATA.md (A3).
"""
import struct
import sys
import zlib

# The blobs appear in the order of the .rdx index, which R sorts by name.
BLOB_NAMES = ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
              "sensesensibility"]
PUBLICATION_ORDER = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma",
                     "northangerabbey", "persuasion"]


def read_blobs(rdb):
    """Decompress every zlib stream of the lazy-load database, in file order."""
    blobs, pos = [], 0
    while pos < len(rdb):
        d = zlib.decompressobj()
        blobs.append(d.decompress(rdb[pos + 4:]))
        pos = len(rdb) - len(d.unused_data)
    return blobs


def strings(raw):
    """Every CHARSXP string of one R XDR serialization, in order (NA becomes "")."""
    assert raw[:2] == b"X\n", "not an R XDR serialization"
    version = struct.unpack(">i", raw[2:6])[0]
    pos = 14  # "X\n", format version, writer R version, minimal reader version
    if version == 3:  # format 3 adds the native encoding name
        pos += 4 + struct.unpack(">i", raw[14:18])[0]
    out = []
    while pos + 8 <= len(raw):
        flags, n = struct.unpack(">ii", raw[pos:pos + 8])
        if flags & 0xFF == 9 and -1 <= n <= len(raw) - pos - 8:
            n = max(n, 0)
            out.append(raw[pos + 8:pos + 8 + n].decode("utf-8"))
            pos += 8 + n
        else:
            pos += 4
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: extract_austen.py Rdata.rdb > austen.txt")
    with open(sys.argv[1], "rb") as f:
        blobs = read_blobs(f.read())
    if len(blobs) != len(BLOB_NAMES):
        sys.exit("extract_austen.py: expected %d blobs, found %d" % (len(BLOB_NAMES), len(blobs)))
    books = dict(zip(BLOB_NAMES, map(strings, blobs)))
    out = sys.stdout.buffer
    for name in PUBLICATION_ORDER:
        out.write(("\n".join(books[name]) + "\n").encode("utf-8"))


if __name__ == "__main__":
    main()
