from django.db import migrations, models


def add_welcome_note(apps, schema_editor):
    Note = apps.get_model("notes", "Note")
    Note.objects.create(
        title="Welcome",
        body="This note was created by the initial migration.",
    )


class Migration(migrations.Migration):
    initial = True

    dependencies = ()

    operations = (
        migrations.CreateModel(
            name="Note",
            fields=[
                (
                    "id",
                    models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"),
                ),
                ("title", models.CharField(max_length=200)),
                ("body", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ("-created_at", "-id")},
        ),
        migrations.RunPython(add_welcome_note, migrations.RunPython.noop),
    )
