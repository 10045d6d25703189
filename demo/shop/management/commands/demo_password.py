"""``manage.py demo_password`` (``make demo-password``): set a new password for the demo's admin.

The password is saved in ``demo/var/admin-password`` (readable by its owner only), which the
``make demo`` banner shows on every start. ``--password`` chooses it; by default a random one is
made. Flower's login (the same user and password) takes it at the next ``make demo``.
"""

from __future__ import annotations

from typing import Any

from demoproject import state
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Set a new password for the demo's admin user (shown by `make demo` from now on)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", help="the new password (default: a random one)")

    def handle(self, *args: Any, **options: Any) -> None:
        password = options["password"] or state.new_password()
        user_model = get_user_model()
        user = user_model.objects.filter(username="admin").first()
        if user is None:
            user_model.objects.create_superuser("admin", "admin@example.com", password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        state.save_password(password)
        self.stdout.write(
            f"admin password: {password}\n(saved in {state.password_path()}; `make demo` shows it "
            "on every start; Flower takes it at the next start)"
        )
