"""A generic name for a kind-specific model field (issue 11): a target's cached
count of keyed values is `item_count` (DNS: RRsets). The API keeps its field name
(`rrset_count`): the serializer maps it."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("changes", "0011_execution_state_machine"),
    ]

    operations = [
        migrations.RenameField(model_name="target", old_name="rrset_count", new_name="item_count"),
        migrations.RenameField(model_name="target", old_name="rrset_count_at", new_name="item_count_at"),
    ]
