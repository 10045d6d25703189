# Five indexes become partial: a claim and an outcome no longer write entries into the indexes
# only the relay, the stuck panel and the filters read (see TaskRun.Meta.indexes). Rebuilding
# them takes a lock that blocks writes to the runs table for the build: on a large ledger, migrate
# in a quiet moment.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("taskkit", "0006_console"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="taskrun",
            name="taskkit_run_key",
        ),
        migrations.RemoveIndex(
            model_name="taskrun",
            name="taskkit_run_state_finished",
        ),
        migrations.RemoveIndex(
            model_name="taskrun",
            name="taskkit_run_state_requeue",
        ),
        migrations.RemoveIndex(
            model_name="taskrun",
            name="taskkit_run_state_queued",
        ),
        migrations.RemoveIndex(
            model_name="taskrun",
            name="taskkit_run_state_lease",
        ),
        migrations.AddIndex(
            model_name="taskrun",
            index=models.Index(
                condition=models.Q(("idempotency_key__isnull", False)),
                fields=["idempotency_key"],
                name="taskkit_run_key",
            ),
        ),
        migrations.AddIndex(
            model_name="taskrun",
            index=models.Index(
                condition=models.Q(("state", "QUEUED")),
                fields=["state", "requeue_at"],
                name="taskkit_run_state_requeue",
            ),
        ),
        migrations.AddIndex(
            model_name="taskrun",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", False)),
                fields=["state", "finished_at"],
                name="taskkit_run_state_finished",
            ),
        ),
        migrations.AddIndex(
            model_name="taskrun",
            index=models.Index(
                condition=models.Q(("state", "QUEUED")),
                fields=["state", "queued_at"],
                name="taskkit_run_state_queued",
            ),
        ),
        migrations.AddIndex(
            model_name="taskrun",
            index=models.Index(
                condition=models.Q(("state", "RUNNING")),
                fields=["state", "lease_until"],
                name="taskkit_run_state_lease",
            ),
        ),
    ]
