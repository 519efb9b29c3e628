"""Issue 12, defects 7 and 8 as a user meets them: through the API (POST
/api/v1/changes/), against a target on each of BIND 9, Knot DNS and PowerDNS. Before
the fix both were stored (201); now the proposal is refused with a 400 that names
the field, and nothing is stored."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.conftest import grant

pytestmark = [pytest.mark.django_db, pytest.mark.named]


@pytest.fixture
def target(dns_server, operator, author):
    from changes.services import target_register

    zone = dns_server.fresh_zone()
    target = target_register(actor=operator, name=zone, config={
        "zone": zone, "primary": dns_server.primary, "tsig_key_file": str(dns_server.key_file), "timeout": 3})
    grant(author, "engineer", target)
    return target


def propose(user, target, items):
    client = APIClient()
    client.force_authenticate(user)
    return client.post("/api/v1/changes/", {"target": target.pk, "title": "t", "reason": "r", "items": items},
                       format="json")


def test_an_owner_name_with_a_space_is_a_400_naming_the_field(author, target):
    from changes.models import ChangeRequest

    response = propose(author, target, [{"op": "upsert", "name": "w w", "type": "A", "ttl": 300,
                                         "records": ["192.0.2.1"]}])
    assert response.status_code == 400, response.json()
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(0, "items[0].name")]
    assert not ChangeRequest.objects.exists()


def test_a_change_larger_than_one_update_message_is_a_400_with_its_size(author, target):
    from changes.models import ChangeRequest

    items = [{"op": "upsert", "name": f"host-{i:04d}-{'x' * 40}", "type": "A", "ttl": 300,
              "records": [f"10.0.{i // 250}.{i % 250 + 1}"]} for i in range(1000)]
    response = propose(author, target, items)
    assert response.status_code == 400, response.json()
    (error,) = response.json()["errors"]
    assert error["field"] == "items" and "65,535 bytes" in error["message"] and "bytes (measured" in error["message"]
    assert not ChangeRequest.objects.exists()
