"""Make a HomePage the root of the default Site, in place of the welcome page wagtailcore installs.

On the server the first ``migrate`` runs with the site's .env, so the Site gets the real domain and
scheme from ``WAGTAILADMIN_BASE_URL`` (sitemaps and full URLs use them); elsewhere it is localhost:80.
"""

import os
from urllib.parse import urlsplit

from django.db import migrations
from django.utils import timezone

INTRO = (
    "<p>Studio is a small design practice. This page is the root of the site: edit it in the "
    "Wagtail admin, add a lead image, or schedule a change to go live later.</p>"
)

# Treebeard's materialised paths: 4 characters per level, in base 36.
STEPLEN = 4
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _next_path(parent_path: str, last_child_path: str | None) -> str:
    if last_child_path is None:
        return parent_path + "0001"
    number = int(last_child_path[-STEPLEN:], 36) + 1
    digits = ""
    while number:
        number, remainder = divmod(number, 36)
        digits = ALPHABET[remainder] + digits
    return parent_path + digits.rjust(STEPLEN, "0")


def _site_address() -> tuple[str, int]:
    base = urlsplit(os.environ.get("WAGTAILADMIN_BASE_URL", ""))
    if not base.hostname:
        return "localhost", 80
    return base.hostname, base.port or (443 if base.scheme == "https" else 80)


def create_site_root(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Page = apps.get_model("wagtailcore", "Page")
    Site = apps.get_model("wagtailcore", "Site")
    HomePage = apps.get_model("home", "HomePage")

    # wagtailcore's placeholder: a plain Page titled "Welcome to your new Wagtail site!" under the root.
    # Deleting it deletes the Site pointing at it too (the foreign key cascades).
    Page.objects.filter(
        depth=2, slug="home", content_type__app_label="wagtailcore", content_type__model="page", numchild=0
    ).delete()

    root = Page.objects.get(depth=1)
    siblings = Page.objects.filter(depth=2).order_by("-path")
    last = siblings.values_list("path", flat=True).first()
    home_type, _ = ContentType.objects.get_or_create(app_label="home", model="homepage")
    now = timezone.now()

    home = HomePage.objects.create(
        title="Studio",
        draft_title="Studio",
        slug="home",
        url_path="/home/",
        path=_next_path(root.path, last),
        depth=2,
        numchild=0,
        content_type=home_type,
        locale_id=root.locale_id,
        live=True,
        first_published_at=now,
        last_published_at=now,
        body=INTRO,
    )
    root.numchild = siblings.count()
    root.save(update_fields=["numchild"])

    hostname, port = _site_address()
    Site.objects.filter(is_default_site=True).update(is_default_site=False)
    Site.objects.create(hostname=hostname, port=port, site_name="Studio", root_page_id=home.pk, is_default_site=True)


def remove_site_root(apps, schema_editor):
    # Back to a tree without this app's page; wagtailcore's welcome page is not brought back.
    HomePage = apps.get_model("home", "HomePage")
    Page = apps.get_model("wagtailcore", "Page")
    HomePage.objects.filter(depth=2, slug="home").delete()
    root = Page.objects.get(depth=1)
    root.numchild = Page.objects.filter(depth=2).count()
    root.save(update_fields=["numchild"])


class Migration(migrations.Migration):
    dependencies = (
        ("home", "0001_initial"),
        ("wagtailcore", "0097_baselogentry_uuid_action_timestamp_indexes"),
    )

    operations = (migrations.RunPython(create_site_root, remove_site_root),)
