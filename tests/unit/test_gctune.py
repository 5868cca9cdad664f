"""A replay tunes the collector for its own duration only; a started service freezes what it made starting."""

from __future__ import annotations

import gc

from rethink.shared import gctune


def test_a_batch_job_collects_the_young_less_often_and_puts_everything_back_after():
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        with gctune.batch_job():
            assert gc.get_threshold()[0] == gctune.YOUNG > before[0]
            assert gc.get_threshold()[1:] == before[1:]
            assert gc.get_freeze_count() > frozen  # what existed before the job is out of sight
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*before)


def test_settle_freezes_what_starting_made_and_keeps_the_default_thresholds():
    before = gc.get_threshold()
    try:
        gctune.settle()
        assert gc.get_threshold() == before and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
