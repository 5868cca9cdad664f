import pytest

from rethink.shared.eventlog import EventLog, Subjects


@pytest.mark.parametrize("bad", ["*", ">", "RT-AAAAAAAAAA.>", "rt-aaaaaaaaaa", "RT-AAAAAAAAA1", ""])
async def test_reading_a_case_refuses_anything_but_a_case_id_before_touching_the_server(bad):
    log = EventLog(js=None, stream="S", subjects=Subjects("rethink"), personal=None)  # no server: the check comes first
    with pytest.raises(ValueError, match="not a case id"):
        await log.read_case(bad)
