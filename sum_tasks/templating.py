"""Jinja2 templates: the client's own ``templates/`` first, then the library's."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

PACKAGE_DIR = Path(__file__).resolve().parent


def library_templates() -> Path:
    """Where the library's templates are: inside the installed package, or beside it in a checkout or vendored copy."""
    for candidate in (PACKAGE_DIR / "templates", PACKAGE_DIR.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"sum_tasks templates not found next to {PACKAGE_DIR}")


@lru_cache(maxsize=8)
def environment(project_dir: str = "") -> jinja2.Environment:
    import jinja2  # here, not at the top: release and rollback render nothing, and every fab run would pay the import

    search = [str(library_templates())]
    if project_dir:
        client = Path(project_dir) / "templates"
        if client.is_dir() and client.resolve() != library_templates().resolve():
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
    """Render template `name`; an undefined variable is an error."""
    return environment(project_dir).get_template(name).render(**context)
