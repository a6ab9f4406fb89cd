"""Our checkpoint format: atomic writes, weights_only loading, clear errors for foreign files."""
import argparse

import pytest
import torch

from gangealing.checkpoint import Checkpoint, CheckpointError, atomic_save, load_checkpoint, save_checkpoint


def _tiny_ckpt() -> Checkpoint:
    return Checkpoint(kind="generator", config={"generator": {"size": 8}}, state={"generator": {"w": torch.randn(3)}},
                      step=7, meta={"note": "x", "test": {"iters": 3}})


def test_round_trip_weights_only(tmp_path):
    ckpt = _tiny_ckpt()
    path = save_checkpoint(ckpt, tmp_path / "sub" / "c.pt")
    raw = torch.load(path, weights_only=True)  # must not need any allow-listed class
    assert raw["format"] == "gangealing" and raw["version"] == 1
    back = load_checkpoint(path)
    assert back.step == 7 and back.meta == ckpt.meta and back.config == ckpt.config
    assert torch.equal(back.state["generator"]["w"], ckpt.state["generator"]["w"])


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    atomic_save({"a": 1}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"a": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"a": 1}  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temporary left behind


@pytest.mark.parametrize(
    "obj, words",
    [
        ({"g_ema": {}, "t_ema": {}, "ll": {}}, "original GANgealing checkpoint"),
        ({"g_ema": {"style.1.weight": torch.zeros(1)}}, "rosinality"),
        ({"style.1.weight": torch.zeros(1)}, "bare StyleGAN2 generator state dict"),
        ({"foo": torch.zeros(1)}, "keys [foo]"),
        ([1, 2], "not a dict"),
    ],
)
def test_foreign_file_gives_one_clear_error(tmp_path, obj, words):
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert words in msg and "gangealing convert" in msg and len(msg.splitlines()) == 1


def test_namespace_pickle_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "orig.pt"
    torch.save({"g_ema": {}, "args": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError, match="gangealing convert"):
        load_checkpoint(path)


def test_missing_and_newer_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nope.pt")
    d = _tiny_ckpt().to_dict()
    d["version"] = 99
    torch.save(d, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "new.pt")


def _flip_a_byte_of_tensor_data(path):
    """Flip one byte inside the stored bytes of the largest tensor (torch's zip stores them uncompressed)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_checksum_catches_a_flipped_byte(tmp_path):
    ckpt = Checkpoint(kind="generator", config={"generator": {"size": 8}},
                      state={"generator": {"w": torch.randn(1000), "b": torch.zeros(3, dtype=torch.bfloat16)}})
    path = save_checkpoint(ckpt, tmp_path / "c.pt")
    assert len(torch.load(path, weights_only=True)["checksum"]["sha256"]) == 64
    load_checkpoint(path)
    _flip_a_byte_of_tensor_data(path)
    assert not torch.equal(torch.load(path, weights_only=True)["state"]["generator"]["w"], ckpt.state["generator"]["w"])
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(path)


def test_files_without_a_checksum_still_load(tmp_path):
    d = _tiny_ckpt().to_dict()
    del d["checksum"]  # as written before checksums existed
    atomic_save(d, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").step == 7
