from django.db import migrations, models


class Migration(migrations.Migration):
    """Where each off-database checkpoint sink (file, webhook) has got to (issue 9)."""

    dependencies = [
        ("changes", "0007_operator_role_and_grant_requests"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditCheckpointPublication",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sink", models.CharField(max_length=16, unique=True)),
                ("checkpoint_id", models.PositiveBigIntegerField(default=0)),
                ("failures", models.PositiveIntegerField(default=0)),
                ("last_error", models.TextField(blank=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
    ]
