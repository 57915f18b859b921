"""Writer for aha reference-tensor files (.ref), read by tests/ref_io.c.

Format (little-endian): magic b"AHAREF\0\0", u32 version (1), u32 count, then
per tensor: u32 name_len, name (UTF-8), u32 dtype (0 = f32, 1 = i32),
u32 ndim, i64 shape[ndim], raw data.
"""
import struct

MAGIC = b"AHAREF\0\0"
VERSION = 1


def write_ref(path, tensors):
    """tensors: dict name -> torch tensor (float -> f32, integer -> i32)."""
    import torch
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<II", VERSION, len(tensors)))
        for name, t in tensors.items():
            t = t.detach().cpu().contiguous()
            if t.is_floating_point():
                t, code = t.to(torch.float32), 0
            else:
                t, code = t.to(torch.int32), 1
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb)
            f.write(struct.pack("<II", code, t.dim()))
            f.write(struct.pack("<%dq" % t.dim(), *t.shape))
            f.write(t.numpy().tobytes())
