"""The benchmark's command line refuses a results file that is not there, or a count of rebuild
rounds below one, before any run."""

from __future__ import annotations

import pytest

from tests.benchmarks.run import main


@pytest.mark.parametrize("argv", [["--compare", "nope.json"], ["--compare", "nope.json", "--results", "nope2.json"]])
def test_a_missing_results_file_is_named_at_once(tmp_path, argv):
    argv = [str(tmp_path / a) if a.endswith(".json") else a for a in argv]
    with pytest.raises(SystemExit, match="no results file at .*nope.json"):
        main(argv)


def test_rebuild_rounds_below_one_are_refused_at_once():
    with pytest.raises(SystemExit, match="--rebuild-rounds must be at least 1"):
        main(["--rebuild-rounds", "0"])
