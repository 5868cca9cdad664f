"""The benchmark's command line refuses a results file that is not there, before any run."""

from __future__ import annotations

import pytest

from tests.benchmarks.run import main


@pytest.mark.parametrize("argv", [["--compare", "nope.json"], ["--compare", "nope.json", "--results", "nope2.json"]])
def test_a_missing_results_file_is_named_at_once(tmp_path, argv):
    argv = [str(tmp_path / a) if a.endswith(".json") else a for a in argv]
    with pytest.raises(SystemExit, match="no results file at .*nope.json"):
        main(argv)
