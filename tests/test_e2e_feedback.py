"""End-to-end: the Feedback page in a real browser. Judge 10 pairs (buttons and the
keyboard), undo one, reload: the count is 9 and the database holds exactly those.
Fixtures: tests/conftest.py."""
from __future__ import annotations

from core.config import TrainConfig
from core.preferences import PreferenceStore
from core.trainer import Trainer


def progress_text(page) -> str:
    return page.locator("[data-testid='stProgress']").first.inner_text()


def wait_count(page, n: int) -> None:
    page.wait_for_function(
        "n => { const e = document.querySelector(\"[data-testid='stProgress']\");"
        " return e && e.innerText.includes('person: ' + n + ' judgements'); }", arg=n)


def test_judge_ten_undo_one_reload_shows_nine(server, page):
    url, root = server
    trainer = Trainer(TrainConfig(g_hidden=(32,), d_hidden=(32,), batch_size=8,
                                  eval_every=0))
    trainer.step()
    trainer.save_checkpoint(root / "checkpoints" / "digits" / "step_1.pt")
    page.goto(f"{url}/feedback")
    wait_count(page, 0)
    for i in range(10):
        if i < 7:
            page.locator(".st-key-fb_left button" if i % 2 else ".st-key-fb_right button").click()
        else:   # the keyboard shortcuts: Left / Right arrows
            page.keyboard.press("ArrowLeft")
        wait_count(page, i + 1)
    page.locator(".st-key-fb_undo button").click()
    wait_count(page, 9)
    page.reload()
    wait_count(page, 9)
    store = PreferenceStore(root / "checkpoints" / "preferences.sqlite")
    assert [j.choice for j in store.judgements()] == (["right", "left"] * 4)[:7] + ["left"] * 2
    store.close()
