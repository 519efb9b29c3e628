"""DNS words out of the generic models (issue 11): a change's `allow_apex` becomes
one of its kind options (`options`, a JSON object the kind reads), and
`ZoneBaseline` becomes `Baseline` with `version`/`item_count` (were the SOA
`serial` and `rrset_count`). Data is carried over; nothing else changes."""

from django.db import migrations, models


def apex_to_options(apps, schema_editor):
    ChangeRequest = apps.get_model("changes", "ChangeRequest")
    ChangeRequest.objects.filter(allow_apex=True).update(options={"allow_apex": True})


def options_to_apex(apps, schema_editor):
    ChangeRequest = apps.get_model("changes", "ChangeRequest")
    ChangeRequest.objects.filter(options__allow_apex=True).update(allow_apex=True)


class Migration(migrations.Migration):
    dependencies = [("changes", "0012_generic_kind_fields")]

    operations = [
        migrations.AddField(model_name="changerequest", name="options",
                            field=models.JSONField(blank=True, default=dict)),
        migrations.RunPython(apex_to_options, options_to_apex),
        migrations.RemoveField(model_name="changerequest", name="allow_apex"),
        migrations.RenameModel(old_name="ZoneBaseline", new_name="Baseline"),
        migrations.RenameField(model_name="baseline", old_name="serial", new_name="version"),
        migrations.RenameField(model_name="baseline", old_name="rrset_count", new_name="item_count"),
        migrations.AlterField(
            model_name="baseline", name="target",
            field=models.OneToOneField(on_delete=models.deletion.CASCADE, related_name="baseline",
                                       to="changes.target"),
        ),
    ]
