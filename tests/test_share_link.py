"""A link that reproduces a run (ui/share_link.py): the whole config and seed in the
URL; opening it offers the run; bad or hostile links say why and start nothing."""
from __future__ import annotations

import base64
import json
import zlib

import pytest
from streamlit.testing.v1 import AppTest
from test_app import ROOT, TIMEOUT, app_env, new_app, registry  # noqa: F401

from core.base.validate import ConfigError
from core.engine.config import preset
from ui.share_link import PARAM, config_of, token


def _token_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


def test_a_config_survives_the_link_exactly():
    cfg = preset("recommended", data="mnist5k", seed=1234, rule="reinforce", steps=777,
                 batch_size=48, **{"reinforce.samples_per_z": 6})
    assert config_of(token(cfg)) == cfg
    assert len(token(cfg)) < 2000


@pytest.mark.parametrize("bad, says", [
    ("", "1 to 8,000"),
    ("x" * 9000, "9,000 characters"),
    ("!!!not base64!!!", "cannot be read"),
    (_token_of(b"not json"), "cannot be read"),
    (_token_of(b"{\"seed\": NaN}"), "cannot be read"),
    (_token_of(b" " * 1_000_000), "inflates past"),
    (_token_of(json.dumps({"seed": -5}).encode()), "seed"),
    (_token_of(json.dumps({"data": "../../etc"}).encode()), "data"),
    (_token_of(json.dumps({"cuda_evil": 1}).encode()), "unknown config field"),
])
def test_bad_or_hostile_links_say_what_is_wrong(bad, says):
    with pytest.raises(ConfigError, match=says):
        config_of(bad)


def test_copy_the_link_open_it_in_another_tab_and_start_the_same_run(app_env):  # noqa: F811
    at = new_app()
    at.selectbox(key="cfg_data").set_value("ring8").run()
    at.number_input(key="cfg_seed").set_value(77).run()
    at.button(key="btn_start").click().run()
    (first,) = registry().runs()
    first.stop()
    shared = token(first.cfg)
    other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    other.query_params[PARAM] = shared
    other.run()
    assert any("A shared run" in m.value and "seed 77" in m.value for m in other.markdown)
    other.button(key="btn_start_shared").click().run()
    assert not other.exception, other.exception
    second = next(t for t in registry().runs() if t is not first)
    second.stop()
    assert second.cfg == first.cfg and second.run_id != first.run_id
    hostile = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    hostile.query_params[PARAM] = _token_of(json.dumps({"batch_size": 10**9}).encode())
    hostile.run()
    assert any("does not hold a valid run" in e.value and "out of range" in e.value
               for e in hostile.error)
    assert "btn_start_shared" not in [b.key for b in hostile.button]   # nothing to start
