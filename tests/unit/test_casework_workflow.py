"""Staged intervention casework (domain.md §5, seed 004 Halton framework): transitions, guards, roles and clocks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.domain.calendar import SchoolCalendar, Term
from shared.domain.casework import (
    ACTION_DETAILS,
    ACTION_EFFECTS,
    EFFECTS,
    EVENTS,
    GUARDS,
    MISSING_EVIDENCE,
    NATIONAL_CLOCK_POLICY,
    OPEN_STATES,
    STATES,
    TRANSITIONS,
    WIDNES_CLOCK_POLICY,
    WORKFLOW_JSON,
    ActionKind,
    Actor,
    AttendanceContract,
    CaseFacts,
    CaseState,
    ClockPolicy,
    CloseOutcome,
    ContractKind,
    DueWindow,
    Evidence,
    PenaltyNoticeIssued,
    Reason,
    SchoolAttendanceMeeting,
    Transition,
    TransitionRefused,
    apm_follow_up_due,
    apply,
    available_transitions,
    facts_from_actions,
    letter_due,
    mermaid,
    penalty_notice_amounts,
    review_due,
)

D = date.fromisoformat
S = CaseState
NO_CASE = None
ALL_STATES: tuple[CaseState | None, ...] = (NO_CASE, *CaseState)


def ev(kind: str, on: str, /, **details: Any) -> Evidence:
    return Evidence(ActionKind(kind), D(on), details)


# --- a complete evidence bundle (stage 2 began on 1 Oct 2024) ---------------------------------

STAGE_2_START = D("2024-10-01")
CONTACT = ev(
    "contact",
    "2024-09-10",
    method="call",
    with_whom="mother",
    summary="Discussed absences",
    reasons_or_barriers="Anxiety",
)
CONTACT_NO_REASONS = ev("contact", "2024-09-10", method="home_visit", with_whom="father", summary="No answer")
STAGE_1_LETTER = ev("letter_sent", "2024-09-12", letter="stage_1", posted_on="2024-09-12", address_recorded=True)
STAGE_1_LETTER_NO_ADDRESS = ev(
    "letter_sent", "2024-09-12", letter="stage_1", posted_on="2024-09-12", address_recorded=False
)
EARLY_HELP_CONSIDERED = ev("early_help", "2024-09-13", status="considered", notes="Discussed with DSL")
STAGE_2_LETTER = ev("letter_sent", "2024-10-02", letter="stage_2", posted_on="2024-10-02", address_recorded=True)
SAM = ev(
    "school_attendance_meeting",
    "2024-10-07",
    held_on="2024-10-07",
    attendees=["mother", "attendance lead"],
    barriers=["anxiety"],
    actions=["key adult at the gate"],
    target_percent="95",
    target_from="2024-10-08",
    target_to="2024-11-15",
)
FURTHER_OFFER = ev("early_help", "2024-10-07", status="offered", notes="ICART referral offered at the SAM")
REVIEW = ev("review", "2024-11-18", held_on="2024-11-18", outcome="no_improvement")

STAGE_1_BUNDLE = (CONTACT, STAGE_1_LETTER, EARLY_HELP_CONSIDERED)
FULL_BUNDLE = (*STAGE_1_BUNDLE, STAGE_2_LETTER, SAM, FURTHER_OFFER, REVIEW)

PLAN = ev("plan_route", "2024-10-03", plan="CIN", attendance_actions=["social worker to walk pupil in"])
PLAN_WITHOUT_ACTIONS = ev("plan_route", "2024-10-03", plan="MAP")
CONSULTATION = ev(
    "lead_professional_consultation",
    "2024-11-20",
    with_role="social_worker",
    held_on="2024-11-20",
    agreed_enforcement_referral=True,
)
CONSULTATION_NOT_AGREED = ev(
    "lead_professional_consultation",
    "2024-11-20",
    with_role="lead_professional",
    held_on="2024-11-20",
    agreed_enforcement_referral=False,
)
PN_WARNING_LETTER = ev(
    "letter_sent", "2025-01-06", letter="penalty_notice_warning", posted_on="2025-01-06", address_recorded=True
)
INTERVIEW = ev("interview_under_caution", "2025-02-03", held_on="2025-02-03")


def facts(state: CaseState | None, *evidence: Evidence, **overrides: Any) -> CaseFacts:
    base = CaseFacts(
        state=state,
        state_entered_on=None if state is None else D("2024-10-01"),
        stage_2_started_on=STAGE_2_START,
        evidence=evidence,
    )
    return replace(base, **overrides)


def satisfied(state: CaseState | None) -> CaseFacts:
    """Facts under which every guard from `state` passes."""
    return facts(state, *FULL_BUNDLE, INTERVIEW, apm_count=1, previous_state=S.STAGE_2 if state is S.CLOSED else None)


PAYLOADS: dict[str, dict[str, Any]] = {
    "open": {"reason": "support map step 1", "alert_rule_id": "support_map_days"},
    "escalate_to_stage_2": {"reason": "No engagement"},
    "review_recorded": {"held_on": "2024-11-18", "outcome": "no_improvement"},
    "refer_to_ews": {"summary": "Attendance 71 %, falling behind in English"},
    "ews_declined": {"reason": "No SAM minutes"},
    "ews_accepted": {"route": "attendance_planning_meeting"},
    "attendance_planning_meeting_held": {
        "held_on": "2025-01-13",
        "parents_present": False,
        "minutes": "Parents did not attend; plan prepared",
        "actions": ["daily call"],
    },
    "new_information": {"reason": "Unsupported additional need raised at the APM"},
    "propose_legal_action": {"proposed": "prosecution_s444_1", "reason": "APM target missed"},
    "decide_legal_action": {"decision": "prosecution_s444_1", "decided_on": "2025-02-10"},
    "reject_legal_action": {"reason": "Premature"},
    "close": {"outcome": "left_school"},
    "reopen": {"reason": "Closed in error"},
}

# The workflow of domain.md §5, written out independently of the table.
EXPECTED_EDGES: dict[tuple[str, CaseState | None], CaseState] = {
    ("open", NO_CASE): S.STAGE_1,
    ("escalate_to_stage_2", S.STAGE_1): S.STAGE_2,
    ("review_recorded", S.STAGE_2): S.STAGE_2,
    ("refer_to_ews", S.STAGE_2): S.STAGE_3_REFERRED,
    ("ews_declined", S.STAGE_3_REFERRED): S.STAGE_2,
    ("ews_accepted", S.STAGE_3_REFERRED): S.STAGE_3_ACCEPTED,
    ("attendance_planning_meeting_held", S.STAGE_3_ACCEPTED): S.STAGE_3_ACCEPTED,
    ("new_information", S.STAGE_3_ACCEPTED): S.STAGE_2,
    ("propose_legal_action", S.STAGE_3_ACCEPTED): S.LEGAL_ACTION_PROPOSED,
    ("propose_legal_action", S.LEGAL_ACTION): S.LEGAL_ACTION_PROPOSED,
    ("decide_legal_action", S.LEGAL_ACTION_PROPOSED): S.LEGAL_ACTION,
    ("reject_legal_action", S.LEGAL_ACTION_PROPOSED): S.STAGE_3_ACCEPTED,
    **{("close", state): S.CLOSED for state in OPEN_STATES},
    ("reopen", S.CLOSED): S.STAGE_2,  # the state `satisfied` says it was closed from
}

SCHOOL_OR_LA = {Actor.SCHOOL, Actor.LA_OFFICER}
EXPECTED_WHO: dict[tuple[str, CaseState | None], set[Actor]] = {
    ("open", NO_CASE): set(Actor),
    ("escalate_to_stage_2", S.STAGE_1): set(Actor),
    ("review_recorded", S.STAGE_2): SCHOOL_OR_LA,
    ("refer_to_ews", S.STAGE_2): SCHOOL_OR_LA,
    ("ews_declined", S.STAGE_3_REFERRED): {Actor.LA_OFFICER},
    ("ews_accepted", S.STAGE_3_REFERRED): {Actor.LA_OFFICER},
    ("attendance_planning_meeting_held", S.STAGE_3_ACCEPTED): {Actor.LA_OFFICER},
    ("new_information", S.STAGE_3_ACCEPTED): {Actor.LA_OFFICER},
    ("propose_legal_action", S.STAGE_3_ACCEPTED): {Actor.LA_OFFICER, Actor.SYSTEM},
    ("propose_legal_action", S.LEGAL_ACTION): {Actor.LA_OFFICER, Actor.SYSTEM},
    ("decide_legal_action", S.LEGAL_ACTION_PROPOSED): {Actor.LA_OFFICER},
    ("reject_legal_action", S.LEGAL_ACTION_PROPOSED): {Actor.LA_OFFICER},
    ("close", S.STAGE_1): SCHOOL_OR_LA,
    ("close", S.STAGE_2): SCHOOL_OR_LA,
    **{("close", state): {Actor.LA_OFFICER} for state in OPEN_STATES - {S.STAGE_1, S.STAGE_2}},
    ("reopen", S.CLOSED): SCHOOL_OR_LA,
}


def refusal(state: CaseState | None, event: str, payload: Any, case: CaseFacts, role: str) -> TransitionRefused:
    with pytest.raises(TransitionRefused) as caught:
        apply(state, event, payload, case, role)
    return caught.value


def missing_ids(state: CaseState | None, event: str, payload: Any, case: CaseFacts) -> list[str]:
    """The missing evidence ids when `event` is refused, or [] when it is allowed."""
    try:
        apply(state, event, payload, case, Actor.LA_OFFICER)
    except TransitionRefused as refused:
        assert refused.kind == "missing_evidence", refused.message
        return [item.id for item in refused.missing]
    return []


# --- the table --------------------------------------------------------------------------------


def test_table_has_exactly_the_expected_edges() -> None:
    assert {(row.event, source) for row in TRANSITIONS for source in row.source} == set(EXPECTED_EDGES)


def test_each_event_leaves_each_state_by_at_most_one_row() -> None:
    pairs = [(row.event, source) for row in TRANSITIONS for source in row.source]
    assert len(pairs) == len(set(pairs))


@pytest.mark.parametrize(("event", "source"), list(EXPECTED_EDGES), ids=lambda value: str(value))
def test_every_edge_is_allowed_from_its_source(event: str, source: CaseState | None) -> None:
    role = sorted(EXPECTED_WHO[event, source])[0]
    outcome = apply(source, event, PAYLOADS[event], satisfied(source), role)
    assert outcome.target is EXPECTED_EDGES[event, source]
    assert outcome.source is source
    assert outcome.event == event


@pytest.mark.parametrize("event", EVENTS)
def test_every_event_is_refused_from_every_other_state(event: str) -> None:
    others = [state for state in ALL_STATES if (event, state) not in EXPECTED_EDGES]
    assert others
    for state in others:
        refused = refusal(state, event, PAYLOADS[event], satisfied(state), Actor.LA_OFFICER)
        assert refused.kind == "not_allowed", (event, state)
        assert refused.missing == ()


def test_unknown_event_is_not_allowed() -> None:
    refused = refusal(S.STAGE_1, "skip_to_court", {}, satisfied(S.STAGE_1), Actor.LA_OFFICER)
    assert refused.kind == "not_allowed"
    assert "unknown event" in refused.message


def test_facts_must_describe_the_same_state() -> None:
    with pytest.raises(ValueError, match="facts describe a case in stage_2"):
        apply(S.STAGE_1, "close", PAYLOADS["close"], satisfied(S.STAGE_2), Actor.SCHOOL)


def test_every_guard_and_effect_is_used_and_every_state_described() -> None:
    assert {guard for row in TRANSITIONS for guard in row.guards} == set(GUARDS)
    used = {effect for row in TRANSITIONS for effect in row.effects}
    used |= {effect for row in TRANSITIONS for effects in row.effects_when.values() for effect in effects}
    used |= {effect for effects in ACTION_EFFECTS.values() for effect in effects}
    assert used == set(EFFECTS)
    assert set(STATES) == set(CaseState)
    assert set(ACTION_DETAILS) == set(ActionKind)


def test_a_row_naming_an_unknown_guard_fails_at_definition() -> None:
    with pytest.raises(ValueError, match="unknown guards or effects: no_such_guard"):
        Transition("x", frozenset({S.STAGE_1}), S.STAGE_2, frozenset(Actor), Reason, "x", guards=("no_such_guard",))


def test_a_row_branching_on_a_missing_field_fails_at_definition() -> None:
    with pytest.raises(ValueError, match="branches on a field"):
        Transition("x", frozenset({S.STAGE_1}), S.STAGE_2, frozenset(Actor), Reason, "x", target_when={"a": S.CLOSED})


# --- roles --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("event", "source"), list(EXPECTED_WHO), ids=lambda value: str(value))
def test_roles_per_edge(event: str, source: CaseState | None) -> None:
    for actor in Actor:
        if actor in EXPECTED_WHO[event, source]:
            apply(source, event, PAYLOADS[event], satisfied(source), actor)
        else:
            refused = refusal(source, event, PAYLOADS[event], satisfied(source), actor)
            assert refused.kind == "forbidden_role", (event, source, actor)


@pytest.mark.parametrize("role", [Actor.SYSTEM, Actor.SCHOOL])
def test_only_an_la_officer_decides_legal_action(role: Actor) -> None:
    refused = refusal(
        S.LEGAL_ACTION_PROPOSED,
        "decide_legal_action",
        PAYLOADS["decide_legal_action"],
        satisfied(S.LEGAL_ACTION_PROPOSED),
        role,
    )
    assert refused.kind == "forbidden_role"
    assert "la_officer" in refused.message


def test_the_system_only_opens_escalates_and_proposes() -> None:
    system_events = {row.event for row in TRANSITIONS if Actor.SYSTEM in row.who}
    assert system_events == {"open", "escalate_to_stage_2", "propose_legal_action"}
    into_legal_action = [row for row in TRANSITIONS if S.LEGAL_ACTION in row.targets()]
    assert into_legal_action and all(Actor.SYSTEM not in row.who for row in into_legal_action)


def test_unknown_role_is_forbidden() -> None:
    assert refusal(NO_CASE, "open", PAYLOADS["open"], CaseFacts(), "parent").kind == "forbidden_role"


def test_roles_are_accepted_as_strings() -> None:
    assert apply(NO_CASE, "open", PAYLOADS["open"], CaseFacts(), "system").target is S.STAGE_1


def test_available_transitions() -> None:
    assert [row.event for row in available_transitions(S.STAGE_3_ACCEPTED, Actor.SYSTEM)] == ["propose_legal_action"]
    assert [row.event for row in available_transitions(S.STAGE_3_ACCEPTED, Actor.SCHOOL)] == []
    assert [row.event for row in available_transitions(S.STAGE_2, "school")] == [
        "review_recorded",
        "refer_to_ews",
        "close",
    ]


# --- payloads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "event", "payload", "problem"),
    [
        (S.STAGE_3_REFERRED, "ews_declined", {}, "reason"),
        (S.STAGE_1, "close", {"outcome": "other"}, "needs notes"),
        (S.STAGE_1, "close", {"outcome": "improved", "colour": "red"}, "colour"),
        (S.STAGE_3_ACCEPTED, "propose_legal_action", {"proposed": "no_action", "reason": "x"}, "not no_action"),
        (
            S.LEGAL_ACTION_PROPOSED,
            "decide_legal_action",
            {"decision": "penalty_notice", "decided_on": "2025-02-10"},
            "parent_ref",
        ),
        (NO_CASE, "open", None, "reason"),
    ],
)
def test_invalid_payloads_are_refused(state: CaseState | None, event: str, payload: Any, problem: str) -> None:
    refused = refusal(state, event, payload, satisfied(state), Actor.LA_OFFICER)
    assert refused.kind == "invalid_payload"
    assert problem in refused.message


def test_payload_may_be_a_model_instance() -> None:
    outcome = apply(S.STAGE_3_REFERRED, "ews_declined", Reason(reason="x"), satisfied(S.STAGE_3_REFERRED), "la_officer")
    assert outcome.payload == Reason(reason="x")
    assert outcome.records is None


# --- stage 1 -> stage 2 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        ((CONTACT, STAGE_1_LETTER), []),
        ((CONTACT_NO_REASONS, STAGE_1_LETTER_NO_ADDRESS), []),
        ((STAGE_1_LETTER,), ["stage_1_contact"]),
        ((CONTACT,), ["stage_1_letter"]),
        ((CONTACT, STAGE_2_LETTER), ["stage_1_letter"]),
        ((), ["stage_1_contact", "stage_1_letter"]),
    ],
)
def test_escalation_needs_stage_1_evidence(evidence: tuple[Evidence, ...], expected: list[str]) -> None:
    payload = PAYLOADS["escalate_to_stage_2"]
    assert missing_ids(S.STAGE_1, "escalate_to_stage_2", payload, facts(S.STAGE_1, *evidence)) == expected


def test_escalation_effects() -> None:
    outcome = apply(S.STAGE_1, "escalate_to_stage_2", {"reason": "x"}, facts(S.STAGE_1, *STAGE_1_BUNDLE), "system")
    assert outcome.effects == ("stop_stage_clocks", "start_letter_clock")
    assert outcome.changes_state


# --- stage 2 reviews --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "target", "effects"),
    [
        ("improved", S.CLOSED, ("stop_review_clock", "stop_stage_clocks")),
        ("some_improvement", S.STAGE_2, ("stop_review_clock", "start_review_clock")),
        ("no_improvement", S.STAGE_2, ("stop_review_clock",)),
        ("no_engagement", S.STAGE_2, ("stop_review_clock",)),
    ],
)
def test_review_outcomes(outcome: str, target: CaseState, effects: tuple[str, ...]) -> None:
    result = apply(
        S.STAGE_2, "review_recorded", {"held_on": "2024-11-18", "outcome": outcome}, satisfied(S.STAGE_2), "school"
    )
    assert result.target is target
    assert result.effects == effects
    assert result.records is ActionKind.REVIEW
    assert result.close_outcome is (CloseOutcome.IMPROVED if target is S.CLOSED else None)
    assert result.changes_state is (target is S.CLOSED)


@pytest.mark.parametrize(
    "plan",
    [
        SAM,
        PLAN_WITHOUT_ACTIONS,
        ev("attendance_contract", "2024-10-07", kind="parenting_contract", agreed_on="2024-10-07", target_percent=95),
    ],
)
def test_a_review_needs_a_plan_to_review(plan: Evidence) -> None:
    payload = PAYLOADS["review_recorded"]
    assert missing_ids(S.STAGE_2, "review_recorded", payload, facts(S.STAGE_2, plan)) == []
    assert missing_ids(S.STAGE_2, "review_recorded", payload, facts(S.STAGE_2, CONTACT)) == ["plan_to_review"]


# --- referral to the EWS ------------------------------------------------------------------------


def without(*removed: Evidence, adding: tuple[Evidence, ...] = ()) -> tuple[Evidence, ...]:
    return (*(record for record in FULL_BUNDLE if record not in removed), *adding)


def referral_missing(evidence: tuple[Evidence, ...], **overrides: Any) -> list[str]:
    return missing_ids(S.STAGE_2, "refer_to_ews", PAYLOADS["refer_to_ews"], facts(S.STAGE_2, *evidence, **overrides))


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        (FULL_BUNDLE, []),
        (without(CONTACT), ["stage_1_contact", "reasons_or_barriers"]),
        (without(CONTACT, adding=(CONTACT_NO_REASONS,)), ["reasons_or_barriers"]),
        (without(EARLY_HELP_CONSIDERED), ["early_help_considered"]),
        (without(STAGE_1_LETTER), ["stage_1_letter"]),
        (without(STAGE_1_LETTER, adding=(STAGE_1_LETTER_NO_ADDRESS,)), ["stage_1_letter_address"]),
        (without(STAGE_2_LETTER), ["stage_2_letter"]),
        (without(SAM), ["school_attendance_meeting"]),
        (without(REVIEW), ["stage_2_review"]),
        (
            without(REVIEW, adding=(ev("review", "2024-11-18", held_on="2024-11-18", outcome="some_improvement"),)),
            ["stage_2_review_outcome"],
        ),
        (
            # The latest review decides: improvement after an earlier failure means another review period.
            (*FULL_BUNDLE, ev("review", "2024-12-16", held_on="2024-12-16", outcome="some_improvement")),
            ["stage_2_review_outcome"],
        ),
        (without(REVIEW, adding=(ev("review", "2024-11-18", held_on="2024-11-18", outcome="no_engagement"),)), []),
        (without(FURTHER_OFFER), ["further_early_help_offer"]),
        (
            (
                *without(FURTHER_OFFER),
                ev("early_help", "2024-10-08", status="refused", notes="Family declined ICART"),
            ),
            [],
        ),
        (
            # Early help recorded only once stage 2 began was not considered at stage 1.
            without(EARLY_HELP_CONSIDERED, FURTHER_OFFER, adding=(ev("early_help", "2024-10-01", status="offered"),)),
            ["early_help_considered"],
        ),
        (
            (),
            [
                "stage_1_contact",
                "reasons_or_barriers",
                "early_help_considered",
                "stage_1_letter",
                "stage_2_letter",
                "school_attendance_meeting",
                "stage_2_review",
                "further_early_help_offer",
            ],
        ),
    ],
    ids=lambda value: "" if isinstance(value, tuple) else "-".join(value) or "complete",
)
def test_referral_evidence_sam_route(evidence: tuple[Evidence, ...], expected: list[str]) -> None:
    assert referral_missing(evidence) == expected


@pytest.mark.parametrize(
    ("stage_1_status", "owed"),
    [("considered", True), ("not_appropriate", True), ("refused", True), ("offered", False), ("accepted", False)],
)
def test_further_early_help_offer_is_owed_unless_offered_or_accepted_at_stage_1(
    stage_1_status: str, owed: bool
) -> None:
    stage_1 = ev("early_help", "2024-09-13", status=stage_1_status, notes="n")
    evidence = without(EARLY_HELP_CONSIDERED, FURTHER_OFFER, adding=(stage_1,))
    assert referral_missing(evidence) == (["further_early_help_offer"] if owed else [])


def test_stage_2_start_defaults_to_when_the_state_was_entered() -> None:
    late_entry = D("2024-10-10")  # after FURTHER_OFFER: that offer now counts as stage 1's
    assert referral_missing(FULL_BUNDLE, stage_2_started_on=None, state_entered_on=late_entry) == []
    assert referral_missing(without(EARLY_HELP_CONSIDERED), stage_2_started_on=None, state_entered_on=late_entry) == []
    early_entry = D("2024-09-01")  # before every early help record: none was at stage 1
    assert referral_missing(FULL_BUNDLE, stage_2_started_on=None, state_entered_on=early_entry) == [
        "early_help_considered"
    ]


MAP_ROUTE = (*STAGE_1_BUNDLE, STAGE_2_LETTER, PLAN, CONSULTATION)


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        (MAP_ROUTE, []),
        (tuple(record for record in MAP_ROUTE if record is not CONSULTATION), ["lead_professional_consultation"]),
        (
            tuple(record for record in MAP_ROUTE if record is not CONSULTATION) + (CONSULTATION_NOT_AGREED,),
            ["enforcement_referral_agreed"],
        ),
        ((*MAP_ROUTE, CONSULTATION_NOT_AGREED), []),
        (tuple(record for record in MAP_ROUTE if record is not STAGE_2_LETTER), ["stage_2_letter"]),
        (tuple(record for record in MAP_ROUTE if record is not CONTACT), ["stage_1_contact", "reasons_or_barriers"]),
        (
            (*STAGE_1_BUNDLE, STAGE_2_LETTER, PLAN_WITHOUT_ACTIONS, CONSULTATION),
            ["school_attendance_meeting", "stage_2_review", "further_early_help_offer", "plan_attendance_actions"],
        ),
        ((*FULL_BUNDLE, PLAN_WITHOUT_ACTIONS, CONSULTATION), []),
        # A pupil in a plan needs the consultation even when the SAM route is complete.
        ((*FULL_BUNDLE, PLAN), ["lead_professional_consultation"]),
    ],
    ids=lambda value: "" if isinstance(value, tuple) else "-".join(value) or "complete",
)
def test_referral_evidence_map_cin_cp_route(evidence: tuple[Evidence, ...], expected: list[str]) -> None:
    assert referral_missing(evidence) == expected


def test_referral_refusal_carries_messages() -> None:
    refused = refusal(
        S.STAGE_2, "refer_to_ews", PAYLOADS["refer_to_ews"], facts(S.STAGE_2, *without(STAGE_2_LETTER)), "school"
    )
    assert refused.kind == "missing_evidence"
    assert [(item.id, item.message) for item in refused.missing] == [
        ("stage_2_letter", MISSING_EVIDENCE["stage_2_letter"])
    ]
    assert "No stage 2 letter has been recorded" in refused.message


# --- stage 3 ------------------------------------------------------------------------------------


def test_ews_acceptance_starts_a_new_investigation() -> None:
    outcome = apply(
        S.STAGE_3_REFERRED, "ews_accepted", PAYLOADS["ews_accepted"], satisfied(S.STAGE_3_REFERRED), "la_officer"
    )
    assert outcome.effects == ("reset_apm_count",)


@pytest.mark.parametrize(("apm_count", "expected"), [(0, []), (1, []), (2, ["attendance_planning_meeting_limit"])])
def test_at_most_two_attendance_planning_meetings(apm_count: int, expected: list[str]) -> None:
    event = "attendance_planning_meeting_held"
    case = facts(S.STAGE_3_ACCEPTED, apm_count=apm_count)
    assert missing_ids(S.STAGE_3_ACCEPTED, event, PAYLOADS[event], case) == expected
    if not expected:
        outcome = apply(S.STAGE_3_ACCEPTED, event, PAYLOADS[event], case, "la_officer")
        assert outcome.target is S.STAGE_3_ACCEPTED
        assert not outcome.changes_state
        assert outcome.effects == ("count_apm", "start_apm_follow_up_clock")
        assert outcome.records is ActionKind.ATTENDANCE_PLANNING_MEETING


@pytest.mark.parametrize(
    ("evidence", "apm_count", "expected"),
    [
        ((), 0, ["enforcement_step"]),
        ((), 1, []),
        ((PN_WARNING_LETTER,), 0, []),
        ((STAGE_2_LETTER,), 0, ["enforcement_step"]),
    ],
)
def test_a_proposal_follows_the_accepted_route(
    evidence: tuple[Evidence, ...], apm_count: int, expected: list[str]
) -> None:
    case = facts(S.STAGE_3_ACCEPTED, *evidence, apm_count=apm_count)
    assert missing_ids(S.STAGE_3_ACCEPTED, "propose_legal_action", PAYLOADS["propose_legal_action"], case) == expected


# --- legal action --------------------------------------------------------------------------------


def pn(decided_on: str, parent_ref: str = "parent_1") -> dict[str, Any]:
    return {"decision": "penalty_notice", "decided_on": decided_on, "parent_ref": parent_ref}


@pytest.mark.parametrize(
    ("earlier", "expected"),
    [
        ((), []),
        ((("2023-03-01", "parent_1"),), []),
        ((("2023-03-01", "parent_1"), ("2024-06-01", "parent_1")), ["penalty_notice_limit"]),
        ((("2023-03-01", "parent_2"), ("2024-06-01", "parent_1")), []),  # notices are per parent
        ((("2022-01-01", "parent_1"), ("2024-06-01", "parent_1")), []),  # older than 3 years
        ((("2022-02-10", "parent_1"), ("2024-06-01", "parent_1")), []),  # on the anniversary: no longer counts
        ((("2022-02-11", "parent_1"), ("2024-06-01", "parent_1")), ["penalty_notice_limit"]),
    ],
)
def test_at_most_two_penalty_notices_to_a_parent_in_three_years(
    earlier: tuple[tuple[str, str], ...], expected: list[str]
) -> None:
    notices = tuple(PenaltyNoticeIssued(D(on), parent) for on, parent in earlier)
    case = facts(S.LEGAL_ACTION_PROPOSED, penalty_notices=notices)
    assert missing_ids(S.LEGAL_ACTION_PROPOSED, "decide_legal_action", pn("2025-02-10"), case) == expected


def test_a_penalty_notice_starts_the_payment_clocks() -> None:
    outcome = apply(
        S.LEGAL_ACTION_PROPOSED, "decide_legal_action", pn("2025-02-10"), facts(S.LEGAL_ACTION_PROPOSED), "la_officer"
    )
    assert outcome.target is S.LEGAL_ACTION
    assert outcome.effects == ("start_payment_clocks",)
    assert outcome.records is ActionKind.LEGAL_DECISION


@pytest.mark.parametrize(
    ("decision", "evidence", "expected"),
    [
        ("prosecution_s444_1a", (), ["interview_under_caution"]),
        ("prosecution_s444_1a", (INTERVIEW,), []),
        (
            "prosecution_s444_1a",
            (ev("interview_under_caution", "2025-03-01", held_on="2025-03-01"),),
            ["interview_under_caution"],
        ),
        ("prosecution_s444_1", (), []),
        ("education_supervision_order", (), []),
        ("parenting_order", (), []),
    ],
)
def test_s444_1a_needs_an_interview_under_caution(
    decision: str, evidence: tuple[Evidence, ...], expected: list[str]
) -> None:
    payload = {"decision": decision, "decided_on": "2025-02-10"}
    case = facts(S.LEGAL_ACTION_PROPOSED, *evidence)
    assert missing_ids(S.LEGAL_ACTION_PROPOSED, "decide_legal_action", payload, case) == expected


def test_deciding_no_action_returns_to_stage_3() -> None:
    payload = {"decision": "no_action", "decided_on": "2025-02-10", "notes": "Attendance now 96 %"}
    outcome = apply(
        S.LEGAL_ACTION_PROPOSED, "decide_legal_action", payload, facts(S.LEGAL_ACTION_PROPOSED), "la_officer"
    )
    assert outcome.target is S.STAGE_3_ACCEPTED
    assert outcome.effects == ()


# --- close and reopen ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", sorted(OPEN_STATES))
def test_close_and_reopen_round_trip(state: CaseState) -> None:
    closing = apply(state, "close", {"outcome": "moved_la"}, facts(state), Actor.LA_OFFICER)
    assert closing.target is S.CLOSED
    assert closing.close_outcome is CloseOutcome.MOVED_LA
    assert closing.effects == ("stop_stage_clocks",)
    closed = facts(S.CLOSED, previous_state=state)
    reopening = apply(S.CLOSED, "reopen", PAYLOADS["reopen"], closed, Actor.LA_OFFICER)
    assert reopening.target is state
    assert reopening.close_outcome is None


def test_reopen_needs_the_state_closed_from() -> None:
    assert missing_ids(S.CLOSED, "reopen", PAYLOADS["reopen"], facts(S.CLOSED)) == ["closed_from"]
    assert missing_ids(S.CLOSED, "reopen", PAYLOADS["reopen"], facts(S.CLOSED, previous_state=S.CLOSED)) == [
        "closed_from"
    ]


def test_a_school_cannot_close_an_la_led_case() -> None:
    refused = refusal(S.STAGE_3_REFERRED, "close", {"outcome": "improved"}, facts(S.STAGE_3_REFERRED), Actor.SCHOOL)
    assert refused.kind == "forbidden_role"


# --- evidence records and facts ----------------------------------------------------------------


def test_parenting_contract_is_an_alias_for_attendance_contract() -> None:
    contract = AttendanceContract.model_validate(
        {"kind": "parenting_contract", "agreed_on": "2024-10-07", "target_percent": "95"}
    )
    assert contract.kind is ContractKind.ATTENDANCE_CONTRACT
    assert contract.model_dump(mode="json")["kind"] == "attendance_contract"


def test_a_sam_target_lies_between_two_dates() -> None:
    with pytest.raises(ValidationError, match="target_from must be before target_to"):
        SchoolAttendanceMeeting.model_validate(
            {**SAM.details.model_dump(), "target_from": "2024-11-15", "target_to": "2024-11-15"}
        )


@pytest.mark.parametrize(
    ("kind", "details", "problem"),
    [
        ("contact", {"method": "pigeon", "with_whom": "mother", "summary": "x"}, "method"),
        ("contact", {"method": "call", "with_whom": "mother", "summary": "x", "mood": "cross"}, "mood"),
        ("early_help", {"status": "not_appropriate"}, "needs notes"),
        ("school_attendance_meeting", {**SAM.details.model_dump(), "actions": []}, "actions"),
        ("note", {"text": ""}, "text"),
    ],
)
def test_evidence_details_are_validated(kind: str, details: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ev(kind, "2024-10-01", **details)


def test_every_evidence_field_is_described() -> None:
    for model in ACTION_DETAILS.values():
        assert model.__doc__
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name}"


def test_facts_from_actions() -> None:
    first_apm = ev("attendance_planning_meeting", "2024-06-03", held_on="2024-06-03", parents_present=True, minutes="m")
    second_apm = ev(
        "attendance_planning_meeting", "2025-01-13", held_on="2025-01-13", parents_present=False, minutes="m"
    )
    notice = ev("legal_decision", "2025-02-10", **pn("2025-02-10"))
    earlier = PenaltyNoticeIssued(D("2023-05-01"), "parent_2")
    case = facts_from_actions(
        [notice, second_apm, CONTACT, first_apm],
        state=S.LEGAL_ACTION,
        state_entered_on=D("2025-02-10"),
        previous_state=S.LEGAL_ACTION_PROPOSED,
        stage_2_started_on=STAGE_2_START,
        investigation_started_on=D("2025-01-06"),
        earlier_penalty_notices=[earlier],
    )
    assert case.apm_count == 1  # the June APM belonged to an earlier investigation
    assert case.penalty_notices == (earlier, PenaltyNoticeIssued(D("2025-02-10"), "parent_1"))
    assert [record.on for record in case.evidence] == sorted(record.on for record in case.evidence)
    assert case.previous_state is S.LEGAL_ACTION_PROPOSED
    assert facts_from_actions([first_apm, second_apm], state=S.STAGE_3_ACCEPTED, state_entered_on=None).apm_count == 2


def test_plan_route_is_the_latest_plan() -> None:
    assert facts(S.STAGE_2).plan_route is None
    assert facts(S.STAGE_2, PLAN_WITHOUT_ACTIONS, ev("plan_route", "2024-11-01", plan="CP")).plan_route.plan == "CP"


# --- clocks -------------------------------------------------------------------------------------

# Autumn 2024 with a half-term from 28 Oct to 1 Nov.
AUTUMN = SchoolCalendar(
    terms=(Term("Autumn 1", D("2024-09-04"), D("2024-10-25")), Term("Autumn 2", D("2024-11-04"), D("2024-12-20")))
)


def test_review_due_in_calendar_weeks() -> None:
    assert review_due(D("2024-10-14")) == DueWindow(D("2024-11-11"), D("2024-11-25"))


def test_review_due_in_school_weeks_skips_half_term() -> None:
    policy = ClockPolicy(review_in_school_weeks=True)
    # 9 school days left before half-term, then 11 (4 weeks) or 21 (6 weeks) after it.
    assert review_due(D("2024-10-14"), policy, AUTUMN) == DueWindow(D("2024-11-18"), D("2024-12-02"))


def test_review_in_school_weeks_needs_a_calendar() -> None:
    with pytest.raises(ValueError, match="calendar"):
        review_due(D("2024-10-14"), ClockPolicy(review_in_school_weeks=True))


def test_letter_due_counts_school_days_across_half_term() -> None:
    assert letter_due(D("2024-10-23"), AUTUMN, NATIONAL_CLOCK_POLICY.letter_school_days) == D("2024-11-06")
    assert letter_due(D("2024-10-23"), AUTUMN, 0) == D("2024-10-23")


def test_apm_follow_up_due() -> None:
    assert apm_follow_up_due(D("2025-01-13"), NATIONAL_CLOCK_POLICY.apm_follow_up_weeks) == D("2025-02-24")


@pytest.mark.parametrize(
    ("previous", "policy", "expected"),
    [
        ((), NATIONAL_CLOCK_POLICY, [("2024-10-01", "80"), ("2024-10-08", "160")]),
        (("2021-09-10",), NATIONAL_CLOCK_POLICY, [("2024-10-01", "80"), ("2024-10-08", "160")]),  # 3 years ago
        (("2023-01-01",), NATIONAL_CLOCK_POLICY, [("2024-10-08", "160")]),
        (("2021-01-01", "2023-01-01"), NATIONAL_CLOCK_POLICY, [("2024-10-08", "160")]),
        ((), WIDNES_CLOCK_POLICY, [("2024-10-01", "60"), ("2024-10-08", "120")]),
        (("2023-01-01",), WIDNES_CLOCK_POLICY, [("2024-10-08", "120")]),
    ],
)
def test_penalty_notice_amounts(
    previous: tuple[str, ...], policy: ClockPolicy, expected: list[tuple[str, str]]
) -> None:
    amounts = penalty_notice_amounts(D("2024-09-10"), [D(on) for on in previous], policy)
    assert amounts == [(D(due), Decimal(amount)) for due, amount in expected]


def test_a_third_penalty_notice_in_three_years_is_refused() -> None:
    with pytest.raises(ValueError, match="no more than 2 within 3 years"):
        penalty_notice_amounts(D("2024-09-10"), [D("2022-01-01"), D("2023-01-01")])


@pytest.mark.parametrize(
    "fields",
    [
        {"review_min_weeks": 7},
        {"penalty_notice_early_days": 28},
        {"penalty_notice_early_amount": "200"},
        {"review_weeks": 4},
    ],
)
def test_clock_policy_is_validated(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ClockPolicy.model_validate(fields)


# --- generated documentation -------------------------------------------------------------------


def test_mermaid_has_every_transition() -> None:
    diagram = mermaid()
    assert diagram.startswith("stateDiagram-v2\n")
    for state, info in STATES.items():
        assert f'state "{info.title}" as {state}' in diagram
    for (event, source), target in EXPECTED_EDGES.items():
        start = "[*]" if source is None else source
        ends = sorted(OPEN_STATES) if event == "reopen" else [target]
        for end in ends:
            assert f"    {start} --> {end} : {event}" in diagram, (event, source, end)
    assert "    legal_action_proposed --> stage_3_accepted : decide_legal_action (decision no_action)" in diagram
    assert "    stage_2 --> closed : review_recorded (outcome improved)" in diagram


def test_workflow_json() -> None:
    workflow = json.loads(json.dumps(WORKFLOW_JSON()))
    assert [state["id"] for state in workflow["states"]] == [str(state) for state in CaseState]
    assert len(workflow["transitions"]) == len(TRANSITIONS)
    opening = workflow["transitions"][0]
    assert opening["event"] == "open" and opening["sources"] == [None] and opening["target"] == "stage_1"
    review = next(row for row in workflow["transitions"] if row["event"] == "review_recorded")
    assert review["target_when"] == {"improved": "closed"}
    assert review["records"] == "review"
    decide = next(row for row in workflow["transitions"] if row["event"] == "decide_legal_action")
    assert decide["who"] == ["la_officer"]
    assert decide["guards"] == ["penalty_notice_limit", "interview_under_caution"]
    assert set(workflow["guards"]) == set(GUARDS) and all(workflow["guards"].values())
    assert set(workflow["actions"]) == {str(kind) for kind in ActionKind}
    assert workflow["clock_policy_presets"]["widnes"]["penalty_notice_early_amount"] == "60"


def test_the_workflow_document_is_generated_from_the_table():
    """docs/casework-workflow.md cannot drift: regenerate it with `attendance casework diagram`."""
    from pathlib import Path

    from shared.domain.casework import workflow_markdown

    document = Path(__file__).resolve().parents[2] / "docs" / "casework-workflow.md"
    assert document.read_text() == workflow_markdown()
