import os
from pathlib import Path

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render

from .models import Note


def index(request):
    notes = list(Note.objects.all()[:20])
    context = {
        "notes": notes,
        "note_count": Note.objects.count(),
        "git_sha": os.environ.get("GIT_SHA") or "unknown",
    }
    return render(request, "notes/index.html", context)


def inventory(request):
    """The notes and the uploaded files the app sees, in one answer: what a page listing rows with their files shows."""
    root, files = Path(settings.MEDIA_ROOT), []
    for here, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [str(Path(here, n).relative_to(root)) for n in names if not n.startswith(".") and not Path(here, n).is_symlink()]
    return JsonResponse({"notes": Note.objects.count(), "files": sorted(files)[:500]})
