"""Image uploads are judged by their content: libmagic names the type, the file's name has no say.

``WAGTAILIMAGES_IMAGE_FORM_BASE`` points at `SniffedImageForm`, so the admin's single and multiple
upload forms (and the edit form, when a file is replaced) all check the bytes first. Wagtail's own
checks (Willow can open it, the extension matches the format, size limits) run after ours.

python-magic loads libmagic when it is imported: without the system package (libmagic1 on Debian 12,
libmagic1t64 on Debian 13) this module, and so the site, fails to start. That is intended.
"""

import magic
from django.core.exceptions import ValidationError
from wagtail.images.forms import BaseImageForm

ALLOWED_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WebP",
}

# libmagic decides from the first bytes; 2 KiB is what python-magic recommends.
SNIFF_BYTES = 2048


def _either(names) -> str:
    *most, last = names
    return f"{', '.join(most)} or {last}" if most else last


def sniff(upload) -> str:
    """The MIME type libmagic finds in an uploaded file's first bytes; the file is rewound afterwards."""
    upload.seek(0)
    head = upload.read(SNIFF_BYTES)
    upload.seek(0)
    return magic.from_buffer(head, mime=True)


def check_image_content(upload) -> None:
    """Refuse an upload whose content is not one of `ALLOWED_TYPES`, whatever its name says."""
    found = sniff(upload)
    if found not in ALLOWED_TYPES:
        raise ValidationError(
            "“%(name)s” contains %(found)s, not an image this site accepts. Upload a %(allowed)s file.",
            code="image_content_not_allowed",
            params={"name": upload.name, "found": found, "allowed": _either(ALLOWED_TYPES.values())},
        )


class SniffedImageForm(BaseImageForm):
    """Wagtail's image form, checking an uploaded file's content with libmagic before Wagtail opens it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields.get("file")
        if field is not None:
            # Wagtail's image field opens the file with Willow in to_python, before any validator runs, and
            # reports a generic error for what Willow cannot open: check the content first, so that a
            # disguised file (text named .png, an SVG, a PDF) gets this check's message.
            wagtail_to_python = field.to_python

            def to_python(data):
                if data and hasattr(data, "read"):
                    check_image_content(data)
                return wagtail_to_python(data)

            field.to_python = to_python
