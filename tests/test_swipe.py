"""The one snapshot step on the Compare page and the A/B swipe, without a browser:
grid_images (a grid back to samples), the swipe's payload (each picture sent once per
element), the fine-tune panel at a past step, and compare_view.samples driving the
swipe (AppTest). The browser test is tests/test_e2e_slider.py."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from core.engine.samples import Snapshot, SnapshotStore, grid_images, grid_png
from ui import finetune_view, swipe


@pytest.mark.parametrize("shape,n", [((1, 28, 28), 64), ((3, 8, 8), 64), ((1, 28, 28), 5)])
def test_grid_images_gives_back_the_samples_of_a_grid(shape, n):
    x = torch.rand(n, shape[0] * shape[1] * shape[2]) * 2 - 1
    back = grid_images(grid_png(x, shape), shape)
    assert back.shape == x.shape
    assert (back - x).abs().max() <= 1 / 255 + 1e-6          # 8-bit exact
    assert torch.equal(grid_images(grid_png(x, shape), shape, n=3), back[:3])


def test_the_swipe_sends_each_picture_once_per_element():
    one, two = grid_png(torch.zeros(4, 784), (1, 28, 28)), grid_png(torch.ones(4, 784), (1, 28, 28))
    sent: dict = {}
    first = swipe.payload("k", swipe.Side("A: bce", one), swipe.Side("B: rl", two), sent)
    assert first["a"]["src"].startswith("data:image/png;base64,") and "src" in first["b"]
    assert first["a"]["label"] == "A: bce" and first["a"]["key"] != first["b"]["key"]
    again = swipe.payload("k", swipe.Side("A: bce", one), swipe.Side("B: rl", two), sent)
    assert "src" not in again["a"] and "src" not in again["b"]   # only the digests
    moved = swipe.payload("k", swipe.Side("A", two), swipe.Side("B", two), sent)
    assert "src" in moved["a"] and "src" not in moved["b"]
    asked = swipe.payload("k", swipe.Side("A", two), swipe.Side("B", two), sent, resync=1)
    assert "src" in asked["a"] and "src" in asked["b"]          # a remounted element


def test_the_fine_tune_panel_reads_a_past_step_from_its_grid():
    shape = (1, 28, 28)
    store = SnapshotStore()
    x = torch.rand(64, 784) * 2 - 1
    store.add(Snapshot(0, grid_png(-x, shape)))
    store.add(Snapshot(40, grid_png(x, shape)))
    arm = SimpleNamespace(snapshots=store)
    tuned, step = finetune_view._tuned_at(arm, 50, shape)    # the latest at or before
    assert step == 40 and tuned.shape == (finetune_view.SHOWN, 784)
    assert (tuned - x[:finetune_view.SHOWN]).abs().max() <= 1 / 255 + 1e-6
    store.add(Snapshot(80, b"\x89PNG\r\n\x1a\nnot a grid"))
    assert finetune_view._tuned_at(arm, 80, shape) is None   # the grids say why


def test_one_step_drives_every_arm_grid_and_the_swipe():
    pytest.importorskip("mlxtend")
    from streamlit.testing.v1 import AppTest

    from core.engine.arena import Arena
    from core.engine.config import preset

    arena = Arena(preset("recommended", data="mnist5k", g_hidden=[8], d_hidden=[8],
                         batch_size=16, sample_every=2, eval_every=0, device="cpu"),
                  ["bce", "reinforce"])
    shape = arena.data.image_shape
    for i, arm in enumerate(arena.arms.values()):
        for step in (0, 4):
            arm.snapshots.add(Snapshot(step, grid_png(torch.full((8, 784), step / 4 - i / 2),
                                                      shape)))
    script = ("import streamlit as st\nfrom ui import compare_view\n"
              "st.session_state['shown'] = compare_view.samples(st.session_state['arena'])\n")
    at = AppTest.from_string(script, default_timeout=60)
    at.session_state["arena"] = arena
    at.run()
    assert not at.exception, at.exception

    def shown() -> tuple[list[str], dict]:
        captions = [img.proto.imgs[0].caption for img in at.get("image")]
        (sw,) = [c for c in at.get("bidi_component") if c.proto.id.endswith("cmp_swipe")]
        return captions, json.loads(sw.proto.json)

    captions, sent = shown()
    assert at.session_state["shown"] is None                 # following the latest
    assert captions == ["bce (bce) at step 4", "reinforce (reinforce) at step 4"]
    assert (sent["a"]["label"], sent["b"]["label"]) == ("A: bce · step 4",
                                                        "B: reinforce · step 4")
    at.checkbox(key=f"cmp_follow_{arena.run_id}").uncheck().run()
    at.select_slider(key=f"cmp_snap_{arena.run_id}").set_value(0).run()
    assert not at.exception, at.exception
    captions, sent = shown()
    assert at.session_state["shown"] == 0                    # for the fine-tune panel
    assert captions == ["bce (bce) at step 0", "reinforce (reinforce) at step 0"]
    assert (sent["a"]["label"], sent["b"]["label"]) == ("A: bce · step 0",
                                                        "B: reinforce · step 0")
