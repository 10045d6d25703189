"""Support for taskkit's tests, demo and bench (an embedded Redis); not part of the wheel."""
