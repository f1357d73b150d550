"""The command line: help, version and the exit status on bad usage."""

from __future__ import annotations

import pytest

from jec_coffea import __version__
from jec_coffea.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_is_usage_error(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
