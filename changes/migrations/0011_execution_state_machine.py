"""Executions get a state machine of their own (pending, claimed, applying,
verifying, rolling_back, done) and an outcome; `attempts` (claims of one attempt)
becomes `claims`; transient failures are counted and backed off (`retries`,
`retrying_since`, `retry_at`)."""

from django.db import migrations, models

# What a running attempt was doing is what its change is doing.
MIRRORED = {"applying": "applying", "verifying": "verifying", "rolling_back": "rolling_back"}


def running_to_states(apps, schema_editor):
    Execution = apps.get_model("changes", "Execution")
    for execution in Execution.objects.filter(state="running").select_related("change"):
        execution.state = MIRRORED.get(execution.change.state, "claimed")
        execution.save(update_fields=["state"])


def states_to_running(apps, schema_editor):
    Execution = apps.get_model("changes", "Execution")
    Execution.objects.filter(state__in=["claimed", "applying", "verifying", "rolling_back"]).update(state="running")


class Migration(migrations.Migration):

    dependencies = [
        ("changes", "0010_notification_outbox"),
    ]

    operations = [
        migrations.RenameField(model_name="execution", old_name="attempts", new_name="claims"),
        migrations.AlterField(
            model_name="execution",
            name="state",
            field=models.CharField(
                choices=[("pending", "Pending"), ("claimed", "Claimed"), ("applying", "Applying"),
                         ("verifying", "Verifying"), ("rolling_back", "Rolling Back"), ("done", "Done")],
                db_index=True, default="pending", max_length=16),
        ),
        migrations.AlterField(
            model_name="execution",
            name="outcome",
            field=models.CharField(
                blank=True, max_length=20,
                choices=[("applied", "Applied"), ("apply_failed", "Apply Failed"), ("rolled_back", "Rolled Back"),
                         ("rollback_failed", "Rollback Failed"), ("drifted", "Drifted"),
                         ("approval_lapsed", "Approval Lapsed"), ("cancelled", "Cancelled")]),
        ),
        migrations.AddField(model_name="execution", name="retries",
                            field=models.PositiveIntegerField(default=0)),
        migrations.AddField(model_name="execution", name="retrying_since",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(model_name="execution", name="retry_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.RunPython(running_to_states, states_to_running),
    ]
