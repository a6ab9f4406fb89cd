"""Released model names: downloaded once (here from a file:// URL), converted, cached, settings applied."""
import shutil

import pytest
import torch

from gangealing import pretrained
from gangealing.checkpoint import CheckpointError
from gangealing.predictor import Congealer


@pytest.fixture
def mirror(tmp_path, parity_dir, monkeypatch):
    """A file:// 'server' holding the original-format parity checkpoint as cat.pt and bicycle.pt, and an empty hub."""
    src = parity_dir / "checkpoint" / "checkpoint.pt"
    site = tmp_path / "site"
    site.mkdir()
    for name in ("cat", "bicycle"):
        shutil.copyfile(src, site / f"{name}.pt")
    monkeypatch.setenv(pretrained.URL_ENV, site.as_uri())
    monkeypatch.delenv(pretrained.CACHE_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return site


def test_released_name_downloads_converts_and_caches(mirror, tmp_path):
    cache = tmp_path / "torch_home" / "hub" / "checkpoints" / "gangealing"
    assert pretrained.cache_dir() == cache
    c = Congealer.from_checkpoint("cat", device="cpu")
    assert (c.iters, c.padding_mode) == (3, "border")  # the original's test settings for cat
    assert (cache / "cat.pt").is_file() and (cache / "cat.gangealing.pt").is_file()
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    first = c.align(x)

    (mirror / "cat.pt").unlink()  # second use: from the cache only
    (cache / "cat.pt").unlink()
    again = Congealer.from_checkpoint("cat", device="cpu")
    torch.testing.assert_close(again.align(x).grid, first.grid)
    assert again.meta["pretrained"]["name"] == "cat" and again.meta["test"]["num_heads"] == 1


def test_settings_per_model_and_overrides(mirror):
    c = Congealer.from_checkpoint("bicycle", device="cpu")
    assert (c.iters, c.padding_mode) == (3, "reflection")
    c = Congealer.from_checkpoint("bicycle", device="cpu", iters=1, padding_mode="border")
    assert (c.iters, c.padding_mode) == (1, "border")


def test_a_clustering_name_with_the_wrong_file_is_refused(mirror):
    shutil.copyfile(mirror / "cat.pt", mirror / "car.pt")  # car has 4 clusters; this file has 1
    with pytest.raises(CheckpointError, match="4 clusters"):
        Congealer.from_checkpoint("car", device="cpu")


def test_offline_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.URL_ENV, (tmp_path / "nowhere").as_uri())
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(pretrained.PretrainedUnavailable) as e:
        Congealer.from_checkpoint("dog", device="cpu")
    msg = str(e.value)
    assert "cannot download the released model 'dog'" in msg and "efrosgans.eecs.berkeley.edu" in msg
    assert str(tmp_path / "cache" / "dog.pt") in msg
    assert not any((tmp_path / "cache").glob("*"))  # no partial file left behind


def test_cli_reports_offline_error(tmp_path, monkeypatch, capsys):
    from gangealing.cli import main

    monkeypatch.setenv(pretrained.URL_ENV, (tmp_path / "nowhere").as_uri())
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "in").mkdir()
    assert main(["align", str(tmp_path / "in"), "--ckpt", "horse", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 1
    assert "cannot download the released model 'horse'" in capsys.readouterr().err


def test_original_checkpoint_path_and_names_list(parity_dir):
    c = Congealer.from_checkpoint(parity_dir / "checkpoint" / "checkpoint.pt", device="cpu")
    assert (c.input_size, c.flow_size, c.num_clusters) == (128, 64, 1)
    assert set(pretrained.PRETRAINED) == {"bicycle", "car", "cat", "cat_ssl_mix6", "celeba", "cub", "dog", "horse",
                                          "tvmonitor"}
    assert pretrained.url_for("cat").endswith("/cat.pt")
