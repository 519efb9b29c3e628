"""The change ticket a change belongs to (issue 15): free text such as CHG0012345."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("changes", "0018_changecomment"),
    ]

    operations = [
        migrations.AddField(
            model_name="changerequest",
            name="reference",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
    ]
