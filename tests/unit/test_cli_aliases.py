"""`rethink dlq` is the dead-letter commands under the name operators look for."""

from __future__ import annotations

from typer.testing import CliRunner

from rethink.shared.cli.main import app


def test_dlq_offers_the_same_commands_as_deadletter():
    runner = CliRunner()
    for command in ("list", "show", "retry"):
        dlq = runner.invoke(app, ["dlq", command, "--help"])
        deadletter = runner.invoke(app, ["deadletter", command, "--help"])
        assert dlq.exit_code == deadletter.exit_code == 0, dlq.output
        # Rich pads the usage line to the terminal width, so compare the words, not the spacing.
        assert dlq.output.replace("dlq", "deadletter").split() == deadletter.output.split()
