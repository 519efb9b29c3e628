"""The discussion on a change (issue 15): ChangeComment, append-only by the
services (no edit or delete yet)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("changes", "0017_auditevent_payload_canonical"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ChangeComment",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("body", models.TextField(help_text="1 to 5000 characters.")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("mentions", models.JSONField(blank=True, default=list)),
                ("author", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                             to=settings.AUTH_USER_MODEL)),
                ("change", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="comments",
                                             to="changes.changerequest")),
            ],
            options={
                "ordering": ["pk"],
                "indexes": [models.Index(fields=["change", "id"], name="changes_comment_change_id")],
            },
        ),
    ]
