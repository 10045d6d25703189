"""HTML for the run admin: stored arguments, results, errors and the attempt timeline.

Everything stored comes from task callers or task code, so every value goes through
``format_html`` / ``format_html_join``, which escape it; nothing here calls ``mark_safe``.
Model references in arguments (``{"__taskkit__": "model", ...}``) become links to the referenced
object's admin change page when the admin site registers that model.

Stored values are rendered whatever they hold (rows written before dispatch checked them, by
adoption, or by hand): text is made printable (lone surrogates and NUL escaped, so the page can
be encoded), nesting is cut at ``MAX_DEPTH`` levels, and a malformed tagged value is shown as the
plain JSON it is.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.apps import apps
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ..core.serialization import MAX_DEPTH, TAG, stored_timedelta

#: ``(model label, pk) -> URL or None``: where a model reference links to.
Linker = Callable[[str, Any], str | None]

INDENT = "  "


def join(parts: Iterable[SafeString | str]) -> SafeString:
    """Concatenate fragments, escaping those that are not already safe."""
    return format_html_join("", "{}", ((part,) for part in parts))


def _lines(items: list[SafeString]) -> SafeString:
    return join(item if i == 0 else format_html(",\n{}", item) for i, item in enumerate(items))


def admin_linker(admin_site: Any) -> Linker:
    """A ``Linker`` to the change pages of ``admin_site`` (``None`` for unregistered models)."""

    def link(label: str, pk: Any) -> str | None:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            return None
        if not admin_site.is_registered(model):
            return None
        opts = model._meta
        try:
            return reverse(
                f"{admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[pk]
            )
        except NoReverseMatch:
            return None

    return link


#: How markers that stand in for hidden values are shown.
HIDDEN_TAGS = {
    "redacted": "redacted",  # scrubbed from the ledger when the run ended
    "sensitive": "sensitive",  # a sensitive argument of a run that has not ended
}


def masked_arguments(args: Any, kwargs: Any, options: Any) -> tuple[Any, Any]:
    """The stored arguments with a live run's sensitive values masked; apply before rendering."""
    from ..core.redaction import for_display

    return for_display(args, kwargs, options)


def _hidden_or_omitted(tag: Any, value: dict[str, Any]) -> SafeString | None:
    if tag in HIDDEN_TAGS:
        return format_html('<em class="taskkit-hidden">{}</em>', HIDDEN_TAGS[tag])
    if tag == "omitted":
        return format_html(
            '<em class="taskkit-omitted">omitted: {} bytes as JSON, over '
            "TASKKIT_MAX_RESULT_BYTES ({})</em>",
            value.get("bytes"),
            value.get("limit"),
        )
    return None


def _printable(text: str) -> str:
    """``text`` as an HTML page can carry it: lone surrogates and NUL shown as escapes."""
    text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _scalar(value: Any) -> SafeString:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON, or an integer too long to print
        text = f"<{type(value).__name__}>"
    return format_html("{}", _printable(text))


def _tagged(value: dict[str, Any], link: Linker) -> SafeString | None:
    """A tagged value as text, or ``None`` if it is malformed (then shown as plain JSON)."""
    tag = value[TAG]
    hidden = _hidden_or_omitted(tag, value)
    if hidden is not None:
        return hidden
    if tag == "model":
        pk = value.get("pk")
        if isinstance(pk, dict) and TAG in pk:  # a UUID or other tagged primary key
            pk = pk.get("value")
        model = value.get("model")
        if not isinstance(model, str) or isinstance(pk, dict | list):
            return None
        text = _printable(f"{model} #{pk}")
        try:
            url = link(model, pk)
        except Exception:  # a label or pk no URL can hold
            url = None
        if url:
            return format_html('<a class="taskkit-ref" href="{}">{}</a>', url, text)
        return format_html('<span class="taskkit-ref">{}</span>', text)
    if tag == "timedelta":
        delta = stored_timedelta(value)
        return None if delta is None else format_html("timedelta({})", str(delta))
    inner = value.get("value")
    if not isinstance(tag, str) or isinstance(inner, dict | list):
        return None
    return format_html("{}({})", _printable(tag), _scalar(inner))


def render_value(value: Any, link: Linker, depth: int = 0) -> SafeString:
    """Pretty-print a stored JSON value as indented, escaped HTML with model references linked.

    Never raises on a JSON value: nesting deeper than ``MAX_DEPTH`` is cut with a note, text that
    a page cannot carry is escaped, malformed tagged values are shown as plain JSON.
    """
    pad = INDENT * (depth + 1)
    end = INDENT * depth
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return format_html(
            '<span class="taskkit-cut">… (nested deeper than {} levels; not shown)</span>',
            MAX_DEPTH,
        )
    if isinstance(value, dict):
        if TAG in value:
            tagged = _tagged(value, link)
            if tagged is not None:
                return tagged
        if not value:
            return format_html("{}", "{}")
        items = [
            format_html("{}{}: {}", pad, _scalar(str(k)), render_value(v, link, depth + 1))
            for k, v in value.items()
        ]
        return format_html("{{\n{}\n{}}}", _lines(items), end)
    if isinstance(value, list):
        if not value:
            return format_html("{}", "[]")
        items = [format_html("{}{}", pad, render_value(v, link, depth + 1)) for v in value]
        return format_html("[\n{}\n{}]", _lines(items), end)
    return _scalar(value)


def render_pre(value: Any, link: Linker) -> SafeString:
    return format_html('<pre class="taskkit-json">{}</pre>', render_value(value, link))


def one_line(text: str, limit: int = 120) -> str:
    """The first line of ``text``, cut to ``limit`` characters (for list columns)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_summary(kind: str, message: str, limit: int = 300) -> SafeString:
    """The last error for a list: one line (class and the message's first line), and the whole
    message on demand (``<details>``). The traceback is on the run's page."""
    short_type = kind.rsplit(".", 1)[-1]
    line = one_line(f"{short_type}: {message}", limit)
    full = _printable(message.strip())
    if full == line[len(short_type) + 2 :] or not full:
        return format_html(
            '<span class="taskkit-error-line" title="{}">{}</span>', kind, _printable(line)
        )
    return format_html(
        '<details class="taskkit-error"><summary class="taskkit-error-line" title="{}">{}'
        '</summary><pre class="taskkit-error-full">{}</pre></details>',
        kind,
        _printable(line),
        full,
    )


def short_age(since: datetime.datetime | None, now: datetime.datetime | None = None) -> str:
    """``since`` as a compact age: 42s, 7m, 3h, 2d."""
    if since is None:
        return "-"
    seconds = max(0, int(((now or timezone.now()) - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def error_block(kind: str, message: str, traceback: str) -> SafeString:
    if not kind and not message:
        return format_html("{}", "-")
    trace = (
        format_html("<details><summary>traceback</summary><pre>{}</pre></details>", traceback)
        if traceback
        else ""
    )
    return format_html("<code>{}</code>: {}{}", kind, message, trace)


def attempt_timeline(attempts: Iterable[Any], actions: Iterable[Any] = ()) -> SafeString:
    """A table of the run's attempts (number, outcome, start, duration, worker, error), with the
    operators' actions (admin ``LogEntry`` rows: who, when, what) between them, in time order."""
    rows: list[tuple[Any, int, SafeString]] = [
        (
            a.started_at or a.finished_at,
            0,
            format_html(
                '<tr class="taskkit-attempt" data-outcome="{}"><td>{}</td><td>{}</td><td>{}</td>'
                "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                a.outcome,
                a.number,
                a.get_outcome_display(),
                a.started_at.isoformat(sep=" ", timespec="milliseconds") if a.started_at else "-",
                f"{a.duration:.3f} s" if a.duration is not None else "-",
                a.worker or "-",
                f"{a.retry_delay:.1f} s" if a.retry_delay is not None else "-",
                error_block(a.error_type, a.error_message, a.traceback),
            ),
        )
        for a in attempts
    ]
    rows += [
        (
            entry.action_time,
            1,
            format_html(
                '<tr class="taskkit-operator"><td>-</td><td>operator</td><td>{}</td>'
                '<td colspan="4"><strong>{}</strong>: {}</td></tr>',
                entry.action_time.isoformat(sep=" ", timespec="milliseconds"),
                entry.user.get_username() if entry.user_id else "?",
                entry.change_message,
            ),
        )
        for entry in actions
    ]
    if not rows:
        return format_html("{}", "No attempt yet.")
    rows.sort(key=lambda row: (row[0], row[1]))
    return format_html(
        '<table class="taskkit-timeline"><thead><tr><th>#</th><th>outcome</th><th>started</th>'
        "<th>duration</th><th>worker</th><th>next retry in</th><th>error</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        join(row[2] for row in rows),
    )
