# Fewer index entries per run: the relay's index of due runs holds only rows that wait for a time
# (a countdown, a retry), and an attempt's run has no index of its own (the unique (run, number)
# index serves every lookup by run). Only indexes change: no table is rebuilt and no constraint is
# checked again. Building the new index blocks writes to the runs table while it runs: on a large
# ledger, migrate in a quiet moment.

import django.db.models.deletion
from django.db import migrations, models


def _run_indexes(schema_editor, model):
    """Names of the plain (not unique) indexes of the attempts table on ``run_id`` alone."""
    with schema_editor.connection.cursor() as cursor:
        found = schema_editor.connection.introspection.get_constraints(cursor, model._meta.db_table)
    return [
        name
        for name, info in found.items()
        if info["index"] and not info["unique"] and not info["primary_key"]
        and info["columns"] == ["run_id"]
    ]  # fmt: skip


def drop_run_index(apps, schema_editor):
    model = apps.get_model("taskkit", "TaskAttempt")
    for name in _run_indexes(schema_editor, model):
        schema_editor.execute(schema_editor._delete_index_sql(model, name))


def create_run_index(apps, schema_editor):
    model = apps.get_model("taskkit", "TaskAttempt")
    if not _run_indexes(schema_editor, model):
        field = model._meta.get_field("run")
        schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))


class Migration(migrations.Migration):
    dependencies = [
        ("taskkit", "0007_partial_state_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="taskrun",
            name="taskkit_run_state_due",
        ),
        migrations.AddIndex(
            model_name="taskrun",
            index=models.Index(
                condition=models.Q(("not_before__isnull", False)),
                fields=["state", "not_before"],
                name="taskkit_run_state_due",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="taskattempt",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_log",
                        to="taskkit.taskrun",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_run_index, create_run_index)],
        ),
    ]
