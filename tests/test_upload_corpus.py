"""The Checkpoints page's upload with a corpus of hostile and broken files (the kind
bench/fuzz_checkpoints.py feeds the CLI): each gets a clear message on the page, no
exception, and a run training in the same server keeps training meanwhile."""
from __future__ import annotations

import io
import os
import pickle
import struct
import threading

import torch
from helpers import put
from PIL import Image
from test_app import app_env, checkpoints_page, registry, tiny_trainer  # noqa: F401

from core.io.checkpoint import to_bytes, to_pt_bytes


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ganlab_upload_pwned",))


def _flip(data: bytes, where: int) -> bytes:
    buf = bytearray(data)
    buf[where] ^= 0x10
    return bytes(buf)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


def _torch_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def corpus(state: dict) -> dict:
    """upload name -> bytes; every one must be refused."""
    good, old = to_bytes(state), to_pt_bytes(state)
    header = struct.unpack("<Q", good[:8])[0]   # the JSON header's length
    return {
        "zero_bytes.safetensors": b"",
        "cut_10.safetensors": good[:len(good) // 10],
        "cut_50.safetensors": good[:len(good) // 2],
        "cut_99.safetensors": good[:len(good) * 99 // 100],
        "flip_in_header.safetensors": _flip(good, 8 + header // 2),
        "flip_in_data.safetensors": _flip(good, 8 + header + 5),
        "random.safetensors": bytes(range(256)) * 16,
        "png_renamed.pt": _png(),
        "header_2^63.safetensors": struct.pack("<Q", 2**63) + b"{}",
        "header_past_end.safetensors": struct.pack("<Q", 10**9) + b"{}",
        "nan_weights.safetensors": to_bytes(put(state, ("generator", "layers.0.bias"),
                                                 torch.full((128,), float("nan")))),
        "short_optimiser_state.pt": to_pt_bytes(put(
            state, ("g_optimizer", "state", 0, "exp_avg"), torch.zeros(10))),
        "cut_old.pt": old[:len(old) // 2],
        "pickled_callable.pt": pickle.dumps({"x": Evil()}),
        "foreign_torch_file.pt": _torch_save({"weights": torch.zeros(3)}),
    }


def _steps_past(trainer, target: int) -> threading.Event:
    """Set once the background run has trained past `target` steps."""
    done = threading.Event()
    trainer.on_step.append(lambda t: done.set() if t.step_count > target else None)
    return done


def test_hostile_uploads_are_refused_clearly_while_a_run_trains(app_env):  # noqa: F811
    state = tiny_trainer(steps=2).state_dict()
    live = tiny_trainer(steps=0)
    registry().start(live)
    at = checkpoints_page()
    for name, data in corpus(state).items():
        before = live.step_count
        at.file_uploader(key="upload").upload(name, data).run()
        assert not at.exception, (name, at.exception)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith("Not loaded: "), (name, errors)
        assert "Traceback" not in errors[0] and "\n" not in errors[0].strip(), errors[0]
        assert not at.success, name
        assert _steps_past(live, before).wait(30), f"the live run stopped after {name}"
        at.file_uploader(key="upload").set_value(None)
    assert not os.path.exists("/tmp/ganlab_upload_pwned")
    assert live.status.state == "running" and live.error is None
