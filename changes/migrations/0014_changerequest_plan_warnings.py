"""Reviewer warnings (issue 12): the adapter's advice on a change's plan, stored
beside the plan and outside its fingerprint. Existing changes have none until
they are re-planned."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("changes", "0013_kind_options_and_baseline")]

    operations = [
        migrations.AddField(model_name="changerequest", name="plan_warnings",
                            field=models.JSONField(blank=True, default=list)),
    ]
