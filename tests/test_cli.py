"""cli.main is the one place where a command's error becomes a message and an exit status."""

import pytest

from fcn_scratch import cli
from fcn_scratch.commands import info
from fcn_scratch.train import TrainingDiverged


@pytest.mark.parametrize("argv", [["--help"], ["info", "--help"]], ids=str)
def test_help_documents_the_exit_statuses(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out
    for status in ("0", "1", "2", "130"):
        assert any(line.split()[:1] == [status] for line in out.splitlines()), status


@pytest.mark.parametrize(
    "error, status, message",
    [
        (ValueError("--seed must be an int"), 2, "fcn-scratch info: error: --seed must be an int"),
        (OSError("cannot write out.npz"), 2, "fcn-scratch info: error: cannot write out.npz"),
        (TrainingDiverged("the loss is nan at step 3"), 1, "fcn-scratch info: the loss is nan"),
        (KeyboardInterrupt(), 130, "fcn-scratch info: interrupted"),
    ],
    ids=["ValueError", "OSError", "TrainingDiverged", "KeyboardInterrupt"],
)
def test_errors_become_a_message_on_stderr_and_a_status(
    monkeypatch, capsys, error, status, message
):
    def fail(args):
        raise error

    monkeypatch.setattr(info, "run", fail)
    assert cli.main(["info"]) == status
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_a_bug_is_not_dressed_up_as_an_error_message(monkeypatch):
    def fail(args):
        raise RuntimeError("an invariant broke")

    monkeypatch.setattr(info, "run", fail)
    with pytest.raises(RuntimeError, match="an invariant broke"):
        cli.main(["info"])


def test_gradcheck_refuses_an_unknown_op_on_stderr(capsys):
    assert cli.main(["gradcheck", "--op", "no_such_op"]) == 2
    captured = capsys.readouterr()
    assert "fcn-scratch gradcheck: error: no cases for --op 'no_such_op'" in captured.err
    assert "conv2d" in captured.err and captured.out == ""
