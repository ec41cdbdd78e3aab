import pytest

from sum_tasks.configuration import load_site

pytest_plugins = ["sum_tasks.testing.pytest_plugin"]

SITE = {
    "site_slug": "acme-kitchens",
    "domains": ["acme.example", "www.acme.example"],
    "project_module": "acme",
    "repo_url": "https://git.example/acme.git",
}


@pytest.fixture
def site_config():
    return dict(SITE)


@pytest.fixture
def site(site_config):
    return load_site(site_config)
