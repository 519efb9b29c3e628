"""TTL-aware bake (issue 16): the target's cap on a cache-derived bake, and a change's own bake with its reason."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("changes", "0019_changerequest_reference"),
    ]

    operations = [
        migrations.AddField(
            model_name="target",
            name="bake_max_seconds",
            field=models.PositiveIntegerField(
                default=3600,
                help_text="The longest a cache-derived bake (DNS: the old TTLs) may last; bake_seconds still applies.",
                validators=[django.core.validators.MaxValueValidator(86400)],
            ),
        ),
        migrations.AddField(
            model_name="changerequest",
            name="bake_override_seconds",
            field=models.PositiveIntegerField(
                blank=True, null=True, validators=[django.core.validators.MaxValueValidator(86400)]
            ),
        ),
        migrations.AddField(
            model_name="changerequest",
            name="bake_override_reason",
            field=models.TextField(blank=True, default=""),
        ),
    ]
