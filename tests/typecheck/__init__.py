"""Files that mypy checks (``make lint``) and pytest never collects: see check_tasks.py."""
