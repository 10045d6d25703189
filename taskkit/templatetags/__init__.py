"""Template tags and filters of taskkit's admin templates."""

__all__: list[str] = []
