#!/usr/bin/env python3
"""Public-domain books shipped by Debian, as plain text, for the causal language model:
Jane Austen's six novels (r-cran-janeaustenr: an R lazy-load database, read here without R),
the King James Bible (bible-kjv-text, printed by the bible-kjv program) and the World English
Bible (sword-text-web: a SWORD zText module, decompressed and stripped of its OSIS markup here).

    python3 tools/lm/books.py fetch   # apt-get download + dpkg -x into build/books (no install)
    python3 tools/lm/books.py write   # build/books/text/<book>.txt, one file per book
    python3 tools/lm/books.py list    # books, characters, lines

The packages are unpacked, not installed (janeaustenr would pull in R): nothing runs as root.
"""
import argparse
import gzip
import os
import re
import struct
import subprocess
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PACKAGES = ["r-cran-janeaustenr", "bible-kjv-text", "bible-kjv", "sword-text-web"]
AUSTEN = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]


# ---- R serialisation (the XDR format of saveRDS / lazy-load databases) ----

class RReader:
    """Enough of R's serialisation to read lists of character vectors: NULL, symbols,
    pairlists, character / logical / integer / real vectors, lists, references."""

    def __init__(self, data):
        self.d, self.p, self.refs = data, 0, []

    def int(self):
        (v,) = struct.unpack(">i", self.d[self.p:self.p + 4])
        self.p += 4
        return v

    def read(self):
        if self.d[:2] != b"X\n":
            raise ValueError("not an XDR R serialisation")
        self.p = 2
        version = self.int()
        self.int()  # writer's R version
        self.int()  # minimal reader version
        if version == 3:
            n = self.int()
            self.p += n  # native encoding name
        return self.item()

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in (254, 242):  # NILVALUE_SXP, EMPTYENV
            return None
        if kind == 255:  # REFSXP
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if kind == 1:  # SYMSXP
            sym = self.item()
            self.refs.append(sym)
            return sym
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.d[self.p:self.p + n].decode("utf-8" if flags & (1 << 15) else "latin-1")
            self.p += n
            return s
        if kind in (2, 17):  # LISTSXP (pairlist) / ATTRLISTSXP
            out = {}
            while kind in (2, 17):
                if has_attr:
                    self.item()  # the cell's own attributes: not needed here
                tag = self.item() if has_tag else None
                out[tag] = self.item()
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
            if kind not in (254,):
                raise ValueError(f"pairlist ends with type {kind}")
            return out
        if kind in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            n = self.int()
            v = [self.item() for _ in range(n)]
        elif kind in (10, 13):  # LGLSXP, INTSXP
            n = self.int()
            v = list(struct.unpack(f">{n}i", self.d[self.p:self.p + 4 * n]))
            self.p += 4 * n
        elif kind == 14:  # REALSXP
            n = self.int()
            v = list(struct.unpack(f">{n}d", self.d[self.p:self.p + 8 * n]))
            self.p += 8 * n
        else:
            raise ValueError(f"R type {kind} is not supported here")
        attrs = self.item() if has_attr else None
        if kind == 19 and isinstance(attrs, dict) and attrs.get("names") is not None:
            return dict(zip(attrs["names"], v))  # a named list
        return v


def lazyload(rdx_path, rdb_path):
    """The objects of an R lazy-load database: {name: value}. The index (.rdx) is a gzipped
    serialisation of list(variables = list(<name> = c(offset, length)), ...); each object in
    the .rdb is a 4-byte length, then its zlib-compressed serialisation."""
    index = RReader(gzip.decompress(open(rdx_path, "rb").read())).read()
    db = open(rdb_path, "rb").read()
    out = {}
    for name, (offset, length) in index["variables"].items():
        raw = db[int(offset):int(offset) + int(length)]
        out[name] = RReader(zlib.decompress(raw[4:])).read()
    return out


# ---- the World English Bible: a SWORD zText module ----

def ztext_entries(module_dir):
    """Every entry of a zText module, Old then New Testament, in index order: the verse index
    (.bzv: block, offset, size per entry) into zlib blocks (.bzs: offset, size per block; .bzz)."""
    out = []
    for testament in ("ot", "nt"):
        bzs = open(os.path.join(module_dir, testament + ".bzs"), "rb").read()
        bzv = open(os.path.join(module_dir, testament + ".bzv"), "rb").read()
        bzz = open(os.path.join(module_dir, testament + ".bzz"), "rb").read()
        blocks = {}
        entries = []
        for v in range(len(bzv) // 10):
            b, offset, size = struct.unpack("<IIH", bzv[10 * v:10 * v + 10])
            if size == 0:
                entries.append("")
                continue
            if b not in blocks:
                start, length, _ = struct.unpack("<III", bzs[12 * b:12 * b + 12])
                blocks[b] = zlib.decompress(bzz[start:start + length])
            entries.append(blocks[b][offset:offset + size].decode("utf-8"))
        out.append(entries)
    return out


NOTE = re.compile(r"<note\b.*?</note>", re.S)
# Milestone divs around what is not scripture: the preface, the deuterocanonical books'
# introductions, the glossary (<div sID="x" type="..."/> ... <div eID="x" .../>).
ASIDE = re.compile(r'<div\b[^>]*\bsID="([^"]+)"[^>]*\btype="(?:front|introduction|glossary)"[^>]*/>.*?<div\b[^>]*\beID="\1"[^>]*/>', re.S)
TITLE = re.compile(r"<title\b.*?</title>", re.S)
TAG = re.compile(r"<[^>]*>")
SPACE = re.compile(r"\s+")
CLOSING = re.compile(r" ([,.;:!?’”)\]])")


def osis_text(entry):
    """The words of one OSIS entry: the preface, introductions and glossary, footnotes and
    headings dropped, tags removed, spaces joined."""
    # A footnote may sit between two words with no space around it: it becomes a space, and a
    # space that then lands before closing punctuation goes.
    text = SPACE.sub(" ", TAG.sub("", TITLE.sub("", NOTE.sub(" ", ASIDE.sub("", entry))))).strip()
    return CLOSING.sub(r"\1", text)


def web_text(root):
    module = os.path.join(root, "usr/share/sword/modules/texts/ztext/engWEB2015eb")
    lines = []
    for entries in ztext_entries(module):
        for e in entries:
            t = osis_text(e)
            if t:
                lines.append(t)
    return "\n".join(lines) + "\n"


# ---- the King James Bible: printed by the bible program from its own data file ----

def kjv_text(root):
    prog = os.path.join(root, "usr/bin/bible")
    data = os.path.join(root, "usr/lib")
    out = subprocess.run([prog, "-f", "-l", "0", "-p", data, "gen1:1-rev22:21"], capture_output=True, text=True,
                         check=True).stdout
    # "Ge1:1 In the beginning ...": drop the reference.
    lines = [re.sub(r"^\S+\d+:\d+\s+", "", line).strip() for line in out.splitlines()]
    return "\n".join(line for line in lines if line) + "\n"


def austen_texts(root):
    base = os.path.join(root, "usr/lib/R/site-library/janeaustenr/data/Rdata")
    books = lazyload(base + ".rdx", base + ".rdb")
    return {name: "\n".join(line or "" for line in books[name]) + "\n" for name in AUSTEN}


def all_books(root):
    """{book: text}: the six novels, kjv, web."""
    out = austen_texts(root)
    out["kjv"] = kjv_text(root)
    out["web"] = web_text(root)
    return out


def cmd_fetch(args):
    debs = os.path.join(args.out, "debs")
    os.makedirs(debs, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    for f in sorted(os.listdir(debs)):
        if f.endswith(".deb"):
            subprocess.run(["dpkg", "-x", os.path.join(debs, f), os.path.join(args.out, "root")], check=True)
    print(f"books: unpacked {', '.join(PACKAGES)} into {os.path.join(args.out, 'root')}")


def cmd_write(args):
    text_dir = os.path.join(args.out, "text")
    os.makedirs(text_dir, exist_ok=True)
    for name, text in all_books(os.path.join(args.out, "root")).items():
        with open(os.path.join(text_dir, name + ".txt"), "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{name:18s} {len(text):>9,} characters {text.count(chr(10)):>7,} lines")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["fetch", "write", "list"])
    p.add_argument("--out", default=os.path.join(ROOT, "build", "books"))
    args = p.parse_args(argv)
    if args.command == "fetch":
        cmd_fetch(args)
    else:
        if not os.path.isdir(os.path.join(args.out, "root")):
            sys.exit(f"books: {os.path.join(args.out, 'root')}: not there; run `books.py fetch` first")
        if args.command == "write":
            cmd_write(args)
        else:
            for name, text in all_books(os.path.join(args.out, "root")).items():
                print(f"{name:18s} {len(text):>9,} characters {text.count(chr(10)):>7,} lines")


if __name__ == "__main__":
    main()
