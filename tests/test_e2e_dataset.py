"""End-to-end in chromium: a person types the criterion they judge by, judges, undoes
one click, sees the counter follow, and downloads the pairs as a Parquet dataset whose
rows carry that criterion. Fixtures: tests/conftest.py."""
from __future__ import annotations

import io

import pyarrow.parquet as pq

from core.engine.config import TrainConfig
from core.engine.trainer import Trainer

CRITERION = "Which one is rounder?"


def counter_says(page, text: str) -> None:
    page.wait_for_function(
        "t => { const e = document.querySelector(\"[data-testid='stProgress']\");"
        " return !!e && e.innerText.includes(t); }", arg=text)


def test_type_a_criterion_judge_undo_count_and_export(server, page):
    url, root = server
    trainer = Trainer(TrainConfig(g_hidden=(16,), d_hidden=(16,), batch_size=8, eval_every=0))
    trainer.step()
    trainer.save_checkpoint(root / "checkpoints" / "ds_digits" / "step_1.pt")
    page.goto(f"{url}/feedback")
    page.locator(".st-key-fb_left button").wait_for()
    box = page.locator(".st-key-fb_criterion_mnist5k input")
    box.click()
    box.fill(CRITERION)          # a criterion of one's own: typed, not picked
    box.press("Enter")
    page.get_by_text(CRITERION).first.wait_for()      # shown above the pair
    counter_says(page, "person: 0 pairs")
    for n in range(1, 4):
        page.locator(".st-key-fb_right button").click()
        counter_says(page, f"person: {n} pairs")
    page.locator(".st-key-fb_undo button").click()
    counter_says(page, "person: 2 pairs")
    with page.expect_download() as info:
        page.locator(".st-key-fb_parquet button").first.click()
    table = pq.read_table(io.BytesIO(open(info.value.path(), "rb").read()))
    assert table.num_rows == 2
    assert set(table.column("prompt").to_pylist()) == {CRITERION}
    assert table.column("label_0").to_pylist() == [0.0, 0.0]   # right was better, twice
