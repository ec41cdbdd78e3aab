from django.db import models
from wagtail.admin.panels import FieldPanel
from wagtail.fields import RichTextField
from wagtail.models import Page


class HomePage(Page):
    """The site's root page: an introduction, an optional lead image, and the latest news under it."""

    body = RichTextField(blank=True, help_text="The introduction under the title.")
    image = models.ForeignKey(
        "wagtailimages.Image",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A lead image shown beside the introduction (optional).",
    )

    content_panels = (*Page.content_panels, FieldPanel("body"), FieldPanel("image"))

    # One home page per site, at the top of the tree; news items go under it.
    parent_page_types = ("wagtailcore.Page",)
    subpage_types = ("home.NewsPage",)
    max_count_per_parent = 1

    class Meta:
        verbose_name = "home page"

    def get_context(self, request, *args, **kwargs):
        context = super().get_context(request, *args, **kwargs)
        context["news"] = NewsPage.objects.child_of(self).live().order_by("-first_published_at")[:5]
        return context


class NewsPage(Page):
    """A news item. Editors often schedule these: set "Go live date" and the publish timer does the rest."""

    body = RichTextField(blank=True)

    content_panels = (*Page.content_panels, FieldPanel("body"))

    parent_page_types = ("home.HomePage",)
    subpage_types = ()

    class Meta:
        verbose_name = "news item"
