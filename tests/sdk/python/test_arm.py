"""ARM-shaped key management through the official management SDK (azure-mgmt-webpubsub 2.0.0),
pointed at Hubbub's admin listener with the admin token as the bearer."""

import time

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.mgmt.webpubsub import WebPubSubManagementClient
from azure.mgmt.webpubsub.models import RegenerateKeyParameters

from harness import service_client, unique_hub

RG = "rg1"
NAME = "hubbub1"


class StaticTokenCredential:
    """A TokenCredential that hands out a fixed bearer token (Hubbub's admin token)."""

    def __init__(self, token: str):
        self.token = token
        self.scopes_seen: list[tuple] = []

    def get_token(self, *scopes, **kwargs):
        self.scopes_seen.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def mgmt_client(hubbub, token: str) -> WebPubSubManagementClient:
    return WebPubSubManagementClient(StaticTokenCredential(token), "sub1", base_url=hubbub.admin_url)


def as_dict(keys) -> dict:
    return {
        "primaryKey": keys.primary_key,
        "secondaryKey": keys.secondary_key,
        "primaryConnectionString": keys.primary_connection_string,
        "secondaryConnectionString": keys.secondary_connection_string,
    }


def assert_401(cs: str, what: str):
    with pytest.raises(HttpResponseError) as exc:
        service_client(cs, unique_hub("old")).send_to_all({"stale": True})
    assert exc.value.status_code == 401, f"{what}: {exc.value}"


def test_list_keys_matches_key_show(hubbub):
    client = mgmt_client(hubbub, hubbub.admin_token())
    listed = client.web_pub_sub.list_keys(RG, NAME, enforce_https=False)
    assert as_dict(listed) == hubbub.key_show()
    # Any resource group / resource name addresses the same single Hubbub instance.
    other = client.web_pub_sub.list_keys("another-rg", "another-name", enforce_https=False)
    assert as_dict(other) == as_dict(listed)


@pytest.mark.parametrize("parameters", [{"keyType": "Primary"}, RegenerateKeyParameters(key_type="Primary")],
                         ids=["dict", "model"])
def test_regenerate_primary_via_arm(hubbub, parameters):
    client = mgmt_client(hubbub, hubbub.admin_token())
    before = hubbub.key_show()
    poller = client.web_pub_sub.begin_regenerate_key(RG, NAME, parameters, enforce_https=False)
    result = poller.result(timeout=30)
    assert poller.done()
    new = as_dict(result)
    assert new["primaryKey"] != before["primaryKey"]
    assert new["secondaryKey"] == before["secondaryKey"]
    assert new["secondaryConnectionString"] == before["secondaryConnectionString"]
    assert new["primaryConnectionString"] == f"Endpoint={hubbub.endpoint};AccessKey={new['primaryKey']};Version=1.0;"
    assert new == hubbub.key_show()
    assert new == as_dict(client.web_pub_sub.list_keys(RG, NAME, enforce_https=False))
    # Old primary stops working; the secondary keeps working; the new primary works.
    assert_401(before["primaryConnectionString"], "old primary after ARM regenerateKey")
    service_client(before["secondaryConnectionString"], unique_hub("s")).send_to_all({"still": True})
    service_client(new["primaryConnectionString"], unique_hub("p")).send_to_all({"fresh": True})


def test_regenerate_secondary_and_salt_via_arm(hubbub):
    client = mgmt_client(hubbub, hubbub.admin_token())
    before = hubbub.key_show()
    after_secondary = as_dict(client.web_pub_sub.begin_regenerate_key(
        RG, NAME, {"keyType": "Secondary"}, enforce_https=False).result(timeout=30))
    assert after_secondary["primaryKey"] == before["primaryKey"]
    assert after_secondary["secondaryKey"] != before["secondaryKey"]
    assert_401(before["secondaryConnectionString"], "old secondary after ARM regenerateKey")
    after_salt = as_dict(client.web_pub_sub.begin_regenerate_key(
        RG, NAME, {"keyType": "Salt"}, enforce_https=False).result(timeout=30))
    assert after_salt == after_secondary
    for slot in ("primary", "secondary"):
        service_client(after_salt[f"{slot}ConnectionString"], unique_hub("k")).send_to_all({"slot": slot})


def test_wrong_admin_token_is_401_and_changes_nothing(hubbub):
    before = hubbub.key_show()
    client = mgmt_client(hubbub, "definitely-not-the-admin-token")
    with pytest.raises(HttpResponseError) as exc:
        client.web_pub_sub.list_keys(RG, NAME, enforce_https=False)
    assert isinstance(exc.value, ClientAuthenticationError)
    assert exc.value.status_code == 401
    assert exc.value.error is not None and exc.value.error.code, "ARM error body {error:{code,message}}"
    assert before["primaryKey"] not in exc.value.response.text()
    with pytest.raises(HttpResponseError) as exc:
        client.web_pub_sub.begin_regenerate_key(RG, NAME, {"keyType": "Primary"}, enforce_https=False).result(timeout=30)
    assert exc.value.status_code == 401
    # An access key is not an admin token either.
    with pytest.raises(HttpResponseError) as exc:
        mgmt_client(hubbub, before["primaryKey"]).web_pub_sub.list_keys(RG, NAME, enforce_https=False)
    assert exc.value.status_code == 401
    assert hubbub.key_show() == before


def test_unknown_key_type_is_rejected_with_arm_error(hubbub):
    client = mgmt_client(hubbub, hubbub.admin_token())
    before = hubbub.key_show()
    with pytest.raises(HttpResponseError) as exc:
        client.web_pub_sub.begin_regenerate_key(RG, NAME, {"keyType": "Tertiary"}, enforce_https=False).result(timeout=30)
    assert exc.value.status_code == 400
    assert exc.value.error is not None and exc.value.error.code
    assert hubbub.key_show() == before


def test_disable_local_auth_through_the_arm_resource(hubbub):
    """`properties.disableLocalAuth` of the instance resource: read with get, set with
    begin_update (the poller finishes at once), enforced at once, turned back on the same way."""
    from azure.mgmt.webpubsub.models import WebPubSubResource

    client = mgmt_client(hubbub, hubbub.admin_token())
    resource = client.web_pub_sub.get(RG, NAME, enforce_https=False)
    assert resource.disable_local_auth is False
    assert resource.provisioning_state == "Succeeded"
    assert resource.name == NAME
    keys = hubbub.key_show()

    poller = client.web_pub_sub.begin_update(
        RG, NAME, WebPubSubResource(location="local", disable_local_auth=True), enforce_https=False,
    )
    assert poller.result(timeout=30).disable_local_auth is True
    assert client.web_pub_sub.get(RG, NAME, enforce_https=False).disable_local_auth is True
    with pytest.raises(HttpResponseError) as refused:
        service_client(keys["primaryConnectionString"], unique_hub("off")).send_to_all({"no": True})
    assert refused.value.status_code == 401
    assert "local auth is disabled" in str(refused.value)
    # Administrators still list the keys.
    assert as_dict(client.web_pub_sub.list_keys(RG, NAME, enforce_https=False)) == keys

    client.web_pub_sub.begin_update(
        RG, NAME, WebPubSubResource(location="local", disable_local_auth=False), enforce_https=False,
    ).result(timeout=30)
    service_client(keys["primaryConnectionString"], unique_hub("on")).send_to_all({"yes": True})
