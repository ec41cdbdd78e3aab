"""``{% agency_footer %}``: who built the site, and which release is serving it."""

import os

from django import template
from django.conf import settings
from django.utils import timezone

register = template.Library()


@register.inclusion_tag("clientcore/footer.html")
def agency_footer(site_name=""):
    sha = os.environ.get("GIT_SHA", "")
    return {
        "site_name": site_name or getattr(settings, "WAGTAIL_SITE_NAME", ""),
        "agency_name": getattr(settings, "CLIENTCORE_AGENCY_NAME", "Harbour Digital"),
        "agency_url": getattr(settings, "CLIENTCORE_AGENCY_URL", "https://harbour.example.net/"),
        "release": sha[:7],
        "year": timezone.now().year,
    }
