from django.contrib.sitemaps.views import sitemap
from django.urls import include, path

from .health import health
from .sitemaps import PagesSitemap

urlpatterns = [
    path("health/", health, name="health"),
    path(
        "sitemap.xml",
        sitemap,
        {"sitemaps": {"pages": PagesSitemap}},
        name="django.contrib.sitemaps.views.sitemap",
    ),
    path("", include("notes.urls")),
]
