"""gangealing.zoo (one registry for bench, demo and the Generators section) and `bench --model FILE=DATA`."""
import json

import pytest

from gangealing import zoo
from gangealing.cli import main
from helpers import tiny_checkpoint


def test_every_committed_model_and_generator_names_data_the_benchmark_knows():
    from gangealing.data.embedded import ANIMAL_CLASSES, MNIST_CLASSES

    for e in zoo.MODELS.values():
        known = ANIMAL_CLASSES if e.dataset == "animals" else MNIST_CLASSES
        assert e.dataset in ("animals", "mnist") and set(e.classes) <= set(known) and e.label
    assert zoo.MODELS["gangealing-mnist-k10"].data == "mnist"
    assert zoo.MODELS["gangealing-tiny-cat"].data == "animals:cat"
    assert all(g.path.startswith("models/") for g in zoo.GENERATORS.values())


def test_models_env_is_searched_first(tmp_path, monkeypatch):
    f = tmp_path / "models" / "gangealing-tiny-cat" / "model.pt"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    for env in (tmp_path, tmp_path / "models"):  # a checkout-like folder, or the models folder itself
        monkeypatch.setenv(zoo.MODELS_ENV, str(env))
        assert zoo.resolve_model("gangealing-tiny-cat") == f
    with pytest.raises(KeyError, match="the zoo has"):
        zoo.resolve_model("nosuch")


def test_parse_model_spec(tmp_path):
    f = tmp_path / "giraffe" / "model.pt"
    f.parent.mkdir()
    f.write_bytes(b"x")
    name, e = zoo.parse_model_spec(f"{f}=animals:giraffe")
    assert name == "giraffe" and e.dataset == "animals" and e.classes == ("giraffe",) and e.path == str(f.resolve())
    assert e.label == "giraffe (animals:giraffe)"
    assert zoo.parse_model_spec(f"{f}=mnist")[1].classes == tuple("0123456789")
    assert zoo.parse_model_spec(f"{f}=mnist:3=my three")[1].label == "my three"
    for bad, msg in ((f"{f}", "expected FILE=DATA"), (f"{tmp_path}/no.pt=animals:cat", "no file"),
                     (f"{f}=animals:unicorn", "unknown animal class 'unicorn'"), (f"{f}=mnist:12", "not a digit"),
                     (f"{f}=cifar:cat", "data must be")):
        with pytest.raises((ValueError, FileNotFoundError), match=msg):
            zoo.parse_model_spec(bad)


@pytest.mark.slow
def test_bench_measures_any_model_file_on_the_class_it_names(tmp_path):
    """A model outside the zoo gets the same rows as a zoo model: its class's baselines and its own row."""
    model = tiny_checkpoint(tmp_path / "giraffe" / "model.pt", size=16)
    three = tiny_checkpoint(tmp_path / "three" / "model.pt", size=16)
    out = tmp_path / "b"
    rc = main(["bench", "--out", str(out), "--model", f"{model}=animals:giraffe", f"{three}=mnist:3=identity three",
               "--classes", "giraffe", "--pairs", "20", "--digits", "8", "--no-classic", "--no-refine",
               "--throughput-images", "4", "--no-progress", "--no-train-speed", "--no-generators"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    assert set(data["models"]) == {"giraffe", "three"}  # no zoo model: --model alone measures only these
    rows = {r["method"]: r for r in data["mask_transfer"]}
    assert set(rows) == {"no alignment", "giraffe (animals:giraffe)"}
    assert all(r["dataset"] == "animals:giraffe (test)" for r in rows.values())
    # The model is the identity (up to its untrained flow): it cannot be far from no alignment.
    assert abs(rows["giraffe (animals:giraffe)"]["iou"] - rows["no alignment"]["iou"]) < 0.2
    assert {r["method"] for r in data["mnist_pck"]} == {"no alignment", "identity three"}
    assert all(r["dataset"].startswith("mnist:3 ") for r in data["mnist_pck"])
    assert "giraffe (animals:giraffe)" in (out / "results.md").read_text()


def test_bench_model_errors_are_one_line(tmp_path, capsys):
    f = tiny_checkpoint(tmp_path / "cat" / "model.pt", size=16)
    assert main(["bench", "--out", str(tmp_path / "b"), "--model", f"{f}=animals:unicorn", "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "unknown animal class 'unicorn'" in err and "Traceback" not in err
    assert main(["bench", "--out", str(tmp_path / "b"), "--model-path", "gangealing-tiny-cat", "--no-progress"]) != 0
    assert "expected NAME=FILE" in capsys.readouterr().err


def test_zoo_names_work_wherever_a_checkpoint_is_asked_for(tmp_path, monkeypatch):
    from gangealing.checkpoint import CheckpointError
    from gangealing.predictor import Congealer

    f = tmp_path / "models" / "gangealing-tiny-cat" / "model.pt"
    f.parent.mkdir(parents=True)
    tiny_checkpoint(f, size=16)
    monkeypatch.setenv(zoo.MODELS_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert Congealer.from_checkpoint("gangealing-tiny-cat").flow_size == 16
    monkeypatch.setenv(zoo.MODELS_ENV, str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path / "models")
    monkeypatch.setattr(zoo, "model_roots", lambda: [tmp_path / "elsewhere"])  # not a checkout either
    with pytest.raises(CheckpointError, match="set GANGEALING_MODELS"):
        Congealer.from_checkpoint("gangealing-tiny-cat")
