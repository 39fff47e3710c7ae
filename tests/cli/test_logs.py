"""The console: pretune's INFO lines, libraries' warnings, and root-logger chatter only when it is an error."""

from __future__ import annotations

import logging

from pretune.cli.logs import configure_logging


def test_the_console_keeps_pretune_lines_and_library_problems(capsys):
    configure_logging(verbose=False)
    logging.getLogger("pretune.search").info("search: trials 1/8")
    logging.getLogger("somelib").info("somelib: loading")  # a library's progress: hidden
    logging.getLogger("somelib").warning("somelib: disk almost full")
    logging.warning("Please consider to run pre-processing before quantization")  # advice through the root logger
    logging.error("a library failed through the root logger")
    err = capsys.readouterr().err.splitlines()
    assert err == ["search: trials 1/8", "somelib: disk almost full", "a library failed through the root logger"]
    configure_logging(verbose=True)
    logging.getLogger("somelib").info("somelib: loading")
    assert capsys.readouterr().err.splitlines() == ["somelib: loading"]
    configure_logging(verbose=False)  # leave the quiet console for the tests that follow
