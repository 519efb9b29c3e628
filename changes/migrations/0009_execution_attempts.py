"""An Execution is one attempt: a change may have several (re-approved after its
approvals lapsed or after drift), so the change link is a foreign key."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("changes", "0008_audit_checkpoint_publication"),
    ]

    operations = [
        migrations.AlterField(
            model_name="execution",
            name="change",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="executions",
                                    to="changes.changerequest"),
        ),
    ]
