"""Defaults < --config FILE.toml < command-line flags; unknown keys are one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnncli.config import Config, load_toml, resolve
from rnncli.errors import RnncliError

CONFIGS = Path(__file__).parent.parent / "configs"


def write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_defaults_file_and_flags_in_order(tmp_path):
    path = write(tmp_path, '[model]\nhidden = 13\nlayers = 3\n[train]\nlr = 0.01\n')
    config = resolve(path, {"layers": 2, "embed": None})
    assert config.model.hidden == 13  # from the file
    assert config.model.layers == 2  # the flag wins
    assert config.model.embed == Config().model.embed  # None means "not given"
    assert config.train.lr == 0.01


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "[model]\nhiden = 13\n")
    with pytest.raises(RnncliError, match=r"run\.toml.*hiden"):
        resolve(path)


def test_unknown_section_and_bad_types(tmp_path):
    with pytest.raises(RnncliError, match="unknown section"):
        resolve(write(tmp_path, "[optim]\nlr = 1\n"))
    with pytest.raises(RnncliError, match="hidden"):
        resolve(write(tmp_path, '[model]\nhidden = "big"\n'))
    with pytest.raises(RnncliError, match="cell"):
        resolve(None, {"cell": "transformer"})
    with pytest.raises(RnncliError, match="hidden"):
        resolve(None, {"hidden": 0})
    with pytest.raises(RnncliError, match="not valid TOML"):
        resolve(write(tmp_path, "[model\n"))
    with pytest.raises(RnncliError, match="not found"):
        resolve(tmp_path / "missing.toml")


def test_int_is_accepted_for_float_fields(tmp_path):
    assert resolve(write(tmp_path, "[train]\nlr = 1\n")).train.lr == 1.0


def test_resolved_config_round_trips_through_json():
    config = resolve(None, {"hidden": 13, "cell": "gru"})
    from rnncli.config import from_dict

    assert from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    resolve(path)


def test_default_toml_holds_the_defaults():
    assert resolve(CONFIGS / "default.toml") == Config()
    written = {section: set(keys) for section, keys in load_toml(CONFIGS / "default.toml").items()}
    assert written == {section: set(values) for section, values in Config().to_dict().items()}  # every key


def test_help_does_not_import_torch():
    code = "import sys, rnncli.cli; assert 'torch' not in sys.modules and 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
