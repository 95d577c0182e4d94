"""The annotate experiment's checks before anything is built or compiled, and the host warning."""

import pytest

from tests import app_toys
from yiplearn import errors
from yiplearn.app import serve


def _config(**overrides):
  c = app_toys.config(app_toys.assets_images())
  c.checkpoint_dir = '/nowhere/best'
  c.update_from_flattened_dict(overrides)
  return c


@pytest.mark.parametrize(
  'overrides,message',
  [
    ({'methods': ('frozen', 'oracle')}, "^methods='oracle': expected methods among"),
    ({'method': 'pi'}, r"^method='pi': expected one of methods=\['frozen', 'pi_mi'\]"),
    ({'classes': ('background',)}, r"^classes=\['background'\]: expected 2 class names"),
    ({'model.widths': (4, 8, 16, 32, 64, 128)}, r"^image 'img0.png' shape=\[32, 32\]: expected sides divisible by 64"),
    ({'images.source': 'camera'}, "^images.source='camera': expected 'folder' or 'dataset'"),
    ({'images.folder': '/nowhere'}, "^images.folder='/nowhere': expected a directory"),
    ({}, "^checkpoint_dir='/nowhere/best': expected a pre-training run's best/ directory"),
  ],
)  # fmt: skip
def test_build_refuses_bad_configs(tmp_path, overrides, message):
  with pytest.raises(errors.UserError, match=message):
    serve.build(_config(**overrides), str(tmp_path))


def test_host_warning():
  assert serve.host_warning('127.0.0.1') is None and serve.host_warning('localhost') is None
  assert serve.host_warning('0.0.0.0').startswith("warning: host='0.0.0.0' serves the app")
