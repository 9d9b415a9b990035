#!/usr/bin/env python3
"""An independent reader of svq's files, written from the safetensors format
and docs/format.md with Python's standard library and numpy only.

    read_safetensors.py <file.safetensors> <expected dir>

It parses the header (8-byte little-endian length, JSON), checks every
tensor's data_offsets (inside the data, the right byte count for dtype and
shape, no overlap, no gap, the data covered exactly), loads every tensor as a
numpy array of its dtype, parses svq's metadata ("svq.version",
"svq.checksums", one "<name>.svq" description per matrix and codebook set),
verifies every checksum listed there (xxh64, seed 0, implemented below from
the xxHash specification), checks each description's parts against the
tensors, and compares with what the writer (tests/support/io_fixture.cpp)
put in <expected dir>/manifest.json and its .npy files: the names, dtypes and
shapes of every matrix's tensors, the plain tensors' values, the RTN
matrices recomputed here as codes * fp16 scales, and the trellis matrices
(not rotated) decoded here from their streams (windows, code, row factors).

Exit status: 0 when everything matches, 1 on the first mismatch (with a
message), 77 when numpy is missing (the ctest is then reported skipped).
"""

import json
import os
import struct
import sys

try:
    import numpy as np
except ImportError:
    print("read_safetensors.py: numpy is not installed (Debian: python3-numpy): skipped")
    sys.exit(77)


# ---------------------------------------------------------------------------
# xxh64 (xxHash specification, XXH64): 64-bit arithmetic modulo 2^64.

_M64 = (1 << 64) - 1
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(acc, lane):
    acc = (acc + lane * _P2) & _M64
    acc = _rotl(acc, 31)
    return (acc * _P1) & _M64


def _merge(acc, val):
    acc ^= _round(0, val)
    return (acc * _P1 + _P4) & _M64


def xxh64(data, seed=0):
    data = bytes(data)
    n = len(data)
    p = 0
    if n >= 32:
        v1 = (seed + _P1 + _P2) & _M64
        v2 = (seed + _P2) & _M64
        v3 = seed & _M64
        v4 = (seed - _P1) & _M64
        # Stripes of 32 bytes: four lanes of 8.
        stripes = n // 32
        lanes = struct.unpack_from("<%dQ" % (4 * stripes), data, 0)
        for i in range(0, 4 * stripes, 4):
            v1 = _round(v1, lanes[i])
            v2 = _round(v2, lanes[i + 1])
            v3 = _round(v3, lanes[i + 2])
            v4 = _round(v4, lanes[i + 3])
        p = 32 * stripes
        acc = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M64
        acc = _merge(acc, v1)
        acc = _merge(acc, v2)
        acc = _merge(acc, v3)
        acc = _merge(acc, v4)
    else:
        acc = (seed + _P5) & _M64
    acc = (acc + n) & _M64
    while p + 8 <= n:
        (lane,) = struct.unpack_from("<Q", data, p)
        acc ^= _round(0, lane)
        acc = (_rotl(acc, 27) * _P1 + _P4) & _M64
        p += 8
    if p + 4 <= n:
        (lane,) = struct.unpack_from("<I", data, p)
        acc ^= (lane * _P1) & _M64
        acc = (_rotl(acc, 23) * _P2 + _P3) & _M64
        p += 4
    while p < n:
        acc ^= (data[p] * _P5) & _M64
        acc = (_rotl(acc, 11) * _P1) & _M64
        p += 1
    acc ^= acc >> 33
    acc = (acc * _P2) & _M64
    acc ^= acc >> 29
    acc = (acc * _P3) & _M64
    acc ^= acc >> 32
    return acc


def xxh64_hex(data):
    return "%016x" % xxh64(data)


# Published values of XXH64 with seed 0.
KNOWN_XXH64 = [
    (b"", 0xEF46DB3751D8E999),
    (b"a", 0xD24EC4F1A98C6E5B),
    (b"abc", 0x44BC2CF5AD770999),
]


# ---------------------------------------------------------------------------
# safetensors

DTYPES = {
    # name: (numpy dtype, bytes per element)
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),  # raw bits; to float32 by shifting (bf16_to_float32)
    "F8_E4M3": ("u1", 1),
    "F8_E5M2": ("u1", 1),
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U64": ("<u8", 8),
    "U32": ("<u4", 4),
    "U16": ("<u2", 2),
    "U8": ("u1", 1),
    "BOOL": ("?", 1),
}
MAX_HEADER = 100_000_000


class ReadError(Exception):
    pass


def check(condition, message):
    if not condition:
        raise ReadError(message)


def bf16_to_float32(bits):
    """BF16 is the upper half of a float32: shift the 16 bits up."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class SafetensorsFile:
    def __init__(self, path):
        with open(path, "rb") as f:
            self.raw = f.read()
        raw = self.raw
        check(len(raw) >= 8, "file shorter than the 8-byte header length")
        (n,) = struct.unpack_from("<Q", raw, 0)
        check(n <= len(raw) - 8, "header length %d runs past the end of the file" % n)
        check(n <= MAX_HEADER, "header length %d exceeds %d" % (n, MAX_HEADER))
        text = raw[8:8 + n].decode("utf-8")
        check(text.startswith("{"), "the header does not start with '{'")
        header = json.loads(text)
        check(isinstance(header, dict), "the header is not a JSON object")
        self.header_length = n
        self.header_text = text
        self.data_start = 8 + n
        data_size = len(raw) - self.data_start
        self.metadata = header.pop("__metadata__", {})
        check(isinstance(self.metadata, dict), "__metadata__ is not an object")
        for k, v in self.metadata.items():
            check(isinstance(v, str), "__metadata__ entry %r is not a string" % k)
        self.tensors = {}  # name -> dict(dtype, shape, begin, end)
        for name, info in header.items():
            check(isinstance(info, dict), "tensor %r: not an object" % name)
            check(set(info) == {"dtype", "shape", "data_offsets"}, "tensor %r: fields %s" % (name, sorted(info)))
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            check(dtype in DTYPES, "tensor %r: unknown dtype %r" % (name, dtype))
            check(isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape),
                  "tensor %r: shape %r" % (name, shape))
            check(isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets),
                  "tensor %r: data_offsets %r" % (name, offsets))
            begin, end = offsets
            check(0 <= begin <= end <= data_size, "tensor %r: data_offsets %r outside the data" % (name, offsets))
            elements = 1
            for d in shape:
                elements *= d
            check(end - begin == elements * DTYPES[dtype][1],
                  "tensor %r: %d bytes for %s %r" % (name, end - begin, dtype, shape))
            self.tensors[name] = {"dtype": dtype, "shape": shape, "begin": begin, "end": end}
        # The tensors cover the data exactly: sorted by offset, each starts
        # where the one before ends, the last ends at the end of the file.
        at = 0
        for name, t in sorted(self.tensors.items(), key=lambda kv: (kv[1]["begin"], kv[1]["end"])):
            check(t["begin"] >= at, "tensor %r overlaps the tensor before it" % name)
            check(t["begin"] == at, "gap of %d bytes before tensor %r" % (t["begin"] - at, name))
            at = t["end"]
        check(at == data_size, "the tensors cover %d bytes of %d" % (at, data_size))

    def data(self, name):
        t = self.tensors[name]
        return self.raw[self.data_start + t["begin"]:self.data_start + t["end"]]

    def array(self, name):
        """The tensor as a numpy array of its dtype (BF16: raw uint16 bits)."""
        t = self.tensors[name]
        return np.frombuffer(self.data(name), dtype=np.dtype(DTYPES[t["dtype"]][0])).reshape(t["shape"])

    def floats(self, name):
        """A float tensor as float32 values (F32, F16, BF16, F64)."""
        t = self.tensors[name]
        a = self.array(name)
        if t["dtype"] == "BF16":
            return bf16_to_float32(a)
        check(t["dtype"] in ("F32", "F16", "F64"), "tensor %r is %s, not a float type" % (name, t["dtype"]))
        return a.astype(np.float32)


# ---------------------------------------------------------------------------
# svq's metadata

def parts_of(description):
    """Every part of a description: those of "parts" and of a CRVQ matrix's
    nested "base_matrix" (a PVQ description)."""
    out = list(description.get("parts", {}).items())
    if "base_matrix" in description:
        out += [("base_matrix." + role, p) for role, p in parts_of(description["base_matrix"])]
    return out


def check_svq(f, counts):
    check(f.metadata.get("svq.version") == "1", "svq.version is %r, this reader reads '1'" % f.metadata.get("svq.version"))
    sums = json.loads(f.metadata["svq.checksums"])
    check(isinstance(sums, dict) and set(sums) == {"metadata", "tensors"}, "svq.checksums fields %r" % list(sums))
    descriptions = {}
    for key, text in f.metadata.items():
        if not key.endswith(".svq"):
            continue
        check(key in sums["metadata"], "metadata %r has no checksum" % key)
        check(xxh64_hex(text.encode("utf-8")) == sums["metadata"][key], "metadata %r: checksum mismatch" % key)
        counts["description checksums"] += 1
        descriptions[key[:-4]] = json.loads(text)
    for key in sums["metadata"]:
        check(key in f.metadata, "svq.checksums lists metadata %r, which the file lacks" % key)
    covered = set()
    for name, sum_ in sums["tensors"].items():
        check(name in f.tensors, "svq.checksums lists tensor %r, which the file lacks" % name)
        t = f.tensors[name]
        check(sum_["dtype"] == t["dtype"] and sum_["shape"] == t["shape"], "tensor %r: %r vs the header" % (name, sum_))
        check(xxh64_hex(f.data(name)) == sum_["xxh64"], "tensor %r: checksum mismatch" % name)
        counts["plain tensor checksums"] += 1
        covered.add(name)
    for name, d in descriptions.items():
        check(d["method"] in ("pvq", "rtn", "crvq", "crvq_codebooks", "trellis"), "%r: method %r" % (name, d["method"]))
        check(isinstance(d["format_version"], int), "%r: format_version" % name)
        if d["method"] == "crvq":
            check(d["codebooks"] in descriptions, "%r: codebooks %r not in the file" % (name, d["codebooks"]))
        for role, p in parts_of(d):
            tensor = p["tensor"]
            check(tensor.startswith(name + ".svq."), "%r: part %r is tensor %r" % (name, role, tensor))
            check(tensor in f.tensors, "%r: part %r: tensor %r is not in the file" % (name, role, tensor))
            t = f.tensors[tensor]
            check(p["dtype"] == t["dtype"] and p["shape"] == t["shape"],
                  "%r: part %r says %s %r, the file %s %r" % (name, role, p["dtype"], p["shape"], t["dtype"], t["shape"]))
            check(xxh64_hex(f.data(tensor)) == p["xxh64"], "%r: part %r: checksum mismatch" % (name, role))
            counts["part checksums"] += 1
            check(tensor not in covered, "tensor %r belongs to two entries" % tensor)
            covered.add(tensor)
        if d["method"] == "pvq":
            check_pvq_description(name, d, f)
    check(covered == set(f.tensors), "tensors no svq entry lists: %r" % sorted(set(f.tensors) - covered))
    return descriptions


def pvq_count(n, k):
    """V(n, k): points of the pyramid sum |y_i| = k in n dimensions."""
    row = [1] + [0] * k  # V(0, j)
    for _ in range(n):
        new = [1] + [0] * k
        for j in range(1, k + 1):
            new[j] = row[j] + new[j - 1] + row[j - 1]
        row = new
    return row[k]


def check_pvq_description(name, d, f):
    """The words' length follows from the shape and configuration (docs/format.md)."""
    rows, cols = d["shape"]
    c = d["config"]
    n, k = c["group_dim"], c["pulses"]
    full, tail = cols // n, cols % n
    bits = c["row_scale_bits"] + full * ((pvq_count(n, k) - 1).bit_length() + c["gain_bits"])
    if tail:
        kt = max(1, (2 * k * tail + n) // (2 * n))  # K * tail / N rounded half up, at least 1
        bits += (pvq_count(tail, kt) - 1).bit_length() + c["gain_bits"]
    words = (rows * bits + 63) // 64
    check(d["parts"]["words"]["shape"] == [words],
          "%r: %r words, the configuration needs %d" % (name, d["parts"]["words"]["shape"], words))
    check(d["search"] in ("mse", "hessian"), "%r: search %r" % (name, d["search"]))


def trellis_decode(d, f):
    """A trellis matrix that is not rotated, decoded from docs/format.md: the
    rows' weights, row-major, in segments of segment_weights; weight t of a
    segment is the L-bit window at bit floor(t b / 64) of it (first bit most
    significant), its code the byte sum of (34038481 s + 76625530) mod 2^32
    minus 510, times its row's factor (a bfloat16; the product in float32)."""
    rows, cols = d["shape"]
    c = d["config"]
    b, L = c["bits_per_64"], c["state_bits"]
    check(not c["rotate"], "trellis_decode reads matrices that are not rotated")
    n = rows * cols
    back = 1 << (L - b // 64)
    segment = min(max((1 << 22) // back, min(4096, (1 << 25) // back)), 65536, (n + 15) // 16 * 16)
    def segment_bytes(m):
        return ((m - 1) * b // 64 + L + 7) // 8
    payload = np.frombuffer(f.data(d["parts"]["payload"]["tensor"]), dtype=np.uint8)
    segments = (n + segment - 1) // segment
    want = (segments - 1) * segment_bytes(segment) + segment_bytes(n - (segments - 1) * segment)
    check(payload.size == want, "trellis payload of %d bytes, the configuration needs %d" % (payload.size, want))
    bits = np.unpackbits(np.concatenate([payload, np.zeros(8, dtype=np.uint8)]))  # first bit most significant
    t = np.arange(n, dtype=np.int64)
    seg, local = t // segment, t % segment
    start = seg * 8 * segment_bytes(segment) + local * b // 64
    state = np.zeros(n, dtype=np.uint64)
    for i in range(L):
        state = (state << np.uint64(1)) | bits[start + i].astype(np.uint64)
    x = (state * np.uint64(34038481) + np.uint64(76625530)) & np.uint64(0xFFFFFFFF)
    code = sum(((x >> np.uint64(8 * k)) & np.uint64(255)).astype(np.int64) for k in range(4)) - 510
    factors = bf16_to_float32(np.frombuffer(f.data(d["parts"]["factors"]["tensor"]), dtype="<u2"))
    return code.astype(np.float32).reshape(rows, cols) * factors.reshape(rows, 1)


# ---------------------------------------------------------------------------

def main(path, expected_dir):
    counts = {k: 0 for k in ("xxh64 vectors", "description checksums", "part checksums", "plain tensor checksums",
                             "matrices", "matrix tensors", "plain tensors", "rtn matrices", "trellis matrices")}
    for data, want in KNOWN_XXH64:
        check(xxh64(data) == want, "xxh64(%r) = %016x, the published value is %016x" % (data, xxh64(data), want))
        counts["xxh64 vectors"] += 1
    with open(os.path.join(expected_dir, "manifest.json")) as m:
        manifest = json.load(m)
    for v in manifest["xxh64_vectors"]:
        data = bytes((i * 131 + 7) & 0xFF for i in range(v["length"]))
        check(xxh64_hex(data) == v["xxh64"], "xxh64 of %d bytes: %s here, %s by svq" % (v["length"], xxh64_hex(data), v["xxh64"]))
        counts["xxh64 vectors"] += 1

    f = SafetensorsFile(path)
    check(f.data_start % 8 == 0, "the data starts at %d, not a multiple of 8 (svq's writer pads)" % f.data_start)
    for name, t in f.tensors.items():
        size = DTYPES[t["dtype"]][1]
        check((f.data_start + t["begin"]) % size == 0, "tensor %r is not aligned to its element size" % name)
        a = f.array(name)  # every tensor loads as its dtype
        check(a.dtype.itemsize == size and list(a.shape) == t["shape"], "tensor %r loads as %s %r" % (name, a.dtype, a.shape))
    descriptions = check_svq(f, counts)

    # Every matrix's tensors: names, dtypes and shapes as the writer derived them.
    for name, m in manifest["matrices"].items():
        check(name in descriptions, "matrix %r has no description" % name)
        d = descriptions[name]
        check(d["method"] == m["method"], "%r: method %r, expected %r" % (name, d["method"], m["method"]))
        if "shape" in m:
            check(d["shape"] == m["shape"], "%r: shape %r, expected %r" % (name, d["shape"], m["shape"]))
        if "search" in m:
            check(d["search"] == m["search"], "%r: search %r, expected %r" % (name, d["search"], m["search"]))
        listed = sorted((p["tensor"], p["dtype"], p["shape"]) for _, p in parts_of(d))
        want = sorted((p["tensor"], p["dtype"], p["shape"]) for p in m["parts"])
        check(listed == want, "%r: parts %r, expected %r" % (name, listed, want))
        for tensor, dtype, shape in want:
            t = f.tensors[tensor]
            check((t["dtype"], t["shape"]) == (dtype, shape), "tensor %r is %s %r, expected %s %r" % (tensor, t["dtype"], t["shape"], dtype, shape))
            counts["matrix tensors"] += 1
        counts["matrices"] += 1
        if m["method"] == "rtn":
            # Dequantized: code * fp16 scale of its group of config.group columns.
            codes = f.array(d["parts"]["codes"]["tensor"]).astype(np.float32)
            scales = f.array(d["parts"]["scales"]["tensor"]).astype(np.float32)
            group = d["config"]["group"]
            per_column = np.repeat(scales, group, axis=1)[:, :codes.shape[1]]
            values = codes * per_column
            expected = np.load(os.path.join(expected_dir, m["expected"]))
            check(expected.dtype == np.float32 and expected.shape == values.shape, "%r: expected array %s %r" % (name, expected.dtype, expected.shape))
            check(np.array_equal(values.view(np.uint32), expected.view(np.uint32)),
                  "%r: dequantized values differ from svq's at %d entries" % (name, int(np.sum(values != expected))))
            counts["rtn matrices"] += 1
        if m["method"] == "trellis":
            values = trellis_decode(d, f)
            expected = np.load(os.path.join(expected_dir, m["expected"]))
            check(expected.dtype == np.float32 and expected.shape == values.shape, "%r: expected array %s %r" % (name, expected.dtype, expected.shape))
            check(np.array_equal(values.view(np.uint32), expected.view(np.uint32)),
                  "%r: decoded values differ from svq's at %d entries" % (name, int(np.sum(values != expected))))
            counts["trellis matrices"] += 1
    check(set(descriptions) == set(manifest["matrices"]),
          "descriptions %r, the writer made %r" % (sorted(descriptions), sorted(manifest["matrices"])))

    # Plain tensors: dtype, shape and values (float32 bits equal to svq's reading).
    plain = set(json.loads(f.metadata["svq.checksums"])["tensors"])
    check(plain == set(manifest["tensors"]), "plain tensors %r, the writer made %r" % (sorted(plain), sorted(manifest["tensors"])))
    for name, m in manifest["tensors"].items():
        t = f.tensors[name]
        check(t["dtype"] == m["dtype"] and t["shape"] == m["shape"], "tensor %r is %s %r, expected %s %r" % (name, t["dtype"], t["shape"], m["dtype"], m["shape"]))
        values = f.floats(name)
        expected = np.load(os.path.join(expected_dir, m["expected"]))
        check(expected.dtype == np.float32 and list(expected.shape) == t["shape"], "%r: expected array %s %r" % (name, expected.dtype, expected.shape))
        check(np.array_equal(values.view(np.uint32), expected.view(np.uint32)),
              "tensor %r: values differ from svq's at %d entries" % (name, int(np.sum(values != expected))))
        counts["plain tensors"] += 1

    print("%s: %d tensors, header %d bytes, data from byte %d" % (path, len(f.tensors), f.header_length, f.data_start))
    for k, v in counts.items():
        print("  %-24s %d checked" % (k, v))
    print("OK")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: read_safetensors.py <file.safetensors> <expected dir>", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(sys.argv[1], sys.argv[2]))
    except (ReadError, KeyError, ValueError, OSError) as e:
        print("read_safetensors.py: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
