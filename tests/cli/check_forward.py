"""Checks `aha-engine forward` output files against a reference fixture.

usage: check_forward.py FIXTURE_DIR LOGITS_FILE GRADS_SAFETENSORS
Exits non-zero (and says which tensor) on any mismatch beyond tolerance.
"""
import json
import struct
import sys

import numpy as np


def read_ref(path):
    out = {}
    with open(path, "rb") as f:
        assert f.read(8) == b"AHAREF\0\0"
        _, count = struct.unpack("<II", f.read(8))
        for _ in range(count):
            (nl,) = struct.unpack("<I", f.read(4))
            name = f.read(nl).decode()
            dt, nd = struct.unpack("<II", f.read(8))
            shape = struct.unpack("<%dq" % nd, f.read(8 * nd))
            n = int(np.prod(shape)) if nd else 1
            arr = np.frombuffer(f.read(4 * n), dtype=np.float32 if dt == 0 else np.int32)
            out[name] = arr.reshape(shape)
    return out


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (hl,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hl])
    base = 8 + hl
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[base + b:base + e], dtype=np.float32).reshape(info["shape"])
    return out


def close(name, got, ref, atol, rtol):
    if got.shape != ref.shape:
        print(f"{name}: shape {got.shape} != reference {ref.shape}")
        return False
    bad = np.abs(got - ref) > atol + rtol * np.abs(ref)
    if bad.any():
        print(f"{name}: {int(bad.sum())} elements differ, max |diff| {np.abs(got - ref).max():.3g}")
        return False
    return True


def main():
    fixture, logits_path, grads_path = sys.argv[1:4]
    ref = read_ref(fixture + "/ref.ref")
    T, V = ref["logits"].shape
    logits = np.fromfile(logits_path, dtype="<f4")
    ok = logits.size == T * V and close("logits", logits.reshape(T, V), ref["logits"], 2e-4, 1e-3)
    grads = read_safetensors(grads_path)
    want = {k[5:] for k in ref if k.startswith("grad.")}
    if set(grads) != want:
        print(f"gradient names differ: extra {sorted(set(grads) - want)}, missing {sorted(want - set(grads))}")
        ok = False
    for name in sorted(want & set(grads)):
        r = ref["grad." + name]
        ok &= close("grad " + name, grads[name], r, 1e-4 * float(np.abs(r).max()) + 1e-7, 2e-3)
    print(("ok " if ok else "FAILED ") + fixture)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
