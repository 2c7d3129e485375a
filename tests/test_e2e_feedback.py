"""End-to-end: the Feedback page in a real browser. Judge 10 pairs (buttons and the
keyboard), undo one, reload: the count is 9 and the database holds exactly those.
Fixtures: tests/conftest.py."""
from __future__ import annotations

import os
from pathlib import Path

import browser as b

from core.engine.config import TrainConfig
from core.engine.trainer import Trainer
from core.feedback.preferences import PreferenceStore


def progress_text(page) -> str:
    return page.locator("[data-testid='stProgress']").first.inner_text()


def wait_count(page, n: int) -> None:
    page.wait_for_function(
        "n => { const e = document.querySelector(\"[data-testid='stProgress']\");"
        " return e && e.innerText.includes('person: ' + n + ' pairs'); }", arg=n)


def judge_and_fine_tune(page, url, root, cfg, folder: str, oracle: str, pairs: int) -> None:
    """A briefly trained generator saved in `folder`, an oracle's judgements of its
    samples in the database, then on the Feedback page: Train reward model, Fine-tune
    with these preferences, and the Compare page opens."""
    from core.data.datasets import load_by_name
    from core.feedback.loop import simulate
    from core.feedback.oracles import make_oracle

    trainer = Trainer(cfg)
    for _ in range(20):
        trainer.step()
    trainer.save_checkpoint(root / "checkpoints" / folder / "step_20.pt")
    data = load_by_name(cfg.data)
    store = PreferenceStore(root / "checkpoints" / "preferences.sqlite")
    simulate(store, trainer.nets.G, data, make_oracle(oracle, data), n=pairs, noise=0.1)
    store.close()
    page.goto(f"{url}/feedback")
    page.locator(".st-key-fb_source input").click()
    page.get_by_role("option", name=f"file {folder}/step_20.pt", exact=True).click()
    page.locator(".st-key-fb_left button").wait_for()   # the pair is shown
    # ... of this generator (the page showed another's before the pick)
    page.get_by_text(f"samples from file {folder}/step_20.pt", exact=False).wait_for()
    # The page shows the database's latest reward-model job in every session, so the one
    # an earlier test trained (its chart, message and Fine-tune button) can still be
    # there: wait for this job's outcome, a message naming a file that was not there
    # before, or a new error message (the job failed: say why at once).
    models = root / "checkpoints" / "reward_models"
    files = [str(f) for f in models.glob("*.pt")]
    alerts = page.locator("[data-testid=stAlert]").all_inner_texts()
    page.locator(".st-key-fb_train button").first.click()
    outcome = page.wait_for_function(
        "([files, alerts]) => { for (const e of document.querySelectorAll('[data-testid=stAlert]')) {"
        " const t = e.innerText, m = t.match(/\\bSaved (\\S+\\.pt)/);"
        " if (m && !files.includes(m[1])) return {saved: m[1]};"
        " if (/\\b\\w+Error: /.test(t) && !alerts.includes(t)) return {error: t}; }"
        " return false; }", arg=[files, alerts]).json_value()
    assert "saved" in outcome, f"the reward model did not train: {outcome['error']}"
    assert Path(outcome["saved"]).is_file()
    page.get_by_text("held-out accuracy").first.wait_for()
    page.locator(".st-key-fb_finetune button").first.click()
    page.wait_for_url("**/compare?arena=*")


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
    url, root = server
    cfg = TrainConfig(data="ring8", latent_dim=2, batch_size=64, eval_every=0)
    judge_and_fine_tune(page, url, root, cfg, "ring", "upper", pairs=40)
    page.get_by_text("bce vs reinforce vs rlhf", exact=False).first.wait_for()
    b.stop(page, "cmp_stop")


def test_blind_test_with_the_keyboard(server, page):
    """Blind test: choose a base and a fine-tuned generator, judge pairs with the keys
    (Left, Right, Down = equal, S = skip, U = undo): the count and the verdict follow."""
    import torch

    url, root = server
    trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, batch_size=16, eval_every=0))
    trainer.step()
    trainer.save_checkpoint(root / "checkpoints" / "blind_base" / "step_1.pt")
    with torch.no_grad():
        trainer.nets.G.layers[-1].bias[1] += 50.0
    trainer.save_checkpoint(root / "checkpoints" / "blind_new" / "step_1.pt")
    page.goto(f"{url}/feedback")
    page.locator(".st-key-fb_mode").get_by_text("Blind test").click()
    b.select_option(page, "fb_base", "file blind_base/step_1.pt")
    b.select_option(page, "fb_new", "file blind_new/step_1.pt")
    page.get_by_text("One sample of file blind_base/step_1.pt", exact=False).wait_for()
    wait_blind(page, "0 blind judgements")
    page.get_by_text("No blind judgements yet.").wait_for()
    page.get_by_text("Which sample is better?").click()   # focus off the select boxes
    for n, key in enumerate(["ArrowLeft", "ArrowRight", "ArrowDown"], start=1):
        page.keyboard.press(key)
        wait_blind(page, f"{n} blind judgements")
    page.keyboard.press("s")                   # a skip is stored, not counted
    wait_blind(page, "3 blind judgements of a suggested 50 (1 skipped)")
    page.keyboard.press("u")                   # undo takes back the skip
    wait_blind(page, "3 blind judgements of a suggested 50", exact_end=True)
    page.keyboard.press("ArrowLeft")
    wait_blind(page, "4 blind judgements")
    page.get_by_text("Within noise:").wait_for()
    store = PreferenceStore(root / "checkpoints" / "preferences.sqlite")
    rows = store.blind_judgements()
    store.close()
    assert [j.choice for j in rows] == ["left", "right", "tie", "left"]
    assert {j.new for j in rows} == {"file blind_new/step_1.pt"}


def wait_blind(page, text: str, exact_end: bool = False) -> None:
    """Wait for the blind test's progress line to hold (or, exact_end, end with) text."""
    page.wait_for_function(
        "([t, end]) => { const e = document.querySelector(\"[data-testid='stProgress']\");"
        " const s = e ? e.innerText.trim() : ''; return end ? s.endsWith(t) : s.includes(t); }",
        arg=[text, exact_end])


def test_a_digit_fine_tune_shows_base_and_arms_on_the_same_z_in_the_browser(server, page):
    """Judge (an oracle of another kind than the reward model's features stands in for
    the person) -> Train reward model -> Fine-tune: the Compare page shows the base and a
    fine-tuned arm on the same z with each sample's nearest real image."""
    url, root = server
    cfg = TrainConfig(data="mnist5k", batch_size=32, eval_every=0, g_hidden=(64,),
                      d_hidden=(64,))
    judge_and_fine_tune(page, url, root, cfg, "digits", "digit:7@knn", pairs=60)
    page.get_by_text("Base vs fine-tuned, same z").wait_for()
    assert page.locator(".st-key-cmp_compared_only input").is_checked()   # the fine-tune
    page.get_by_text("the nearest real training image of each fine-tuned sample").wait_for()
    page.get_by_text("Median distance to the nearest real image: base").wait_for()
    if os.environ.get("SCREENSHOTS"):   # for a person to look at (not a check)
        page.get_by_text("Median distance to the nearest real image: base") \
            .scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(os.environ["SCREENSHOTS"], "finetune.png"))
    b.stop(page, "cmp_stop")
    # the next feedback round: the Feedback page opens on the arm, as round 1
    page.locator(".st-key-cmp_round_rlhf button").first.click()
    page.wait_for_url("**/feedback*")
    page.locator(".st-key-fb_left button").wait_for()
    page.get_by_text("· arm rlhf at step", exact=False).wait_for()   # the caption
    b.wait_input_value(page, "fb_round", 1)   # the sidebar's widget follows a moment later
    page.go_back()
    page.get_by_text("Base vs fine-tuned, same z").wait_for()
    # "Blind-test rlhf": the Feedback page's blind test, the arm against its own start
    page.locator(".st-key-cmp_blind_rlhf button").first.click()
    page.wait_for_url("**/feedback*")
    page.get_by_text("Which sample is better?").first.wait_for()
    page.get_by_text("arm rlhf · its start (step 20) and one of arena", exact=False).wait_for()
    if os.environ.get("SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["SCREENSHOTS"], "blind_arm.png"))
