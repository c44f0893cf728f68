"""The readers of tools/lm/books.py on small hand-built inputs (the real books need the Debian
packages: `books.py fetch`)."""
import gzip
import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import books  # noqa: E402


def xdr_int(v):
    return struct.pack(">i", v)


def charsxp(s):
    b = s.encode("utf-8")
    return xdr_int(9 | (1 << 15)) + xdr_int(len(b)) + b


def strsxp(items):
    out = xdr_int(16) + xdr_int(len(items))
    for s in items:
        out += xdr_int(9) + xdr_int(-1) if s is None else charsxp(s)
    return out


def named_list(names, values):
    out = xdr_int(19 | (1 << 9)) + xdr_int(len(values)) + b"".join(values)
    # attributes: pairlist(names = <names>)
    out += xdr_int(2 | (1 << 10)) + xdr_int(1) + charsxp("names") + strsxp(names) + xdr_int(254)
    return out


def serialised(body):
    return b"X\n" + xdr_int(2) + xdr_int(0x040201) + xdr_int(0x020300) + body


def test_r_reader_reads_named_lists_of_strings():
    blob = serialised(named_list(["a", "b"], [strsxp(["x", None, "zé"]), strsxp([])]))
    assert books.RReader(blob).read() == {"a": ["x", None, "zé"], "b": []}


def test_r_reader_reads_numbers_and_symbol_references():
    # list(p = c(1.5, 2), q = 7L): the second "names" symbol would be a reference in real files.
    body = xdr_int(19 | (1 << 9)) + xdr_int(2) + xdr_int(14) + xdr_int(2) + struct.pack(">2d", 1.5, 2.0)
    body += xdr_int(13) + xdr_int(1) + xdr_int(7)
    body += xdr_int(2 | (1 << 10)) + xdr_int(1) + charsxp("names") + strsxp(["p", "q"]) + xdr_int(254)
    assert books.RReader(serialised(body)).read() == {"p": [1.5, 2.0], "q": [7]}


def test_lazyload_database(tmp_path):
    # Two objects in an .rdb (4-byte length, zlib) indexed by a gzipped .rdx.
    objs = {"emma": strsxp(["EMMA", "", "By Jane Austen"]), "persuasion": strsxp(["PERSUASION"])}
    rdb, offsets = b"", []
    for body in objs.values():
        data = serialised(body)
        entry = struct.pack(">I", len(data)) + zlib.compress(data)
        offsets.append((len(rdb), len(entry)))
        rdb += entry
    variables = named_list(list(objs), [xdr_int(13) + xdr_int(2) + xdr_int(o) + xdr_int(n) for o, n in offsets])
    rdx = serialised(named_list(["variables"], [variables]))
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(rdx))
    (tmp_path / "Rdata.rdb").write_bytes(rdb)
    got = books.lazyload(str(tmp_path / "Rdata.rdx"), str(tmp_path / "Rdata.rdb"))
    assert got == {"emma": ["EMMA", "", "By Jane Austen"], "persuasion": ["PERSUASION"]}


def test_osis_text_drops_notes_headings_and_asides():
    entry = ('<div sID="g2" type="front"/>A preface.<div eID="g2" type="front"/>'
             '<title type="main">Genesis</title><w lemma="x">In</w> <w>the</w> <w>beginning</w>, '
             '<w>God</w><note placement="foot">1:1 a note</note><w>created</w> <w>it</w>'
             '<note placement="foot">2</note>.')
    assert books.osis_text(entry) == "In the beginning, God created it."


def test_ztext_module(tmp_path):
    # One block holding three entries (the second empty), for each testament.
    for testament, verses in (("ot", ["<w>one</w>", "", "two"]), ("nt", ["three"])):
        block = "".join(verses).encode()
        z = zlib.compress(block)
        (tmp_path / f"{testament}.bzz").write_bytes(z)
        (tmp_path / f"{testament}.bzs").write_bytes(struct.pack("<III", 0, len(z), len(block)))
        index, at = b"", 0
        for v in verses:
            index += struct.pack("<IIH", 0, at, len(v.encode()))
            at += len(v.encode())
        (tmp_path / f"{testament}.bzv").write_bytes(index)
    assert books.ztext_entries(str(tmp_path)) == [["<w>one</w>", "", "two"], ["three"]]
