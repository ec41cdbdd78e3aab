import os

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
