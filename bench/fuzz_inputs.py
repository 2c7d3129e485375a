"""Feed hostile and broken data roots and config/flag values to the CLI, in this process.

Two corpora, both built in a temp folder by this script:
  data roots   folders, zips and torchvision MNIST roots that are empty, missing, a file,
               truncated, renamed, bombs, links out, FIFOs, odd names, wrong magic, ...
               each through `train --data folder|mnist --data-root ROOT --steps 2`
  flags        every subcommand's flags with bad values (negative, zero, huge, NaN, inf,
               text, 2**64, empty, paths that are files, folders, /dev/null, /proc, too
               long), --config files (garbage bytes, 5000-digit ints, deep nesting, huge
               layer lists, unknown keys, wrong types), --set and --grid with bad values,
               GANLAB_TORCH_THREADS out of range
Each case runs core.cli.main.main with an alarm (a hang) and is counted:

  ok      exit 0 and the expected outputs written ("ok+skip": bad files skipped and
          named, counted with ok)
  clear   exit 2 with one line "error: ..." and no traceback
  trace   a traceback printed or an exception out of main()
  other   any other exit status (1 = internal error) or more than one line (a crash)
  silent  exit 0 although the input was bad (or the outputs are missing or empty)
  refused a clear error for an input that should have trained (a control, or a folder
          with some good images)
  hang    still running after --timeout seconds
  files   files left behind by a call that was refused

    python bench/fuzz_inputs.py [--timeout 60] [--only data|flags] [--show 20]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import signal
import struct
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("GANLAB_TORCH_THREADS", "1")


from core.cli.main import main  # noqa: E402


@dataclass
class Case:
    name: str
    argv: list
    expect: str                      # "ok", "skip" (ok, naming skipped files), "clear", "any"
    outputs: tuple = ()              # files that must exist (non-empty) after exit 0
    env: dict = field(default_factory=dict)


# -- small file makers ----------------------------------------------------------------
def png_bytes(size=(28, 28), mode="L", color=128) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    img = Image.new(mode, size, color if mode != "P" else 3)
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpg_bytes(size=(28, 28)) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def bomb_png_header(w=20000, h=20000) -> bytes:
    """A PNG that declares w x h pixels: header and a tiny IDAT only (nothing allocated)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good_images(folder: Path, n=4, prefix="img") -> Path:
    for i in range(n):
        write(folder / f"{prefix}{i}.png", png_bytes(color=40 * i))
    return folder


def zip_with(path: Path, entries: dict, patch=None) -> Path:
    """A zip of name -> bytes; patch(bytearray) corrupts it in place."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    raw = bytearray(buf.getvalue())
    if patch:
        patch(raw)
    return write(path, bytes(raw))


def bad_crc(raw: bytearray) -> None:      # the first entry's CRC, local and central
    for sig, off in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):
        at = raw.find(sig)
        raw[at + off] ^= 0xFF


def unknown_method(raw: bytearray) -> None:   # compression method 99 (AES) + encrypted flag
    for sig, flag_off, method_off in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = raw.find(sig)
        raw[at + flag_off] |= 1
        raw[at + method_off:at + method_off + 2] = struct.pack("<H", 99)


def huge_declared(raw: bytearray) -> None:    # the central directory says 4 GB uncompressed
    at = raw.find(b"PK\x01\x02")
    raw[at + 24:at + 28] = struct.pack("<I", 0xFFFFFFF0)


def idx_images(n=8, rows=28, cols=28, magic=2051) -> bytes:
    return struct.pack(">IIII", magic, n, rows, cols) + bytes(n * rows * cols)


def idx_labels(n=8, magic=2049) -> bytes:
    return struct.pack(">II", magic, n) + bytes(i % 10 for i in range(n))


def mnist_root(root: Path, kind="MNIST", **parts: bytes) -> Path:
    """A torchvision root with the four raw files; parts replace some of them."""
    files = {"train-images-idx3-ubyte": idx_images(), "train-labels-idx1-ubyte": idx_labels(),
             "t10k-images-idx3-ubyte": idx_images(), "t10k-labels-idx1-ubyte": idx_labels()}
    for key, data in parts.items():
        files[key.replace("_", "-")] = data
    for name, data in files.items():
        if data is not None:
            write(root / kind / "raw" / name, data)
    return root


# -- the data-root corpus ---------------------------------------------------------------
def data_cases(tmp: Path) -> list[Case]:
    d = tmp / "roots"
    d.mkdir()
    out = lambda i: str(tmp / "runs" / f"data_{i}")  # noqa: E731
    roots: list[tuple[str, str, object, str]] = []   # (name, data, root, expect)

    def add(name, root, expect, data="folder"):
        roots.append((name, data, root, expect))

    add("control/folder_of_pngs", good_images(d / "good"), "ok")
    add("control/zip_of_pngs", zip_with(d / "good.zip", {f"a{i}.png": png_bytes() for i in range(3)}),
        "ok")
    add("control/mnist_idx_root", mnist_root(d / "mn_ok"), "ok", "mnist")
    add("empty_folder", (d / "empty").mkdir() or d / "empty", "clear")
    add("missing_path", d / "does_not_exist", "clear")
    add("a_plain_file", write(d / "plain.txt", b"hello"), "clear")
    add("empty_path_string", "", "clear")
    unreadable = good_images(d / "unreadable", 2)
    write(unreadable / "locked.png", png_bytes()).chmod(0)
    add("unreadable_file (root reads it anyway)", unreadable, "any")
    write(good_images(d / "renamed", 2) / "x.jpg", png_bytes())
    add("png_renamed_jpg", d / "renamed", "ok")
    trunc = good_images(d / "trunc", 2)
    write(trunc / "cut.png", png_bytes()[:40])
    add("truncated_png", trunc, "skip")
    bomb = good_images(d / "bomb", 2)
    write(bomb / "bomb.png", bomb_png_header())
    add("bomb_png_20000x20000", bomb, "skip")
    only_bomb = d / "only_bomb"
    write(only_bomb / "bomb.png", bomb_png_header())
    add("only_a_bomb", only_bomb, "clear")
    add("zip_bad_crc", zip_with(d / "crc.zip", {"a.png": png_bytes(), "b.png": png_bytes()},
                                bad_crc), "skip")
    add("zip_encrypted_unknown_method", zip_with(
        d / "enc.zip", {"a.png": png_bytes(), "b.png": png_bytes()}, unknown_method), "skip")
    add("zip_huge_declared_entry", zip_with(
        d / "huge.zip", {"a.png": png_bytes(), "b.png": png_bytes()}, huge_declared), "skip")
    add("zip_truncated", write(d / "cut.zip", (d / "good.zip").read_bytes()[:-30]), "clear")
    add("zip_empty", zip_with(d / "empty.zip", {}), "clear")
    add("zip_not_images", zip_with(d / "txt.zip", {"a.txt": b"x"}), "clear")
    outside = write(tmp / "outside" / "secret.png", png_bytes())
    link = good_images(d / "link_out", 2)
    (link / "leak.png").symlink_to(outside)
    add("symlink_to_file_outside", link, "skip")
    zero = good_images(d / "devzero", 2)
    (zero / "zero.png").symlink_to("/dev/zero")
    add("symlink_to_dev_zero", zero, "skip")
    fifo = good_images(d / "fifo", 2)
    os.mkfifo(fifo / "x.png")
    add("fifo_named_x.png", fifo, "skip")
    only_fifo = d / "only_fifo"
    only_fifo.mkdir()
    os.mkfifo(only_fifo / "x.png")
    add("only_a_fifo", only_fifo, "clear")
    add("fifo_as_root", (os.mkfifo(d / "root_fifo") or d / "root_fifo"), "clear")
    add("dev_zero_as_root", "/dev/zero", "clear")
    add("dev_null_as_root", "/dev/null", "clear")
    add("proc_as_root", "/proc/self", "clear")
    mixed = d / "mixed"
    for i, size in enumerate([(28, 28), (5, 300), (640, 480), (1, 1)]):
        write(mixed / f"m{i}.png", png_bytes(size))
    add("mixed_sizes", mixed, "ok")
    modes = d / "modes"
    for m in ("L", "RGB", "RGBA", "P", "1", "I;16", "LA"):
        write(modes / f"{m.replace(';', '_')}.png", png_bytes(mode=m))
    write(modes / "c.jpg", jpg_bytes())
    add("grey_rgb_rgba_palette_16bit", modes, "ok")
    add("one_image", good_images(d / "one", 1), "ok")
    nonimg = d / "nonimg"
    write(nonimg / "a.txt", b"text")
    write(nonimg / "b.csv", b"1,2")
    add("non_image_files_only", nonimg, "clear")
    deep = d / "deep"
    nest = deep.joinpath(*["n"] * 60)
    good_images(nest, 2)
    add("deep_nested_folders", deep, "ok")
    odd = d / "odd"
    for i, name in enumerate(["ünï cødé.png", "spaces  .png", "-leading.png", "日本.PNG",
                              "new\nline.png", ".hidden.png", "x" * 250 + ".png"]):
        write(odd / name, png_bytes(color=i * 20))
    add("unicode_and_odd_names", odd, "ok")
    loop = d / "loop"
    good_images(loop, 1)
    (loop / "self").symlink_to(loop)
    add("symlink_loop_folder", loop, "ok")
    add("zip_with_paths_and_dirs", zip_with(d / "paths.zip", {
        "../../evil.png": png_bytes(), "/abs.png": png_bytes(), "dir/": b"",
        "dir/a.png": png_bytes()}), "ok")
    write(good_images(d / "garbage", 2) / "g.png", os.urandom(2048))
    add("garbage_in_.png", d / "garbage", "skip")
    write(good_images(d / "zerob", 2) / "z.png", b"")
    add("zero_byte_png", d / "zerob", "skip")
    add("filesystem_root", "/", "clear")
    many = d / "many_files"
    for i in range(3000):
        write(many / f"{i}.txt", b"")
    add("3000_non_image_files", many, "clear")
    # torchvision MNIST roots
    add("mnist/empty_root", (d / "mn_empty").mkdir() or d / "mn_empty", "clear", "mnist")
    add("mnist/root_is_a_file", write(d / "mn_file", b"x"), "clear", "mnist")
    add("mnist/truncated_images", mnist_root(d / "mn_cut", train_images_idx3_ubyte=idx_images()[:100]),
        "clear", "mnist")
    add("mnist/wrong_magic", mnist_root(d / "mn_magic", train_images_idx3_ubyte=idx_images(magic=1234)),
        "clear", "mnist")
    add("mnist/empty_images_file", mnist_root(d / "mn_zero", train_images_idx3_ubyte=b""),
        "clear", "mnist")
    add("mnist/labels_count_differs", mnist_root(d / "mn_count", train_labels_idx1_ubyte=idx_labels(3)),
        "clear", "mnist")
    add("mnist/images_10x10", mnist_root(d / "mn_small",
                                         train_images_idx3_ubyte=idx_images(rows=10, cols=10)),
        "clear", "mnist")
    add("mnist/images_int32", mnist_root(d / "mn_i32", train_images_idx3_ubyte=struct.pack(
        ">IIII", 0x0C03, 8, 28, 28) + bytes(8 * 28 * 28 * 4)), "clear", "mnist")
    add("mnist/huge_declared_count", mnist_root(d / "mn_huge", train_images_idx3_ubyte=struct.pack(
        ">IIII", 2051, 2**31, 28, 28) + bytes(28 * 28)), "clear", "mnist")
    fifo_raw = mnist_root(d / "mn_fifo", train_images_idx3_ubyte=None)
    os.mkfifo(fifo_raw / "MNIST" / "raw" / "train-images-idx3-ubyte")
    add("mnist/fifo_as_images_file", fifo_raw, "clear", "mnist")
    add("mnist/missing_one_file", mnist_root(d / "mn_missing", t10k_labels_idx1_ubyte=None),
        "clear", "mnist")
    legacy = mnist_root(d / "mn_legacy")
    write(legacy / "MNIST" / "processed" / "training.pt", b"garbage")
    write(legacy / "MNIST" / "processed" / "test.pt", b"garbage")
    add("mnist/garbage_legacy_processed", legacy, "any", "mnist")
    add("fashion/wrong_magic", mnist_root(d / "fm_magic", "FashionMNIST",
                                          train_labels_idx1_ubyte=idx_labels(magic=7)),
        "clear", "fashion-mnist")

    cases = []
    for i, (name, data, root, expect) in enumerate(roots):
        argv = ["train", "--data", data, "--data-root", str(root), "--steps", "2",
                "--eval-every", "0", "--batch-size", "2", "--out", out(i)]
        outputs = tuple(f"{out(i)}/{f}" for f in ("metrics.csv", "config.json", "samples.png"))
        cases.append(Case(f"data/{name}", argv, expect, outputs))
    return cases


# -- the config / flag corpus -------------------------------------------------------------
INT_BAD = ["-1", "0", "abc", "", "1.5", "nan", "inf", str(2**64), "9" * 5000, "1e3"]
FLOAT_BAD = ["-1", "0", "nan", "inf", "-inf", "abc", "", "1e309", str(2**64)]


def _int_flags() -> dict:
    """flag -> values that are fine (everything else in INT_BAD must be refused)."""
    return {"--steps": set(), "--seed": {"0"}, "--batch-size": set(), "--sample-every": set(),
            "--checkpoint-every": {"0"}, "--keep-checkpoints": {"0"}, "--eval-every": {"0"}}


def _float_flags() -> dict:
    return {"--lr": set(), "--grad-clip": {"0"}, "--g-ema": {"0"}, "--kl": {"0"}}


def flag_cases(tmp: Path, ckpt: Path, arena: Path) -> list[Case]:
    runs = tmp / "runs"
    n = [0]

    def out() -> str:
        n[0] += 1
        return str(runs / f"flag_{n[0]}")

    ring = ["--data", "ring8", "--eval-every", "0"]
    cases: list[Case] = []

    def train(name, extra, expect, base=("--steps", "2"), env=None):
        o = out()
        argv = ["train", *ring, *base, *extra]
        if "--out" not in extra:
            argv += ["--out", o]
        outs = (f"{o}/metrics.csv", f"{o}/config.json") if "--out" not in extra else ()
        cases.append(Case(f"train/{name}", argv, expect, outs, env or {}))

    for flag, fine in _int_flags().items():
        base = ("--steps", "2") if flag != "--steps" else ()
        for v in INT_BAD:
            train(f"{flag} {v[:12]!r}", [flag, v], "any" if v in fine else "clear", base)
    for flag, fine in _float_flags().items():
        for v in FLOAT_BAD:
            train(f"{flag} {v[:12]!r}", [flag, v], "any" if v in fine else "clear")
    for flag, v in [("--data", "nope"), ("--preset", "nope"), ("--device", "tpu"),
                    ("--d-sees", "both"), ("--rule", "nope"), ("--rule", "")]:
        train(f"{flag} {v!r}", [flag, v], "clear")
    train("--device cuda (none here)", ["--device", "cuda"], "clear")
    train("--reward-model missing", ["--rule", "rlhf", "--reward-model", str(tmp / "no.pt")],
          "clear")
    train("--reward-model a folder", ["--rule", "rlhf", "--reward-model", str(tmp)], "clear")
    train("--reward-model /dev/zero", ["--rule", "rlhf", "--reward-model", "/dev/zero"], "clear")
    train("--reward-model garbage", ["--rule", "rlhf", "--reward-model",
                                     str(write(tmp / "rm.pt", os.urandom(999)))], "clear")
    train("--data-root on ring8 (unused)", ["--data-root", str(tmp / "nowhere")], "any")
    # --out paths
    afile = write(tmp / "a_file", b"keep")
    for name, path in [("a file", str(afile)), ("under a file", f"{afile}/x"),
                       ("/dev/null", "/dev/null"), ("/proc", "/proc/ganlab"), ("/sys", "/sys/x"),
                       ("empty", ""), ("blank", "  "), ("name 300 long", str(tmp / ("n" * 300))),
                       ("path 5000 long", str(tmp / "/".join(["p" * 200] * 25)))]:
        train(f"--out {name}", ["--out", path], "clear")
    # --set
    for item in ["=1", "x", "rule_options=1", "reinforce.sigma_start=nan",
                 "reinforce.sigma_start=NaN", "reinforce.sigma_start=abc",
                 "reinforce.sigma_start=Infinity", "reinforce.bogus=1", "bogus.x=1", "bogus=1",
                 "g_hidden=[]", "g_hidden=[1e9]", "g_hidden=[0]", "g_hidden=\"abc\"",
                 "g_hidden=" + json.dumps([8] * 100_000), "seed=-1", "steps=1e400",
                 "batch_size=true", "batch_size=2.5", "data=folder", "image_size=100000",
                 "latent_dim=0", "g_opt.lr=-1", "g_opt=1", "g_opt.bogus=1", "d_steps=1000",
                 "max_snapshots=1", "rule=rlhf", "reinforce.k=0", "reinforce.k=100000",
                 "reinforce.reward=bogus", "rlhf.kl_weight=-2", "ema_samples=2",
                 "steps=" + "9" * 5000, "x=" + "[" * 10_000 + "]" * 10_000, "=" * 3,
                 "g_hidden=" + json.dumps([4096] * 64)]:
        train(f"--set {item[:30]!r}", ["--set", item], "clear")
    # --config files
    configs = {
        "garbage_bytes": os.urandom(512), "empty": b"", "not_an_object": b"[1, 2]",
        "null": b"null", "5000_digit_int": b'{"steps": ' + b"9" * 5000 + b"}",
        "deep_nesting": b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        "huge_layer_list": json.dumps({"g_hidden": [8] * 200_000}).encode(),
        "wide_layers_many": json.dumps({"g_hidden": [4096] * 100, "steps": 2}).encode(),
        "unknown_keys": b'{"bogus": 1}', "wrong_type_steps": b'{"steps": "10"}',
        "wrong_type_layers": b'{"g_hidden": "abc"}', "wrong_type_opt": b'{"g_opt": [1]}',
        "wrong_type_rule_opts": b'{"reinforce": 3}', "rule_null": b'{"rule": null}',
        "nan_lr": b'{"g_opt": {"lr": NaN}}', "bom_utf8": b'\xef\xbb\xbf{"steps": 2}',
        "utf16": '{"steps": 2}'.encode("utf-16"), "rule_options_key": b'{"rule_options": []}',
        "data_root_number": b'{"data": "folder", "data_root": 5}',
        "huge_string": json.dumps({"data": "x" * 10**6}).encode(),
        "float_steps": b'{"steps": 2.0}', "bool_seed": b'{"seed": true}',
    }
    for name, data in configs.items():
        path = write(tmp / "configs" / f"{name}.json", data)
        train(f"--config {name}", ["--config", str(path)], "clear", base=())
    for name, path in [("a folder", str(tmp)), ("missing", str(tmp / "nope.json")),
                       ("/dev/null", "/dev/null"), ("/dev/zero", "/dev/zero")]:
        train(f"--config {name}", ["--config", path], "clear", base=())
    fifo = tmp / "config_fifo.json"
    os.mkfifo(fifo)
    train("--config a FIFO", ["--config", str(fifo)], "clear", base=())
    train("--config + --resume", ["--config", str(write(tmp / "ok.json", b"{}")),
                                  "--resume", str(ckpt)], "clear")
    # --resume
    train("--resume missing", ["--resume", str(tmp / "nope.safetensors")], "clear")
    train("--resume a folder", ["--resume", str(tmp)], "clear")
    train("--resume an arena", ["--resume", str(arena)], "clear")
    train("--resume --seed changed", ["--resume", str(ckpt), "--seed", "5"], "clear")
    train("--resume no --steps", ["--resume", str(ckpt)], "clear", base=())
    train("--resume --steps fewer than done", ["--resume", str(ckpt), "--steps", "1"], "any")
    # GANLAB_TORCH_THREADS
    for v in ["99999", "0", "-1", "abc", "", "1e3", "٣"]:
        train(f"GANLAB_TORCH_THREADS={v!r}", [], "clear", env={"GANLAB_TORCH_THREADS": v})
    # other subcommands. A file output is never a real device: a writer that replaces
    # its target atomically would replace /dev/null itself when run as root.
    fifo_out = tmp / "out_fifo"
    os.mkfifo(fifo_out)
    s = lambda *a: ["sample", str(ckpt), *a]  # noqa: E731

    def other(name, argv, expect, outputs=()):
        cases.append(Case(name, argv, expect, outputs))

    for v in INT_BAD:
        other(f"sample/--n {v[:12]!r}", s("--n", v, "--out", str(tmp / "s.png")), "clear")
        other(f"eval/--n {v[:12]!r}", ["eval", str(ckpt), "--n", v], "clear")
        other(f"sample/--seed {v[:12]!r}", s("--n", "4", "--seed", v, "--out",
                                             str(tmp / "s2.png")), "any" if v == "0" else "clear")
    for name, path in [("a folder", str(tmp)), ("trailing slash", f"{tmp}/x/"),
                       ("a FIFO", str(fifo_out)), ("/proc", "/proc/x.png"), ("empty", ""),
                       ("under a file", f"{afile}/s.png"), ("name 300 long", str(tmp / ("n" * 300)))]:
        other(f"sample/--out {name}", s("--n", "4", "--out", path), "clear")
    other("sample/arena", ["sample", str(arena), "--out", str(tmp / "a.png")], "clear")
    for v in FLOAT_BAD + ["51", "1e-300"]:
        other(f"animate/--fps {v[:12]!r}", ["animate", str(ckpt), "--fps", v, "--out",
                                            str(tmp / "a.gif")], "clear")
    for name, path in [("png", str(tmp / "a.png")), ("folder", str(tmp)), ("a FIFO", str(fifo_out))]:
        other(f"animate/--out {name}", ["animate", str(ckpt), "--out", path], "clear")
    other("animate/empty folder", ["animate", str((tmp / "emptyrun").mkdir() or tmp / "emptyrun"),
                                   "--out", str(tmp / "b.gif")], "clear")
    for name, argv in [("no --arm", ["extract", str(arena), "--out", str(tmp / "e.safetensors")]),
                       ("unknown arm", ["extract", str(arena), "--arm", "x", "--out",
                                        str(tmp / "e.safetensors")]),
                       ("empty arm", ["extract", str(arena), "--arm", "", "--out",
                                      str(tmp / "e.safetensors")]),
                       ("a run", ["extract", str(ckpt), "--arm", "bce", "--out",
                                  str(tmp / "e.safetensors")]),
                       ("--out folder", ["extract", str(arena), "--arm", "bce", "--out", str(tmp)]),
                       ("--out a FIFO", ["extract", str(arena), "--arm", "bce", "--out",
                                         str(fifo_out)])]:
        other(f"extract/{name}", argv, "clear")
    for name, path in [("missing", str(tmp / "none")), ("folder", str(tmp)),
                       ("/dev/zero", "/dev/zero"), ("empty", "")]:
        other(f"info/{name}", ["info", path], "clear")
    # compare / sweep (serial backend, ring8, 2 steps)
    cmp = lambda *a: ["compare", *ring, "--steps", "2", "--warmup-steps", "0",  # noqa: E731
                      "--backend", "serial", *a]
    for v in ["0", "-1", "101", str(2**64), "abc"]:
        other(f"compare/--seeds {v!r}", cmp("--seeds", v, "--out", out()), "clear")
    for v in ["bce", "bce,bogus", ",", "", "reinforce:sigma_start=nan", "reinforce:bogus=1",
              "bce,reinforce:sigma_start", "bce,reinforce:sigma_start=1e999", "bce:x=1,bce"]:
        other(f"compare/--rules {v!r}", cmp("--rules", v, "--out", out()), "clear")
    for v in ["-1", str(2**64), "abc", "1e3"]:
        other(f"compare/--warmup-steps {v!r}", cmp("--warmup-steps", v, "--out", out()), "clear")
    for v in ["0", "-1", "99999", "abc"]:
        other(f"compare/--workers {v!r}", ["compare", *ring, "--steps", "2", "--workers", v,
                                           "--out", out()], "clear")
    other("compare/--address without ray", cmp("--address", "auto", "--out", out()), "clear")
    other("compare/--backend bogus", ["compare", *ring, "--backend", "bogus", "--out", out()],
          "clear")
    other("compare/--seed max + seeds", cmp("--seed", str(2**31 - 1), "--seeds", "2", "--out",
                                            out()), "clear")
    sw = lambda *a: ["sweep", *ring, "--steps", "2", "--warmup-steps", "0", "--seeds", "1",  # noqa: E731
                     "--backend", "serial", *a]
    for v in ["lr=", "lr=abc", "bogus=1,2", "lr=nan", "=1", "lr", "lr=1,1", "lr=-1,1",
              "seed=" + ",".join(map(str, range(5000))), "lr=1e-3;lr=1e-4", ";", "g_hidden=[8],[0]",
              "lr=" + "9" * 5000, "steps=0,1"]:
        other(f"sweep/--grid {v[:24]!r}", sw("--grid", v, "--out", out()), "clear")
    other("sweep/--seeds 0", ["sweep", *ring, "--steps", "2", "--seeds", "0", "--out", out()],
          "clear")
    # feedback simulate / reward train
    db = str(tmp / "prefs.sqlite")
    fs = lambda *a: ["feedback", "simulate", "--from", str(ckpt), "--db", db, *a]  # noqa: E731
    for name, argv in [("--pairs 0", fs("--oracle", "upper", "--pairs", "0")),
                       ("--pairs huge", fs("--oracle", "upper", "--pairs", str(2**64))),
                       ("--noise nan", fs("--oracle", "upper", "--noise", "nan")),
                       ("--noise -1", fs("--oracle", "upper", "--noise", "-1")),
                       ("--noise inf", fs("--oracle", "upper", "--noise", "inf")),
                       ("--best-of 3", fs("--oracle", "upper", "--best-of", "3")),
                       ("--oracle bogus", fs("--oracle", "bogus")),
                       ("--oracle empty", fs("--oracle", "")),
                       ("--oracle angle:nan", fs("--oracle", "angle:nan")),
                       ("--oracle angle:abc", fs("--oracle", "angle:abc")),
                       ("--oracle thick on 2-D", fs("--oracle", "thick")),
                       ("--oracle digit:99 on 2-D", fs("--oracle", "digit:99")),
                       ("--from arena", ["feedback", "simulate", "--from", str(arena), "--db", db,
                                         "--oracle", "upper"])]:
        other(f"feedback/{name}", argv, "clear")
    for name, path in [("a folder", str(tmp)), ("a FIFO", str(fifo_out)),
                       ("garbage file", str(write(tmp / "g.sqlite", os.urandom(4096)))),
                       ("under a file", f"{afile}/p.sqlite"), ("/proc", "/proc/p.sqlite")]:
        other(f"feedback/--db {name}", fs("--oracle", "upper", "--pairs", "2", "--db", path),
              "clear")
    rt = lambda *a: ["reward", "train", *a]  # noqa: E731
    for name, argv in [("empty db", rt("--db", str(tmp / "new.sqlite"), "--out", str(tmp / "r.pt"))),
                       ("garbage db", rt("--db", str(tmp / "g.sqlite"), "--out", str(tmp / "r.pt"))),
                       ("--db folder", rt("--db", str(tmp), "--out", str(tmp / "r.pt"))),
                       ("--out folder", rt("--db", db, "--out", str(tmp))),
                       ("--out a FIFO", rt("--db", db, "--out", str(fifo_out))),
                       ("--features bogus", rt("--db", db, "--features", "bogus", "--out",
                                               str(tmp / "r.pt"))),
                       ("--judge nobody", rt("--db", db, "--judge", "nobody", "--out",
                                             str(tmp / "r.pt"))),
                       ("--data bogus", rt("--db", db, "--data", "bogus", "--out", str(tmp / "r.pt")))]:
        other(f"reward/{name}", argv, "clear")
    # the parser itself
    for name, argv in [("no command", []), ("unknown command", ["bogus"]),
                       ("--help-ish", ["train", "--out"]), ("unknown flag", ["info", "x", "--zz"])]:
        other(f"parser/{name}", argv, "clear")
    return cases


# -- running and counting -------------------------------------------------------------
class Hang(BaseException):   # not Exception: code under test must not swallow it
    pass


def _on_alarm(*_):
    raise Hang()


@contextlib.contextmanager
def _env(changes: dict):
    before = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _alarm_main_thread(timeout: float) -> threading.Timer:
    """SIGALRM sent to the main thread itself: alarm() may land on another thread, and
    then a main thread blocked in a system call (opening a FIFO) is never woken."""
    main_id = threading.main_thread().ident
    timer = threading.Timer(timeout, signal.pthread_kill, (main_id, signal.SIGALRM))
    timer.daemon = True
    timer.start()
    return timer


def run_case(case: Case, timeout: int) -> tuple[str, str]:
    err, out = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _on_alarm)
    timer = _alarm_main_thread(timeout)
    try:
        with _env(case.env), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(case.argv)
    except Hang:
        return "hang", "timed out"
    except BaseException as exc:   # noqa: BLE001 - counting is the point
        return "trace", f"{type(exc).__name__}: {exc}"[:200]
    finally:
        timer.cancel()
    return classify(case, rc, err.getvalue())


def classify(case: Case, rc: int, text: str) -> tuple[str, str]:
    lines = [ln for ln in text.strip().splitlines()
             if not ln.startswith(("note: ", "skipped ", "["))]
    if "Traceback" in text:
        return "trace", text.strip().splitlines()[-1][:200]
    if rc == 0:
        missing = [o for o in case.outputs if not os.path.isfile(o) or not os.path.getsize(o)]
        if missing:
            return "silent", f"exit 0 but {Path(missing[0]).name} is missing or empty"
        if case.expect == "clear":
            return "silent", "exit 0 on a bad input"
        if case.expect == "skip" and "skipped " not in text:
            return "silent", "exit 0 without naming the skipped files"
        skipped = [ln for ln in text.splitlines() if ln.startswith("skipped ")]
        return "ok", skipped[0] if skipped else ""
    if rc == 2 and len(lines) == 1 and lines[0].startswith("error:"):
        if case.expect in ("ok", "skip"):
            return "refused", lines[0][:200]
        return "clear", lines[0]
    return "other", f"rc {rc}: {text.strip()[-300:]}"


def _files(folder: Path) -> set:
    return set(folder.rglob("*"))


def _make_checkpoints(tmp: Path) -> tuple[Path, Path]:
    ckpt_dir = tmp / "ckpt"
    ring = ["--data", "ring8", "--steps", "4", "--eval-every", "0", "--sample-every", "2"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", *ring, "--out", str(ckpt_dir)]) == 0
        assert main(["compare", *ring, "--warmup-steps", "0", "--backend", "serial",
                     "--out", str(tmp / "arena")]) == 0
    run = next(ckpt_dir.glob("*.safetensors"))
    arena = next((tmp / "arena").rglob("arena.safetensors"))
    return run, arena


COLS = ["tried", "ok", "clear", "trace", "other", "silent", "refused", "hang", "files"]


def main_bench() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--only", choices=["data", "flags"])
    ap.add_argument("--show", type=int, default=40, help="unexpected outcomes to print")
    ap.add_argument("--messages", action="store_true", help="print every clear message")
    ap.add_argument("--slow", type=float, default=5.0, help="name cases slower than this")
    ap.add_argument("--verbose", action="store_true", help="name each case as it starts")
    ap.add_argument("--max-memory-gb", type=float, default=10,
                    help="address-space limit: a case that reads /dev/zero or builds a huge "
                         "network fails with MemoryError (counted) instead of swapping")
    args = ap.parse_args()
    limit = int(args.max_memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    t0 = time.perf_counter()
    table: dict[str, Counter] = {}
    wrong, messages, slow = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "runs").mkdir()
        run, arena = _make_checkpoints(tmp)
        cases = []
        if args.only != "flags":
            cases += data_cases(tmp)
        if args.only != "data":
            cases += flag_cases(tmp, run, arena)
        for case in cases:
            group = case.name.split("/")[0]
            before = _files(tmp)
            if args.verbose:
                print(f"... {case.name}", file=sys.__stderr__, flush=True)
            start = time.perf_counter()
            verdict, detail = run_case(case, args.timeout)
            if time.perf_counter() - start > args.slow:
                slow.append((case.name, time.perf_counter() - start, verdict))
            row = table.setdefault(group, Counter())
            row["tried"] += 1
            row[verdict] += 1
            created = {p for p in _files(tmp) - before if p.is_file()}
            if verdict not in ("ok",) and created:
                row["files"] += len(created)
                detail += f" (left {len(created)} file(s))"
            if verdict not in ("ok", "clear"):
                wrong.append((case.name, verdict, detail))
            if verdict in ("clear", "ok") and (args.messages or case.name.startswith("data/")):
                messages.append((case.name, detail or "ok"))
        for p in tmp.rglob("*"):   # chmod 0 files: let the temp folder be removed
            with contextlib.suppress(OSError):
                if not p.is_symlink():
                    p.chmod(0o700)
    total = sum(table.values(), Counter())
    if not Path("/dev/null").is_char_device():
        print("WARNING: /dev/null is no longer a device: a case replaced it")
    print(f"{total['tried']} inputs, {time.perf_counter() - t0:.0f} s")
    print(f"{'group':<10}" + "".join(f"{c:>8}" for c in COLS))
    for group, row in table.items():
        print(f"{group:<10}" + "".join(f"{row[c]:>8}" for c in COLS))
    print(f"{'all':<10}" + "".join(f"{total[c]:>8}" for c in COLS))
    print(f"unexpected outcomes: {len(wrong)}")
    for name, verdict, detail in wrong[:args.show]:
        print(f"  {name}: {verdict}: {detail}")
    print(f"slower than {args.slow:g} s: " + (", ".join(
        f"{name} ({sec:.0f} s, {verdict})" for name, sec, verdict in slow) or "none"))
    print("data-root outcomes:")
    for name, detail in messages:
        print(f"  {name}: {detail[:160]}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main_bench())
