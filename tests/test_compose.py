"""docker-compose.yml and the Dockerfile, checked statically against settings.py (no Docker engine here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ACCRUE_SERVICES = ("migrate", "api", "worker")
Services = dict[str, dict[str, Any]]
SERVICES = {"postgres", "temporal", "temporal-ui", "migrate", "api", "worker"}
APP_DEPENDENCIES = {
    "postgres": "service_healthy",
    "temporal": "service_healthy",
    "migrate": "service_completed_successfully",
}
ALLOWED_CONDITIONS = {"service_healthy", "service_completed_successfully"}
# ${VAR}, ${VAR:-default}, ${VAR-default}; compose's other forms (${VAR:?err}) are not used here.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> Services:
    result: Services = compose["services"]
    return result


def resolve(value: object) -> str:
    """The value compose uses when no variable is set: each ${VAR:-default} becomes its default."""
    return INTERPOLATION.sub(lambda m: m.group("default") or "", str(value))


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):  # the `- KEY=value` form
        raw = dict(item.split("=", 1) for item in raw)
    return {key: resolve(value) for key, value in raw.items()}


def settings_env_names() -> set[str]:
    """Every environment variable name Settings reads (pydantic-settings matches them case-insensitively)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
    return names


def port_mapping(entry: str) -> tuple[int, int]:
    """(host port, container port) of a short-syntax mapping such as "8000:8000" or "127.0.0.1:7233:7233"."""
    *_, host, container = entry.split(":")
    return int(host), int(container.split("/")[0])


def test_service_set(services: Services) -> None:
    assert set(services) == SERVICES


def test_settings_env_names_sanity() -> None:
    # Guards the introspection itself: aliases and prefixed field names both appear.
    names = settings_env_names()
    assert {"DATABASE_URL", "TEMPORAL_ADDRESS", "ACCRUE_API_HOST", "ACCRUE_API_PORT"} <= names
    assert "ACCRUE_TEMPORAL_NAMESPACE" in names and "API_PORT" not in names


@pytest.mark.parametrize("name", ACCRUE_SERVICES)
def test_every_accrue_variable_is_a_setting(services: Services, name: str) -> None:
    unknown = set(map(str.upper, env(services[name]))) - settings_env_names()
    assert not unknown, f"{name} sets variables settings.py does not read: {sorted(unknown)}"


@pytest.mark.parametrize("name", ACCRUE_SERVICES)
def test_environment_loads_into_settings(
    services: Services, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in settings_env_names():
        monkeypatch.delenv(var, raising=False)
    variables = env(services[name])
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url == variables["DATABASE_URL"]
    assert settings.temporal_address == variables["TEMPORAL_ADDRESS"]
    assert settings.api_host == "0.0.0.0"


def test_accrue_services_share_one_configuration(services: Services) -> None:
    configurations = [env(services[name]) for name in ACCRUE_SERVICES]
    assert all(c == configurations[0] for c in configurations)


def test_api_port_is_the_settings_default(services: Services) -> None:
    default_port = Settings.model_fields["api_port"].default
    api = services["api"]
    assert int(env(api)["ACCRUE_API_PORT"]) == default_port
    assert [port_mapping(p) for p in api["ports"]] == [(default_port, default_port)]
    assert f"127.0.0.1:{default_port}/healthz" in " ".join(api["healthcheck"]["test"])


@pytest.mark.parametrize("name", ACCRUE_SERVICES)
def test_database_url_points_at_the_postgres_service(services: Services, name: str) -> None:
    postgres = env(services["postgres"])
    url = urlsplit(env(services[name])["DATABASE_URL"])
    assert url.scheme == "postgresql+asyncpg"
    assert url.hostname == "postgres" and url.hostname in services
    assert url.port == 5432
    assert url.path == "/" + postgres["POSTGRES_DB"]
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]


def test_temporal_address_matches_the_temporal_service(services: Services) -> None:
    for name in (*ACCRUE_SERVICES, "temporal-ui"):
        host, _, port = env(services[name])["TEMPORAL_ADDRESS"].partition(":")
        assert (host, port) == ("temporal", "7233"), name
    assert "7233" in {str(port_mapping(p)[1]) for p in services["temporal"]["ports"]}
    assert port_mapping(services["temporal-ui"]["ports"][0]) == (8233, 8080)


def test_temporal_uses_the_postgres_service(services: Services) -> None:
    temporal, postgres = env(services["temporal"]), env(services["postgres"])
    assert temporal["DB"] == "postgres12"
    assert temporal["POSTGRES_SEEDS"] == "postgres"
    assert temporal["DB_PORT"] == "5432"
    assert temporal["POSTGRES_USER"] == postgres["POSTGRES_USER"]
    assert temporal["POSTGRES_PWD"] == postgres["POSTGRES_PASSWORD"]


def test_namespace_created_by_temporal_is_the_one_accrue_uses(services: Services) -> None:
    namespace = env(services["temporal"])["DEFAULT_NAMESPACE"]
    for name in ACCRUE_SERVICES:
        assert env(services[name])["ACCRUE_TEMPORAL_NAMESPACE"] == namespace
    assert (
        f"namespace describe --address temporal:7233 {namespace}"
        in services["temporal"]["healthcheck"]["test"][1]
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("postgres", {}),
        ("temporal", {"postgres": "service_healthy"}),
        ("temporal-ui", {"temporal": "service_healthy"}),
        ("migrate", {"postgres": "service_healthy"}),
        ("api", APP_DEPENDENCIES),
        ("worker", APP_DEPENDENCIES),
    ],
)
def test_depends_on_conditions(services: Services, name: str, expected: dict[str, str]) -> None:
    depends_on = services[name].get("depends_on", {})
    assert isinstance(depends_on, dict), f"{name}: the list form of depends_on waits for nothing"
    assert {target: spec["condition"] for target, spec in depends_on.items()} == expected


def test_every_dependency_condition_can_be_met(services: Services) -> None:
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert spec["condition"] in ALLOWED_CONDITIONS, f"{name} → {target}: {spec['condition']}"
            if spec["condition"] == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), f"{target} has no healthcheck"
            else:
                assert services[target].get("restart") == "no", f"{target} must be one-shot"


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("postgres", "pg_isready -U accrue -d accrue"),
        ("temporal", "temporal operator cluster health --address temporal:7233"),
        ("api", "/healthz"),
    ],
)
def test_healthchecks(services: Services, name: str, probe: str) -> None:
    assert probe in " ".join(services[name]["healthcheck"]["test"])


def test_images_are_pinned(services: Services) -> None:
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name} has neither image nor build"
            continue
        repository, _, tag = image.rpartition("/")[2].partition(":")
        assert repository and tag, f"{name}: {image} has no explicit tag"
        assert tag != "latest" and "$" not in tag, f"{name}: {image} is not pinned"


@pytest.mark.parametrize("name", ACCRUE_SERVICES)
def test_accrue_services_run_the_cli_from_the_built_image(services: Services, name: str) -> None:
    service = services[name]
    assert service["build"] == "."
    assert service["image"] == services["api"]["image"]
    assert service["command"] == [name]


def test_postgres_data_is_on_a_named_volume(compose: dict[str, Any], services: Services) -> None:
    volume, _, target = services["postgres"]["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data"
    assert volume in compose["volumes"]


def test_every_interpolated_variable_has_a_default() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    missing = [m.group(0) for m in INTERPOLATION.finditer(text) if m.group("default") is None]
    assert not missing, f"`docker compose up` should work without a .env file: {missing}"


def test_dockerfile_installs_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["accrue"]' in dockerfile
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "accrue" in pyproject["project"]["scripts"]
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    modules = [f"{m}.py" for m in pyproject["tool"]["setuptools"]["py-modules"]]
    copied = " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY"))
    for needed in [*packages, *modules, "pyproject.toml", pyproject["project"]["readme"]]:
        assert re.search(rf"\b{re.escape(needed)}\b", copied), f"Dockerfile does not copy {needed}"
