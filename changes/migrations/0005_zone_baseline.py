import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('changes', '0004_audit_append_only'),
    ]

    operations = [
        migrations.AddField(
            model_name='target',
            name='oob_interval_seconds',
            field=models.PositiveIntegerField(default=300, help_text='Seconds between whole-zone reads for out-of-band changes; 0 = off.', validators=[django.core.validators.MaxValueValidator(604800)]),
        ),
        migrations.AddField(
            model_name='target',
            name='oob_checked_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name='ZoneBaseline',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('taken_at', models.DateTimeField()),
                ('serial', models.PositiveBigIntegerField()),
                ('rrset_count', models.PositiveIntegerField()),
                ('digest', models.CharField(max_length=64)),
                ('wire_digest', models.CharField(blank=True, max_length=64)),
                ('revision', models.PositiveIntegerField(default=1)),
                ('records', models.JSONField(default=dict)),
                ('target', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='zone_baseline', to='changes.target')),
            ],
        ),
    ]
