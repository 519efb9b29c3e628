"""Target.kind lists no choices: the target-kind registry (changes/kinds.py) is the
one list of kinds, now DNS and nftables; services refuse names it does not know."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("changes", "0014_changerequest_plan_warnings")]

    operations = [
        migrations.AlterField(model_name="target", name="kind", field=models.CharField(default="dns", max_length=16)),
    ]
