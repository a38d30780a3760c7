#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_image (and manifest seeds of fuzz_manifest):
function packages (.tar.gz), good ones and every hostile shape a tenant can
upload. Each file is one selector byte (see fuzz_image.c: bit 0 = manifest
only, bit 1 = 64 KiB unpack cap) followed by the package.

    tests/fuzz/gen_tar_seeds.py tests/fuzz/corpus
"""
import gzip
import io
import json
import os
import sys
import tarfile

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
MANIFEST = {"handler": "bin/handler", "memory_mb": 128, "timeout_ms": 3000,
            "env": {"B": "2", "A": "1"}, "args": ["--x"]}
ELF = b"\x7fELF" + b"\0" * 60


def member(tf, name, data=b"", mode=0o644, type_=tarfile.REGTYPE, link="", size=None, **kw):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = mode
    ti.linkname = link
    ti.size = len(data) if size is None else size
    ti.mtime = 0
    for k, v in kw.items():
        setattr(ti, k, v)
    tf.addfile(ti, io.BytesIO(data) if type_ == tarfile.REGTYPE else None)


def package(entries, fmt=tarfile.GNU_FORMAT, manifest=MANIFEST, handler=True):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tf:
        if manifest is not None:
            member(tf, "manifest.json", json.dumps(manifest).encode())
        if handler:
            member(tf, "bin/handler", ELF, mode=0o755)
        for e in entries:
            member(tf, **e)
    return raw.getvalue()


def gz(b, level=9):
    return gzip.compress(b, compresslevel=level, mtime=0)


def put(target, name, sel, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes([sel]) + data)


seeds = {
    "good": package([]),
    "good-shebang": package([{"name": "bin/run", "data": b"#!/bin/sh\necho hi\n", "mode": 0o755}],
                            manifest=dict(MANIFEST, handler="bin/run", shell=True)),
    "good-init": package([{"name": "bin/init", "data": ELF, "mode": 0o755},
                          {"name": "lib", "type_": tarfile.DIRTYPE, "mode": 0o755},
                          {"name": "lib/link", "type_": tarfile.SYMTYPE, "link": "../bin/handler"}],
                         manifest=dict(MANIFEST, init="bin/init")),
    "absolute-path": package([{"name": "/etc/passwd", "data": b"root::0:0::/:/bin/sh\n"}]),
    "dotdot": package([{"name": "../../etc/cron.d/x", "data": b"* * * * * root sh\n"}]),
    "dotdot-inner": package([{"name": "a/./b/../../../x", "data": b"x"}]),
    "symlink-escape": package([{"name": "evil", "type_": tarfile.SYMTYPE, "link": "/etc/shadow"},
                               {"name": "up", "type_": tarfile.SYMTYPE, "link": "../../../../"}]),
    "symlink-then-write": package([{"name": "d", "type_": tarfile.SYMTYPE, "link": "/tmp"},
                                   {"name": "d/x", "data": b"through the link"}]),
    "handler-symlink": package([{"name": "bin/h2", "type_": tarfile.SYMTYPE, "link": "/init"}],
                               manifest=dict(MANIFEST, handler="bin/h2")),
    "manifest-symlink": package([{"name": "manifest.json", "type_": tarfile.SYMTYPE,
                                  "link": "/etc/passwd"}], manifest=None),
    "hardlink": package([{"name": "hl", "type_": tarfile.LNKTYPE, "link": "bin/handler"}]),
    "hardlink-outside": package([{"name": "hl", "type_": tarfile.LNKTYPE, "link": "/etc/shadow"}]),
    "chardev": package([{"name": "dev/mem", "type_": tarfile.CHRTYPE, "devmajor": 1,
                         "devminor": 1}]),
    "blockdev": package([{"name": "sda", "type_": tarfile.BLKTYPE, "devmajor": 8,
                          "devminor": 0}]),
    "fifo": package([{"name": "p", "type_": tarfile.FIFOTYPE}]),
    "setuid": package([{"name": "bin/su", "data": ELF, "mode": 0o4755},
                       {"name": "bin/sg", "data": ELF, "mode": 0o2755},
                       {"name": "sticky", "type_": tarfile.DIRTYPE, "mode": 0o1777}]),
    "duplicate": package([{"name": "bin/handler", "data": b"second", "mode": 0o755}]),
    "file-as-dir": package([{"name": "bin/handler/x", "data": b"x"}]),
    "root-entry": package([{"name": "./", "type_": tarfile.DIRTYPE},
                           {"name": ".", "data": b"root as a file"}]),
    "long-name": package([{"name": "a/" * 700 + "f", "data": b"x"}]),
    "pax-path": package([{"name": "p" * 200 + "/../../x", "data": b"x"}], fmt=tarfile.PAX_FORMAT),
    "no-manifest": package([], manifest=None),
    "manifest-dir": package([{"name": "manifest.json", "type_": tarfile.DIRTYPE}], manifest=None),
    "bad-manifest": package([], manifest={"handler": "../x", "memory_mb": 1 << 40,
                                          "unknown": 1}),
    "handler-not-exec": package([{"name": "bin/ro", "data": ELF, "mode": 0o644}],
                                manifest=dict(MANIFEST, handler="bin/ro")),
    "interp-missing": package([{"name": "bin/py", "data": b"#!/usr/bin/python3\n", "mode": 0o755}],
                              manifest=dict(MANIFEST, handler="bin/py")),
    "interp-unterminated": package([{"name": "bin/sb", "data": b"#!" + b"/" * 300,
                                     "mode": 0o755}], manifest=dict(MANIFEST, handler="bin/sb")),
}

for name, tar in seeds.items():
    put("image", name, 0, gz(tar))
put("image", "good-manifest-only", 1, gz(seeds["good"]))
put("image", "plain-tar", 0, seeds["good"])

# Size header claims 8 GiB, the data is a few bytes: libarchive reports truncation.
big = io.BytesIO()
tf = tarfile.open(fileobj=big, mode="w", format=tarfile.GNU_FORMAT)
member(tf, "manifest.json", json.dumps(MANIFEST).encode())
member(tf, "bin/handler", ELF, mode=0o755)
ti = tarfile.TarInfo("huge")
ti.size = 8 << 30
big.write(ti.tobuf(tarfile.GNU_FORMAT) + b"0123456789".ljust(512, b"\0") + b"\0" * 1024)
put("image", "huge-size-header", 0, gz(big.getvalue()))

# Decompression bomb: 32 MiB of zeros in one member (32 KiB compressed); the
# 4 MiB and 64 KiB caps must stop it while it inflates.
bomb = io.BytesIO()
with tarfile.open(fileobj=bomb, mode="w", format=tarfile.GNU_FORMAT) as tf:
    member(tf, "manifest.json", json.dumps(MANIFEST).encode())
    member(tf, "bin/handler", ELF, mode=0o755)
    ti = tarfile.TarInfo("zeros")
    ti.size = 32 << 20
    tf.addfile(ti, io.BytesIO(b"\0" * (32 << 20)))
put("image", "bomb-32m", 0, gz(bomb.getvalue()))
put("image", "bomb-32m-small-cap", 2, gz(bomb.getvalue()))
# Gzip of gzip: the builder reads one gzip layer only.
put("image", "double-gzip", 0, gz(gz(seeds["good"])))
# Many entries (the entry cap is 20000; this stays fast).
many = package([{"name": "d/f%05d" % i, "data": b""} for i in range(3000)])
put("image", "many-entries", 0, gz(many))

# manifest.json texts for fuzz_manifest.
manifests = {
    "good": MANIFEST,
    "full": dict(MANIFEST, shell=True, init="./bin/init", args=["a", "b"]),
    "absolute": {"handler": "/usr/bin/x"},
    "dotdot": {"handler": "bin/../../x"},
    "env-bad": {"handler": "h", "env": {"1BAD": "x", "A=B": "c", "": "d"}},
    "types": {"handler": 1, "memory_mb": "128", "timeout_ms": -1, "shell": "yes"},
    "ranges": {"handler": "h", "memory_mb": 65537, "timeout_ms": 900001},
    "unknown": {"handler": "h", "handlr": "typo"},
}
d = os.path.join(out, "manifest")
os.makedirs(d, exist_ok=True)
for name, m in manifests.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(json.dumps(m).encode())
with open(os.path.join(d, "duplicate-key"), "wb") as f:
    f.write(b'{"handler": "a", "handler": "b"}')
