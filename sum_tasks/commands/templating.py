"""Jinja2 templates (``sum_tasks/templates/``); a client repo overrides one with a file of the same name in its own ``templates/``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

LIBRARY_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@lru_cache(maxsize=8)
def environment(project_dir: str = "") -> jinja2.Environment:
    import jinja2  # here, not at the top: release and rollback render nothing, and every fab run would pay the import

    search = [str(LIBRARY_TEMPLATES)]
    if project_dir:
        client = Path(project_dir) / "templates"
        if client.is_dir() and client.resolve() != LIBRARY_TEMPLATES:
            search.insert(0, str(client))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(name: str, context: dict[str, Any], project_dir: str = "") -> str:
    """Render template `name`; an undefined variable is an error. With a `site`, `paths` is its host map."""
    if "site" in context:
        context = {"paths": context["site"].paths, **context}
    return environment(project_dir).get_template(name).render(**context)
