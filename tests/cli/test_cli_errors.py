"""The CLI fails cleanly: one line on stderr, a specific non-zero exit code, no traceback."""

from __future__ import annotations

import numpy as np
import pytest

from rnnparity.cli.common import ExitCode
from rnnparity.cli.main import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_commands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("run", "inspect"):
        assert command in out
    assert "exit codes" in out


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys)
    assert code == ExitCode.USAGE
    assert "usage" in err


def test_missing_model_file(capsys, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 2, 3), np.float32))
    code, _, err = run_cli(capsys, "run", str(tmp_path / "nope.h5"), "--input", str(x))
    assert code == ExitCode.BAD_INPUT
    assert err.count("\n") == 1 and "does not exist" in err
    assert "Traceback" not in err


def test_unknown_suffix(capsys, tmp_path):
    model = tmp_path / "model.txt"
    model.write_text("not a model")
    code, _, err = run_cli(capsys, "inspect", str(model))
    assert code == ExitCode.BAD_INPUT
    assert "cannot tell the format" in err and err.count("\n") == 1


def test_pickled_input_is_refused_without_unpickling(capsys, tmp_path):
    marker = tmp_path / "marker"
    x = tmp_path / "x.npy"
    np.save(x, np.array([Exploit(str(marker))], dtype=object), allow_pickle=True)
    code, _, err = run_cli(capsys, "run", "--example", "cudnn_lstm_1x2", "--input", str(x))
    assert code == ExitCode.BAD_INPUT
    assert "pickled objects" in err
    assert not marker.exists()


def test_bad_override_syntax(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--example", "cudnn_lstm_1x2", "--override", "units")
    assert code == ExitCode.USAGE
    assert "expected KEY=VALUE" in err


class Exploit:
    """Unpickling this would create a file: it must never happen."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("argv", [["run", "--bogus"], ["frobnicate"]])
def test_argparse_errors_exit_2(capsys, argv):
    code, _, _ = run_cli(capsys, *argv)
    assert code == ExitCode.USAGE


def test_missing_arguments_are_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "run")
    assert code == ExitCode.USAGE
    assert "run needs MODEL and --input" in err and err.count("\n") == 1


def test_unknown_example_lists_example_names(capsys):
    code, _, err = run_cli(capsys, "run", "--example", "nope")
    assert code == ExitCode.USAGE
    assert "cudnn_lstm_1x2" in err and ".npz" not in err


def test_global_options_after_the_command(capsys):
    code, out, _ = run_cli(capsys, "run", "--example", "cudnn_lstm_1x2", "-q")
    assert code == 0 and "max abs difference" in out


def test_one_array_npz_feeds_a_one_input_model(capsys, tmp_path):
    import rnnparity

    x = np.load(rnnparity.example_path("cudnn_lstm_1x2.input.npy"))
    np.savez(tmp_path / "x.npz", some_other_name=x)
    code, out, err = run_cli(capsys, "run", str(rnnparity.example_path("cudnn_lstm_1x2.h5")),
                             "--input", str(tmp_path / "x.npz"))
    assert code == 0, err
