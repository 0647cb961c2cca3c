#!/usr/bin/env python3
"""safetensors interoperability between quest and the reference Python library.

  device DIR OUT   (where torch and safetensors are installed, e.g. the device machine)
      1. Every DIR/*.safetensors that quest wrote (packed exports, with DIR/NAME.inspect.json from
         `quest inspect NAME.safetensors --json NAME.inspect.json`) is opened with the library:
         metadata and every tensor's bytes must equal what this script reads from the file by the
         documented format; the CRC-32 in the metadata must match; and each quantized layer's
         codes, decoded here independently of quest by docs/EXPORT.md, must give the dequantized
         sums quest reports.
      2. The library writes files of every common dtype into OUT/py_written/, with the sums it
         expects in OUT/py_written/expected.json.
  verify DIR QUEST (here, after the device run)
      `QUEST inspect` reads each DIR/*.safetensors written by the library: dtypes, shapes, sums and
      metadata must be the library's.
  decode DIR       (anywhere, standard library only)
      Step 1 without the library: the decoding and CRC checks alone.
Exits non-zero on any mismatch.
"""
import json
import math
import os
import struct
import subprocess
import sys
import zlib

DTYPE_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
              "F32": 4, "F64": 8, "I64": 8, "U64": 8}
FP4_LEVELS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def f32(x):
    """Rounds a Python float to float32 (what quest computes in)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def read_raw(path):
    """(metadata, {name: (dtype, shape, bytes)}, data buffer) by the documented format."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    tensors = {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
               for k, v in header.items()}
    return meta, tensors, data


def unpack(row, count, bits):
    """Codes of one row: code i is bits [i*bits, (i+1)*bits) of the LSB-first bit stream."""
    value = int.from_bytes(row, "little")
    mask = (1 << bits) - 1
    return [(value >> (i * bits)) & mask for i in range(count)]


def decode_layer(tensors, name, spec, rows, cols):
    """The dequantized weight of one layer, row-major floats (docs/EXPORT.md)."""
    kind, bits = spec["kind"].replace("hadamard-", ""), spec.get("bits", 4)
    scales = struct.unpack(f"<{rows}f", tensors[name + ".scale"][2])
    codes = tensors[name + ".codes"][2]
    per_row = cols // 2 if kind == "sparse48" else cols
    row_bytes = (per_row * bits + 7) // 8
    out = []
    for r in range(rows):
        u = unpack(codes[r * row_bytes:(r + 1) * row_bytes], per_row, bits)
        s = scales[r]
        if kind in ("ste", "clip", "trust", "pact"):
            qmin = 1 - (1 << (bits - 1))
            out += [f32(f32((c + qmin) * s) - f32(0.5 * s)) for c in u]
        elif kind == "lsq":
            qmin = -(1 << (bits - 1))
            out += [f32((c + qmin + 0.5) * s) for c in u]
        elif kind == "fp4":
            out += [f32((-1 if c & 8 else 1) * f32(FP4_LEVELS[c & 7] * s)) for c in u]
        elif kind == "sparse48":
            pr = (cols // 8 * 4 + 7) // 8
            masks = unpack(tensors[name + ".pairs"][2][r * pr:(r + 1) * pr], cols // 8, 4)
            qmin = 1 - (1 << (bits - 1))
            it = iter(u)
            for m in masks:
                for pair in range(4):
                    for _ in range(2):
                        out.append(f32(f32((next(it) + qmin) * s) - f32(0.5 * s)) if (m >> pair) & 1 else 0.0)
        else:
            raise ValueError(f"unknown code kind {kind}")
    return out


def check_quest_file(path, use_library):
    failures = []
    meta, tensors, data = read_raw(path)
    name = os.path.basename(path)
    if meta.get("format") != "quest-packed":
        return [f"{name}: not a quest packed export"]
    crc = f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"
    if crc != meta.get("data_crc32"):
        failures.append(f"{name}: CRC-32 {crc} != metadata {meta.get('data_crc32')}")
    if use_library:
        import torch
        from safetensors import safe_open
        with safe_open(path, framework="pt") as f:
            if f.metadata() != meta:
                failures.append(f"{name}: the library's metadata differs")
            if set(f.keys()) != set(tensors):
                failures.append(f"{name}: the library sees tensors {sorted(set(f.keys()) ^ set(tensors))} differently")
            for key in f.keys():
                t = f.get_tensor(key).contiguous()
                raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
                if raw != tensors[key][2] or list(t.shape) != tensors[key][1]:
                    failures.append(f"{name}: tensor {key} reads differently through the library")
    inspect_path = path[: -len(".safetensors")] + ".inspect.json"
    if not os.path.exists(inspect_path):
        return failures + [f"{name}: no {os.path.basename(inspect_path)} (run quest inspect --json)"]
    expected = json.load(open(inspect_path))["packed_layers"]
    quant = json.loads(meta["quant"])
    model = json.loads(meta["model"])
    d, h = model["d_model"], model["hidden"]
    shapes = {"wqkv": (3 * d, d), "wo": (d, d), "w1": (h, d), "w2": (h, d), "w3": (d, h)}
    for layer, info in expected.items():
        rows, cols = shapes[layer.split(".")[-1]]
        w = decode_layer(tensors, layer, quant["weight"], rows, cols)
        total, absolute = math.fsum(w), math.fsum(abs(x) for x in w)
        ok = math.isclose(total, info["dequant_sum"], rel_tol=1e-9, abs_tol=1e-6) and \
            math.isclose(absolute, info["dequant_abs_sum"], rel_tol=1e-9)
        print(f"  {name} {layer}: {info['kind']} {info['bits']}-bit, sum {total:.9g} (quest {info['dequant_sum']:.9g})"
              f" {'ok' if ok else 'MISMATCH'}")
        if not ok:
            failures.append(f"{name}: {layer} decodes to sum {total}, |sum| {absolute}; quest says "
                            f"{info['dequant_sum']}, {info['dequant_abs_sum']}")
    return failures


def write_library_files(out):
    import torch
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, generator=g) * 3
    tensors = {
        "f32": base.clone(), "f16": base.half(), "bf16": base.bfloat16(), "f64": base.double(),
        "i8": (base * 10).clamp(-128, 127).to(torch.int8), "u8": (base.abs() * 20).clamp(0, 255).to(torch.uint8),
        "i16": (base * 1000).to(torch.int16), "i32": (base * 1e6).to(torch.int32),
        "i64": (base * 1e9).to(torch.int64), "bool": base > 0, "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4), "big": torch.randn(257, 129, generator=g),
    }
    files = {"dtypes.safetensors": (tensors, {"note": "written by the safetensors library", "x": "1"}),
             "nometa.safetensors": ({"only": torch.arange(10, dtype=torch.float32)}, None)}
    expected = {}
    for fname, (ts, meta) in files.items():
        save_file(ts, os.path.join(out, fname), metadata=meta)
        expected[fname] = {"metadata": meta or {},
                           "tensors": {k: {"dtype": str(v.dtype), "shape": list(v.shape),
                                           "sum": v.double().sum().item()} for k, v in ts.items()}}
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"), indent=1)
    print(f"wrote {len(files)} files by the safetensors library into {out}")


TORCH_DTYPE = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64",
               "torch.int8": "I8", "torch.uint8": "U8", "torch.int16": "I16", "torch.int32": "I32",
               "torch.int64": "I64", "torch.bool": "BOOL"}


def verify_with_quest(d, quest):
    expected = json.load(open(os.path.join(d, "expected.json")))
    failures = []
    for fname, exp in expected.items():
        out = os.path.join(d, fname + ".quest.json")
        r = subprocess.run([quest, "inspect", os.path.join(d, fname), "--json", out], capture_output=True, text=True)
        if r.returncode != 0:
            failures.append(f"{fname}: quest inspect failed: {r.stderr.strip()}")
            continue
        got = json.load(open(out))
        if got["metadata"] != exp["metadata"]:
            failures.append(f"{fname}: metadata {got['metadata']} != {exp['metadata']}")
        seen = {t["name"]: t for t in got["tensors"]}
        for k, e in exp["tensors"].items():
            t = seen.get(k)
            if t is None:
                failures.append(f"{fname}: quest does not see tensor {k}")
                continue
            ok = t["dtype"] == TORCH_DTYPE[e["dtype"]] and t["shape"] == e["shape"] and \
                math.isclose(t["sum"], e["sum"], rel_tol=1e-9, abs_tol=1e-9)
            print(f"  {fname} {k}: {t['dtype']} {t['shape']} sum {t['sum']:.9g} (library {e['sum']:.9g}) "
                  f"{'ok' if ok else 'MISMATCH'}")
            if not ok:
                failures.append(f"{fname}: tensor {k} reads as {t['dtype']} {t['shape']} sum {t['sum']}")
    return failures


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("device", "verify", "decode"):
        print(__doc__)
        return 2
    mode, d = sys.argv[1], sys.argv[2]
    failures = []
    if mode in ("device", "decode"):
        files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
        if not files:
            failures.append(f"no .safetensors files in {d}")
        for f in files:
            failures += check_quest_file(os.path.join(d, f), use_library=mode == "device")
        if mode == "device":
            write_library_files(os.path.join(sys.argv[3], "py_written"))
    else:
        failures += verify_with_quest(d, sys.argv[3])
    for f in failures:
        print("FAIL:", f)
    print("PASS" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
