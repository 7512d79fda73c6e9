"""Every sub-command spells a shared option the same way (issue #15: one command line)."""

from __future__ import annotations

import argparse

import pytest

from lesionseg.cli.main import build_parser

#: Meaning (argparse dest) → the one spelling every command uses for it.
CANONICAL = {
    "output": ("-o", "--output"),
    "dataset": ("-d", "--dataset"),
    "device": ("--device",),
    "quiet": ("--quiet",),
    "overwrite": ("--overwrite",),
    "save_probabilities": ("--save-probabilities",),
    "seed": ("--seed",),
    "model": ("-m", "--model"),
    "input": ("-i", "--input"),
}
#: Spellings of those meanings that no command may use.
FORBIDDEN = {
    "--out", "--outdir", "--output-dir", "--force", "--gpu", "--cuda", "--silent", "--data",
    "--data-dir", "--save-probs", "--save_probabilities", "--probabilities",
}  # fmt: skip
#: Commands that show progress, so must take --quiet.
PROGRESS = {"demo", "train", "predict", "preprocess", "evaluate", "crf-tune", "synth", "bids"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


COMMANDS = _commands()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_shared_options_have_one_spelling(name):
    for action in _options(COMMANDS[name]):
        spelled = tuple(s for s in action.option_strings if s.startswith("--") or len(s) == 2)
        if action.dest in CANONICAL:
            assert set(spelled) == set(CANONICAL[action.dest]), (name, action.dest, spelled)
        assert not set(action.option_strings) & FORBIDDEN, (name, action.option_strings)
        long = [s for s in action.option_strings if s.startswith("--")]
        # dashes between words (an underscore form may only be an alias of a dashed one)
        assert any("_" not in s for s in long), (name, long)
        if action.dest == "device":
            assert action.default == "auto", name


def test_commands_with_progress_take_quiet():
    for name in PROGRESS:
        assert "quiet" in {a.dest for a in _options(COMMANDS[name])}, name


def test_a_positional_data_set_is_an_alias_of_dash_d(msd_dataset, tmp_path, capsys):
    from lesionseg.cli.main import main

    assert main(["preprocess", str(msd_dataset), "-o", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["preprocess", "-d", str(msd_dataset), "-o", str(tmp_path / "b"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and len(out.strip().splitlines()) == 2  # the two summaries, nothing else
    assert main(["preprocess", "-o", str(tmp_path / "c")]) == 2
    assert "-d/--dataset" in capsys.readouterr().err
