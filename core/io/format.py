"""The checkpoint file format: one safetensors file, no pickle.

A checkpoint's nested state (dicts, lists, numbers, text, tensors) is split in two:

- every tensor is a named, contiguous safetensors tensor (its name is its path in the
  state, e.g. "arms/bce/generator/layers.0.weight"), so a file holds only raw numbers of
  a declared dtype and shape: it cannot carry code, and it cannot carry a crafted memory
  layout (a zero-stride or overlapping view), because a safetensors tensor has none;
- everything else is one JSON document in the safetensors metadata ("ganlab"), with each
  tensor replaced by {"$t": name}. Dicts whose keys are not all plain text (the
  optimiser state's {0: ...}) are written as {"$d": [[key, value], ...]} and non-finite
  floats as {"$f": "nan"}, so decoding gives back exactly the dict that was encoded.

"sha256" in the metadata covers the document, the tensor index (names, dtypes, shapes,
offsets) and the tensor data, so any changed byte that still parses is refused.

Decoding trusts nothing: the header length, the header and document sizes and depth,
the dtypes, the offsets (which must tile the data exactly, so nothing is allocated
beyond what the file holds) and the mapping between the document and the tensors are
checked before any tensor is built. Errors are FormatError with one line of text;
core/io/checkpoint.py names the file and validates the decoded state.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct

import torch

FORMAT = "ganlab-checkpoint"
SUFFIX = ".safetensors"
META_DOC, META_SHA = "ganlab", "sha256"
MAX_HEADER_BYTES = 24 * 2**20      # far above a real checkpoint's header (kilobytes)
# JSON values (arrays, objects, items) in the header or its document, counted before
# parsing: a run with 1,000 snapshots has about 8,000; a few million empty lists would
# cost gigabytes to build
MAX_JSON_ITEMS = 1_000_000
MAX_DEPTH = 32                     # a run's state nests 7 deep (arena arm snapshots)
MAX_TENSORS = 100_000
MAX_DIMS = 8
# What a checkpoint's tensors may be: safetensors name -> torch dtype. The validator
# decides which one each field needs (and says so); packed float8/float4 and complex
# never occur, so they stop here, and so does bool (a byte other than 0 / 1 is
# undefined behaviour in torch).
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
          "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8}
_ITEMSIZE = {k: torch.empty(0, dtype=v).element_size() for k, v in DTYPES.items()}


NOT_CHECKPOINT = ("is not a checkpoint file (neither the .safetensors nor the old .pt format); "
                  "load a file saved by GAN RL Lab")


class FormatError(ValueError):
    """The bytes are not a well-formed GAN RL Lab safetensors checkpoint."""


def looks_like_pickle(raw: bytes) -> bool:
    """torch.save's zip, or a bare pickle: the old .pt format. A safetensors file starts
    with its header's length (any first byte, 0x80 too) and then "{"."""
    return raw.startswith(b"PK\x03\x04") or (raw.startswith(b"\x80") and raw[8:9] != b"{")


# -- encoding --------------------------------------------------------------------------------
def encode(state: dict) -> bytes:
    """One safetensors file holding `state` (tuples become lists, as torch.load gave)."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def tensor_ref(t: torch.Tensor, path: list[str]) -> dict:
        if t.layout != torch.strided or t.is_quantized or t.is_nested:
            raise TypeError(f"cannot save the {t.layout} tensor at {'/'.join(path)}")
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel():   # safetensors refuses shared storage: copy
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        name = "/".join(path) or "tensor"
        base, n = name, 1
        while name in tensors:
            name, n = f"{base}#{n}", n + 1
        tensors[name] = t
        return {"$t": name}

    def enc(value, path: list[str]):
        if isinstance(value, torch.Tensor):
            return tensor_ref(value, path)
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$f": repr(value)}
        if isinstance(value, (list, tuple)):
            return [enc(v, path + [str(i)]) for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: enc(v, path + [k]) for k, v in value.items()}
            return {"$d": [[enc(k, path), enc(v, path + [str(k)])] for k, v in value.items()]}
        raise TypeError(f"cannot save a {type(value).__name__} (at {'/'.join(path)})")

    doc = json.dumps({"format": FORMAT, "state": enc(state, [])}, allow_nan=False,
                     separators=(",", ":"))
    return pack(doc, tensors)


def pack(doc: str, tensors: dict[str, torch.Tensor]) -> bytes:
    """The file for a metadata document and its tensors, checksummed (encode's last
    step; tests and bench/fuzz_checkpoints.py forge hostile files with it)."""
    from safetensors.torch import save

    # The checksum covers the index and data, which only exist once serialised; the
    # metadata does not change the data layout, so serialise, hash, serialise again.
    first = save(tensors, metadata={META_DOC: doc})
    (n,) = struct.unpack("<Q", first[:8])
    header = json.loads(first[8:8 + n])
    header.pop("__metadata__", None)
    index = {k: [v["dtype"], v["shape"], v["data_offsets"]] for k, v in header.items()}
    data = memoryview(first)[8 + n:]
    return save(tensors, metadata={META_DOC: doc, META_SHA: _digest(doc, index, data)})


def _digest(doc: str, index: dict, data: memoryview) -> str:
    h = hashlib.sha256()
    h.update(doc.encode("utf-8"))
    h.update(b"\0")
    h.update(json.dumps(index, sort_keys=True, separators=(",", ":")).encode())
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


# -- decoding --------------------------------------------------------------------------------
def decode(raw: bytes) -> dict:
    """The state encode() was given; FormatError (one line) for anything else."""
    meta, index, data = _split(raw)
    doc = meta.get(META_DOC)
    if not isinstance(doc, str):
        raise FormatError("is a safetensors file but not a GAN RL Lab checkpoint (no "
                          f"{META_DOC!r} metadata)")
    if meta.get(META_SHA) != _digest(doc, index, data):
        raise FormatError("fails its SHA-256 checksum: the file was changed or damaged "
                          "after it was saved; use another copy")
    try:
        parsed = _parse_json(doc, "metadata")
    except FormatError:
        raise
    except ValueError as exc:
        raise FormatError(f"has metadata that is not JSON ({_clip(exc)})") from None
    if not isinstance(parsed, dict) or parsed.get("format") != FORMAT or "state" not in parsed:
        raise FormatError(f"has metadata that is not a {FORMAT} document")
    tensors = _Tensors(index, data)
    state = _dec(parsed["state"], tensors, 0)
    if not isinstance(state, dict):
        raise FormatError(f"has a metadata state that is a {type(state).__name__}, not a dict")
    unused = sorted(set(index) - tensors.used)
    if unused:
        raise FormatError(f"holds tensor {_clip(unused[0], 60)!r}, which the metadata does "
                          f"not map to any part of the state ({len(unused)} such)")
    return state


def read_meta(raw: bytes) -> dict:
    """The header's JSON document without building tensors (for listing files)."""
    meta, _, _ = _split(raw)
    return _parse_json(meta.get(META_DOC, "{}"), "metadata")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _parse_json(text: str, what: str):
    """json.loads with its cost bounded first (FormatError when too big or too deep)."""
    items = text.count("[") + text.count("{") + text.count(",")   # an upper bound
    if items > MAX_JSON_ITEMS:
        raise FormatError(f"holds about {items:,} JSON values in its {what}; a checkpoint's "
                          f"has at most {MAX_JSON_ITEMS:,}: the file is damaged or crafted")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise FormatError(f"has its {what} nested deeper than {MAX_DEPTH} levels") from None


def _split(raw) -> tuple[dict, dict, memoryview]:
    """(metadata, tensor index, data) of a safetensors file, checked: the header length,
    its JSON, every entry's dtype and shape, and offsets that tile the data exactly."""
    raw = memoryview(raw)
    if not raw:
        raise FormatError("is empty (0 bytes)")
    if len(raw) < 10 or raw[8:9] != b"{":   # a safetensors header is a JSON object
        raise FormatError(NOT_CHECKPOINT)
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER_BYTES:
        raise FormatError(f"claims a header of {n:,} bytes, but a checkpoint's is at most "
                          f"{MAX_HEADER_BYTES:,}: the file is not a checkpoint or is damaged")
    if n > len(raw) - 8:
        raise FormatError(f"claims a header of {n:,} bytes, but only {len(raw) - 8:,} follow: "
                          "the file is cut short or not a checkpoint")
    try:
        header = _parse_json(bytes(raw[8:8 + n]).decode("utf-8"), "header")
    except FormatError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"is not a checkpoint file: its header is not JSON ({_clip(exc)})"
                          ) from None
    if not isinstance(header, dict):
        raise FormatError("is not a checkpoint file: its header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError("has a header __metadata__ that is not a map of text")
    if len(header) > MAX_TENSORS:
        raise FormatError(f"lists {len(header):,} tensors; a checkpoint has at most "
                          f"{MAX_TENSORS:,}")
    data = raw[8 + n:]
    index, spans = {}, []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"has a header entry {_clip(name, 60)!r} that is not a tensor entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise FormatError(f"has tensor {_clip(name, 60)!r} of dtype {_clip(str(dtype), 20)!r}, "
                              f"which a checkpoint never holds (allowed: {', '.join(DTYPES)})")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(type(d) is int and 0 <= d < 2**48 for d in shape)):
            raise FormatError(f"has tensor {_clip(name, 60)!r} with an invalid shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and 0 <= o <= len(data) for o in offsets)
                or offsets[0] > offsets[1]):
            raise FormatError(f"has tensor {_clip(name, 60)!r} outside the file's "
                              f"{len(data):,} data bytes: the file is cut short or damaged")
        if math.prod(shape) * _ITEMSIZE[dtype] != offsets[1] - offsets[0]:
            raise FormatError(f"has tensor {_clip(name, 60)!r} of shape {shape} and dtype {dtype} "
                              f"that does not fill its {offsets[1] - offsets[0]:,} bytes")
        index[name] = [dtype, shape, offsets]
        spans.append(offsets)
    spans.sort()
    end = 0
    for start, stop in spans:   # contiguous, no gaps or overlaps: what safetensors writes
        if start != end:
            raise FormatError("has tensor data that overlaps or has gaps: the file is damaged")
        end = stop
    if end != len(data):
        raise FormatError(f"holds {len(data):,} data bytes, but its tensors fill {end:,}: "
                          "the file is cut short, has bytes appended, or is damaged")
    return meta, index, data


class _Tensors:
    """Builds each tensor once, on its first reference, as its own writable copy."""

    def __init__(self, index: dict, data: memoryview):
        self.index, self.data, self.used = index, data, set()

    def get(self, name) -> torch.Tensor:
        if not isinstance(name, str) or name not in self.index:
            raise FormatError(f"has metadata naming tensor {_clip(str(name), 60)!r}, which the "
                              "file does not hold")
        if name in self.used:   # one tensor in two places would alias them
            raise FormatError(f"has metadata naming tensor {_clip(name, 60)!r} twice")
        self.used.add(name)
        dtype, shape, (start, stop) = self.index[name]
        out = torch.empty(shape, dtype=DTYPES[dtype])
        if stop > start:   # raw little-endian bytes, as safetensors stores them
            out.view(-1).view(torch.uint8).copy_(
                torch.frombuffer(bytearray(self.data[start:stop]), dtype=torch.uint8))
        return out


def _dec(node, tensors: _Tensors, depth: int):
    if depth > MAX_DEPTH:
        raise FormatError(f"has metadata nested deeper than {MAX_DEPTH} levels")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_dec(v, tensors, depth + 1) for v in node]
    if not isinstance(node, dict):
        raise FormatError("has metadata holding a value that is not JSON")
    if len(node) == 1 and "$t" in node:
        return tensors.get(node["$t"])
    if len(node) == 1 and "$f" in node:
        if node["$f"] not in ("nan", "inf", "-inf"):
            raise FormatError(f"has a metadata float {_clip(str(node['$f']), 20)!r} that is "
                              "not nan / inf")
        return float(node["$f"])
    if len(node) == 1 and "$d" in node:
        pairs = node["$d"]
        if not isinstance(pairs, list):
            raise FormatError("has metadata dict entries that are not a list of pairs")
        out = {}
        for pair in pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                raise FormatError("has a metadata dict entry that is not a [key, value] pair")
            key = _dec(pair[0], tensors, depth + 1)
            if key is not None and not isinstance(key, (bool, int, float, str)):
                raise FormatError(f"has a metadata dict key that is a {type(key).__name__}")
            out[key] = _dec(pair[1], tensors, depth + 1)
        return out
    if any(k.startswith("$") for k in node):
        raise FormatError(f"has metadata with an unknown tag among {_clip(sorted(node)[:3], 40)}")
    return {k: _dec(v, tensors, depth + 1) for k, v in node.items()}


def _clip(text, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
