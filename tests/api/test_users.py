from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from paygentic_sdk import Paygentic, errors, models
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import Membership, User
from db.session import session_factory
from domain.ids import new_id
from tests.api.test_customers import run_sdk063
from tests.helpers import assert_error, field_errors


@pytest.fixture
async def teammate(engine: AsyncEngine, merchant: NewMerchant) -> str:
    """A second member of the merchant's organization, without an API key of their own."""
    user_id = new_id("user")
    async with session_factory(engine)() as session:
        session.add(User(id=user_id, email=f"teammate+{user_id}@accrue.local", ory_id=user_id))
        await session.flush()
        session.add(Membership(user_id=user_id, organization_id=merchant.merchant_id, state="active"))
        await session.commit()
    return user_id


@pytest.fixture
async def owner_invited_elsewhere(
    engine: AsyncEngine, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    """The merchant's owner is also invited into the other merchant's organization."""
    async with session_factory(engine)() as session:
        session.add(
            Membership(user_id=merchant.user_id, organization_id=other_merchant.merchant_id, state="invited")
        )
        await session.commit()


def test_own_user_through_sdk(sdk: Paygentic, merchant: NewMerchant) -> None:
    user = sdk.users.get(id=merchant.user_id)
    assert (user.id, user.object, user.ory_id) == (merchant.user_id, "user", merchant.user_id)
    assert user.id.startswith("usr_") and user.email.startswith("owner+")
    assert user.organizations == [models.UserOrganization(id=merchant.merchant_id, state="active")]
    assert (user.first_name, user.date_of_birth, user.address, user.type) == (None, None, None, None)

    updated = sdk.users.update(
        id=merchant.user_id,
        first_name="Ada",
        last_name="Lovelace",
        phone="+44-20-7946-0958",
        date_of_birth=date(1815, 12, 10),
        type_="INDIVIDUAL",
        address={"line1": "12 St James's Sq", "city": "London", "country": "GB", "zip_code": "SW1Y 4JH"},
    )
    fetched = sdk.users.get(id=merchant.user_id)
    assert fetched == updated
    assert (fetched.first_name, fetched.last_name, fetched.phone) == ("Ada", "Lovelace", "+44-20-7946-0958")
    assert (fetched.date_of_birth, fetched.type) == (date(1815, 12, 10), "INDIVIDUAL")
    assert fetched.address is not None and (fetched.address.country, fetched.address.zip_code) == (
        "GB",
        "SW1Y 4JH",
    )
    assert fetched.updated_at >= user.updated_at and fetched.email == user.email


def test_sdk_063_parses_get(api_url: str, client: httpx.Client, merchant: NewMerchant) -> None:
    client.patch(f"/v0/users/{merchant.user_id}", json={"dateOfBirth": "1990-01-02", "type": "COMPANY"})
    script = (
        "u = sdk.users.get(id=args['user'])\n"
        "print(json.dumps({'id': u.id, 'dob': u.date_of_birth.isoformat(), 'type': u.type,"
        " 'orgs': [[o.id, o.state] for o in u.organizations]}))\n"
    )
    out = run_sdk063(api_url, merchant.api_key, script, user=merchant.user_id)
    assert out == {
        "id": merchant.user_id,
        "dob": "1990-01-02",
        "type": "COMPANY",
        "orgs": [[merchant.merchant_id, "active"]],
    }


def test_wire_shape(client: httpx.Client, merchant: NewMerchant) -> None:
    client.patch(f"/v0/users/{merchant.user_id}", json={"dateOfBirth": "1990-01-02"})
    body = client.get(f"/v0/users/{merchant.user_id}").json()
    assert body["dateOfBirth"] == "1990-01-02"
    assert body["createdAt"].endswith("Z") and body["oryId"] == merchant.user_id
    assert set(body) >= {
        "id",
        "object",
        "email",
        "organizations",
        "firstName",
        "lastName",
        "phone",
        "address",
    }


TOMORROW = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"dateOfBirth": TOMORROW}, "dateOfBirth"),
        ({"dateOfBirth": "1990-02-30"}, "dateOfBirth"),
        ({"dateOfBirth": "02/01/1990"}, "dateOfBirth"),
        ({"dateOfBirth": "1990-01-02T00:00:00Z"}, "dateOfBirth"),
        ({"dateOfBirth": 631238400}, "dateOfBirth"),
        ({"type": "company"}, "type"),
        ({"type": "PARTNERSHIP"}, "type"),
        ({"firstName": ""}, "firstName"),
        ({"firstName": 7}, "firstName"),
        ({"lastName": ["x"]}, "lastName"),
        ({"phone": 5551234}, "phone"),
        ({"address": "London"}, "address"),
        ({"address": {"country": "gb"}}, "address.country"),
        ({"firstName": None}, "firstName"),
        ({"dateOfBirth": None}, "dateOfBirth"),
        ({"address": None}, "address"),
        ({"type": None}, "type"),
    ],
)
def test_update_rejects_bad_fields_and_leaves_user_unchanged(
    client: httpx.Client, merchant: NewMerchant, patch: dict[str, object], field: str
) -> None:
    url = f"/v0/users/{merchant.user_id}"
    client.patch(url, json={"firstName": "Ada", "dateOfBirth": "1990-01-02", "type": "INDIVIDUAL"})
    before = client.get(url).json()
    # A valid change next to the bad one must not be applied either.
    assert field in field_errors(client.patch(url, json={"phone": "+1-555-0100"} | patch))
    assert client.get(url).json() == before


def test_today_is_a_valid_date_of_birth(client: httpx.Client, merchant: NewMerchant) -> None:
    today = datetime.now(UTC).date().isoformat()
    response = client.patch(f"/v0/users/{merchant.user_id}", json={"dateOfBirth": today})
    assert response.status_code == 200 and response.json()["dateOfBirth"] == today


def test_users_outside_the_organization_are_not_found(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    for user_id in (other_merchant.user_id, "usr_doesnotexist"):
        assert user_id in assert_error(client.get(f"/v0/users/{user_id}"), 404, "not_found")["message"]
        assert_error(client.patch(f"/v0/users/{user_id}", json={"firstName": "X"}), 404, "not_found")
    assert_error(other_client.get(f"/v0/users/{merchant.user_id}"), 404, "not_found")
    assert other_client.get(f"/v0/users/{other_merchant.user_id}").json()["firstName"] is None


def test_sdk_surfaces_unknown_user_as_typed_error(sdk: Paygentic) -> None:
    with pytest.raises(errors.Error) as caught:
        sdk.users.get(id="usr_doesnotexist")
    assert caught.value.status_code == 404


def test_teammate_is_visible_but_only_updates_themselves(
    client: httpx.Client, merchant: NewMerchant, teammate: str
) -> None:
    seen = client.get(f"/v0/users/{teammate}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["organizations"] == [{"id": merchant.merchant_id, "state": "active"}]
    assert_error(client.patch(f"/v0/users/{teammate}", json={"firstName": "Eve"}), 403, "forbidden")
    assert client.get(f"/v0/users/{teammate}").json() == seen.json()


@pytest.mark.usefixtures("owner_invited_elsewhere")
def test_organizations_list_all_memberships_only_to_the_user_themself(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    own = client.get(f"/v0/users/{merchant.user_id}").json()["organizations"]
    assert sorted((o["id"], o["state"]) for o in own) == sorted(
        [(merchant.merchant_id, "active"), (other_merchant.merchant_id, "invited")]
    )
    seen = other_client.get(f"/v0/users/{merchant.user_id}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["organizations"] == [{"id": other_merchant.merchant_id, "state": "invited"}]
    assert_error(
        other_client.patch(f"/v0/users/{merchant.user_id}", json={"firstName": "X"}), 403, "forbidden"
    )
