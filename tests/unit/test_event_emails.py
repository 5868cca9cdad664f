import pytest
from pydantic import ValidationError

from rethink.shared.events import FROM_LOG, Person


def test_addresses_from_people_and_agencies_are_fully_validated_and_normalised():
    assert Person(name="A", agency="B", email="Jo@Example.ORG").email == "Jo@example.org"
    for bad in ("jo@localhost", "jo@@example.org", "not-an-email", "jo@example..org"):
        with pytest.raises(ValidationError, match="email"):
            Person(name="A", agency="B", email=bad)


def test_addresses_read_back_from_the_log_get_only_a_shape_check():
    # They were fully validated when written; re-validating each read was the cost of decoding.
    assert Person.model_validate({"name": "A", "agency": "B", "email": "jo@localhost"}, context=FROM_LOG).email \
        == "jo@localhost"
    with pytest.raises(ValidationError, match="not an email address"):
        Person.model_validate({"name": "A", "agency": "B", "email": "no-at-sign"}, context=FROM_LOG)


def test_the_schema_still_says_email_and_personal():
    prop = Person.model_json_schema()["properties"]["email"]
    assert prop["format"] == "email" and prop["personal"] is True
