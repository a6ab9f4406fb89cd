"""The CLI: every subcommand listed, every flag documented, errors are one line."""
import argparse

import pytest

from gangealing.cli import build_parser, command_modules, main


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    raise AssertionError("no subcommands")


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in (m.__name__.rsplit(".", 1)[-1].replace("_", "-") for m in command_modules()):
        assert name in out


def test_every_flag_has_help_text():
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        assert sub.description, f"{name} has no description"
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_foreign_file_error_is_one_line(tmp_path, capsys):
    import torch

    torch.save({"foo": torch.zeros(1)}, tmp_path / "x.pt")
    assert main(["info", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_convert_refuses_to_overwrite_input(tmp_path):
    import torch

    p = tmp_path / "x.pt"
    torch.save({"foo": torch.zeros(1)}, p)
    with pytest.raises(SystemExit, match="never overwritten"):
        main(["convert", str(p), str(p)])
    assert torch.load(p, weights_only=True)["foo"].shape == (1,)
