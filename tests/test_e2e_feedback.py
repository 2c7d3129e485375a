"""End-to-end: the Feedback page in a real browser. Judge 10 pairs (buttons and the
keyboard), undo one, reload: the count is 9 and the database holds exactly those.
Fixtures: tests/conftest.py."""
from __future__ import annotations

import browser as b
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


def test_preferences_to_fine_tune_comparison_in_the_browser(server, page):
    """The flow with an oracle standing in for the person: its judgements are in the
    database; Train reward model, then Fine-tune with these preferences opens the
    Compare page with bce, reinforce and rlhf training from the judged generator."""
    from core.data import load_by_name
    from core.feedback import simulate
    from core.oracles import make_oracle

    url, root = server
    trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, batch_size=64, eval_every=0))
    for _ in range(20):
        trainer.step()
    trainer.save_checkpoint(root / "checkpoints" / "ring" / "step_20.pt")
    data = load_by_name("ring8")
    store = PreferenceStore(root / "checkpoints" / "preferences.sqlite")
    simulate(store, trainer.nets.G, data, make_oracle("upper", data), n=40, noise=0.1)
    store.close()
    page.goto(f"{url}/feedback")
    page.locator(".st-key-fb_source input").click()
    page.get_by_role("option", name="file ring/step_20.pt", exact=True).click()
    page.get_by_text("Which sample is better?").wait_for()
    page.locator(".st-key-fb_train button").first.click()
    page.get_by_text("held-out accuracy").first.wait_for()
    page.locator(".st-key-fb_finetune button").first.click()
    page.wait_for_url("**/compare?arena=*")
    page.get_by_text("bce vs reinforce vs rlhf", exact=False).first.wait_for()
    b.stop(page, "cmp_stop")
