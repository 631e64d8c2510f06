"""Letters to parents: which letter each casework stage sends (seed 004), and rendering them from
versioned Jinja2 templates to HTML and PDF. Pure: the service fetches the figures and stores the
result.

The platform's templates are the `*.html.j2` files here; an LA's own version of a kind replaces the
file and may extend `_base.html.j2`. LA templates run in Jinja2's sandbox with strict undefined
variables, so a template can neither reach into Python nor silently print nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from fpdf import FPDF
from jinja2 import ChoiceLoader, DictLoader, FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

TEMPLATES = Path(__file__).resolve().parent

LETTER_KINDS: Mapping[str, str] = {
    "stage_1": "Stage 1: we are concerned about your child's attendance",
    "stage_2": "Stage 2: invitation to a school attendance meeting",
    "stage_3": "Stage 3: referral to the Education Welfare Service",
    "formal_warning": "Formal warning: possible legal action",
}

# The letter a case sends on entering a state (seed 004's stage letters; the formal warning before
# a penalty notice is proposed).
LETTER_FOR_STATE: Mapping[str, str] = {
    "stage_1": "stage_1",
    "stage_2": "stage_2",
    "stage_3_accepted": "stage_3",
    "legal_action_proposed": "formal_warning",
}

SAMPLE_CONTEXT: Mapping[str, Any] = {
    "la_name": "Local authority 999",
    "la_code": "999",
    "urn": "100001",
    "upn": "A999200025001",
    "case_id": 1,
    "letter_date": "5 January 2026",
    "title": LETTER_KINDS["stage_1"],
    "figures": {
        "to": "2 January 2026",
        "possible_sessions": 120,
        "attended_sessions": 102,
        "authorised_absence_sessions": 8,
        "unauthorised_absence_sessions": 10,
        "attendance_percent": "85.0%",
    },
}


def _environment(overrides: Mapping[str, str]) -> SandboxedEnvironment:
    loader = ChoiceLoader(
        [DictLoader({f"{kind}.html.j2": body for kind, body in overrides.items()}), FileSystemLoader(TEMPLATES)]
    )
    return SandboxedEnvironment(loader=loader, autoescape=True, undefined=StrictUndefined)


def render_letter(kind: str, context: Mapping[str, Any], override: str | None = None) -> str:
    """The letter's HTML from the LA's template for `kind` if given, else the platform's."""
    overrides = {kind: override} if override is not None else {}
    return _environment(overrides).get_template(f"{kind}.html.j2").render(**context)


def template_error(kind: str, body: str) -> str | None:
    """Why an LA's template would not give a letter (syntax, an unknown variable, a sandbox
    violation, or text the PDF's font cannot print)."""
    try:
        html_to_pdf(render_letter(kind, SAMPLE_CONTEXT | {"title": LETTER_KINDS[kind]}, body))
    except TemplateError as exc:
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # the sandbox raises plain errors for some unsafe calls, fpdf for unprintable text
        return f"{type(exc).__name__}: {exc}"
    return None


def html_to_pdf(html: str) -> bytes:
    """A printable A4 PDF of the letter (fpdf2's HTML subset: headings, paragraphs, bold, tables)."""
    pdf = FPDF(format="A4")
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    pdf.write_html(html)
    return bytes(pdf.output())


def _long_date(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def letter_context(
    *, kind: str, la_code: str, urn: str, upn: str, case_id: int, today: date, attendance: Mapping[str, Any]
) -> dict[str, Any]:
    """What a template sees: who and what the letter is about, and the pupil's figures for the year
    to date (from the thresholds service)."""
    possible = attendance["possible_sessions"]
    attended = attendance["present_sessions"] + attendance["approved_activity_sessions"]
    return {
        "la_name": f"Local authority {la_code}",
        "la_code": la_code,
        "urn": urn,
        "upn": upn,
        "case_id": case_id,
        "letter_date": _long_date(today),
        "title": LETTER_KINDS[kind],
        "figures": {
            "to": _long_date(date.fromisoformat(attendance["to"])),
            "possible_sessions": possible,
            "attended_sessions": attended,
            "authorised_absence_sessions": attendance["authorised_absence_sessions"],
            "unauthorised_absence_sessions": attendance["unauthorised_absence_sessions"],
            "attendance_percent": f"{attendance['attendance_rate'] * 100:.1f}%" if possible else "n/a",
        },
    }
