from django.apps import AppConfig


class DeployAppConfig(AppConfig):
    name = "tests.deployapp"
    label = "deployapp"
    default_auto_field = "django.db.models.BigAutoField"
