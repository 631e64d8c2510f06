"""Admission register and CME rules: deletion grounds, notification clocks, CME triggers, matching."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from shared.domain.calendar import SchoolCalendar
from shared.domain.roll import (
    DEFAULT_MATCH_TOLERANCE,
    DEFAULT_NOTIFICATION_POLICY,
    DELETION_GROUNDS,
    HAVERING_NOTIFICATION_POLICY,
    NATIONAL_NOTIFICATION_POLICY,
    CmeReason,
    DeletionFacts,
    Enquiry,
    EnquiryMethod,
    EnquiryOutcome,
    EnquiryParty,
    MatchKind,
    NotificationPolicy,
    NotificationStatus,
    RollAddition,
    RollDeletion,
    UnknownGround,
    addition_due,
    addition_return_required,
    alert_cme_reason,
    deletion_allowed,
    deletion_cme_reason,
    deletion_due,
    enquiry_window_end,
    ground_for,
    match_roll_changes,
    notification_status,
)
from shared.domain.thresholds import RULE_IDS
from shared.domain.upn import make_upn
from tests.unit.school_year import INSET_2025_26, TERMS_2025_26, D

TERMS, INSET = TERMS_2025_26, INSET_2025_26
SCHOOL = SchoolCalendar(terms=TERMS, inset_days=INSET)
NO_TERMS = SchoolCalendar()

MAINTAINED_WITH_FEED = {"independent": False, "data_sharing": True}
MAINTAINED_NO_FEED = {"independent": False, "data_sharing": False}
INDEPENDENT = {"independent": True, "data_sharing": True}


# --- deletion grounds ------------------------------------------------------------------------


def test_grounds_are_reg_9_1_a_to_o_in_order() -> None:
    assert [ground.code for ground in DELETION_GROUNDS.values()] == [f"9(1)({letter})" for letter in "abcdefghijklmno"]
    for key, ground in DELETION_GROUNDS.items():
        assert key == ground.key
        assert ground.key.isidentifier() and ground.key == ground.key.lower()
        assert ground.name


@pytest.mark.parametrize("key", list(DELETION_GROUNDS))
def test_every_ground_resolves_by_key_and_by_code(key: str) -> None:
    ground = DELETION_GROUNDS[key]
    assert ground_for(key) is ground
    assert ground_for(ground.code) is ground
    assert ground_for(f" {ground.code.upper()} ") is ground


def test_grounds_named_in_the_brief() -> None:
    assert ground_for("9(1)(a)").key == "registered_at_another_school"
    assert ground_for("elective_home_education").code == "9(1)(f)"
    assert ground_for("died").code == "9(1)(k)"
    assert ground_for("permanently_excluded").code == "9(1)(o)"


def test_only_the_missing_child_grounds_need_joint_enquiries_and_days_absent() -> None:
    needs = {
        ground.key: ground.min_school_days_absent for ground in DELETION_GROUNDS.values() if ground.requires_enquiries
    }
    assert needs == {"not_returned_from_leave": 10, "continuous_absence_20_days": 20}
    assert all(
        ground.min_school_days_absent is None for ground in DELETION_GROUNDS.values() if not ground.requires_enquiries
    )


@pytest.mark.parametrize("given", ["off_rolled", "9(1)(p)", "medically_unfit", "8(1)(b)"])
def test_unknown_ground_is_rejected_with_the_valid_list(given: str) -> None:
    with pytest.raises(UnknownGround) as raised:
        ground_for(given)
    assert isinstance(raised.value, ValueError)
    assert raised.value.valid_keys == tuple(DELETION_GROUNDS)
    message = str(raised.value)
    assert repr(given) in message
    assert all(f"{ground.key} ({ground.code})" in message for ground in DELETION_GROUNDS.values())


@pytest.mark.parametrize("given", [None, "", "  "])
def test_missing_ground_is_rejected_with_the_valid_list(given: str | None) -> None:
    with pytest.raises(UnknownGround, match=r"no deletion ground given; valid grounds .*registered_at_another_school"):
        ground_for(given)


# --- notification deadlines ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("entered_on", "due_on"),
    [
        ("2025-09-10", "2025-09-11"),  # Wednesday: Thursday
        ("2025-09-12", "2025-09-15"),  # Friday: over the weekend to Monday
        ("2025-09-13", "2025-09-15"),  # entered on a Saturday: the first school day after
        ("2025-08-29", "2025-09-03"),  # summer holiday: the term opens with two INSET days
        ("2025-10-24", "2025-11-03"),  # last day before October half-term
        ("2025-12-19", "2026-01-06"),  # Christmas holiday, then the INSET day on 5 January
        ("2026-03-27", "2026-04-13"),  # Easter holiday (Good Friday and Easter Monday inside it)
        ("2026-05-01", "2026-05-05"),  # early May bank holiday, Monday 4 May, in term
        ("2026-05-22", "2026-06-01"),  # May half-term with the spring bank holiday
    ],
)
def test_one_school_day_skips_weekends_holidays_bank_holidays_and_inset(entered_on: str, due_on: str) -> None:
    due = addition_due(D(entered_on), SCHOOL, DEFAULT_NOTIFICATION_POLICY, **MAINTAINED_NO_FEED)
    assert due == D(due_on)
    assert deletion_due(D(entered_on), SCHOOL, DEFAULT_NOTIFICATION_POLICY, **MAINTAINED_NO_FEED) == D(due_on)


@pytest.mark.parametrize(
    ("entered_on", "due_on"),
    [
        ("2025-12-24", "2025-12-29"),  # Christmas Day and Boxing Day, then the weekend
        ("2025-12-31", "2026-01-02"),  # New Year's Day
        ("2026-04-02", "2026-04-07"),  # Good Friday, the weekend, Easter Monday 6 April
        ("2026-05-01", "2026-05-05"),  # early May bank holiday
    ],
)
def test_bank_holidays_count_without_term_dates(entered_on: str, due_on: str) -> None:
    assert addition_due(D(entered_on), NO_TERMS, DEFAULT_NOTIFICATION_POLICY, **INDEPENDENT) == D(due_on)


def test_longer_school_day_allowance() -> None:
    policy = NotificationPolicy(addition_school_days=3, deletion_school_days=2)
    assert addition_due(D("2026-04-30"), SCHOOL, policy, **MAINTAINED_NO_FEED) == D("2026-05-06")
    assert deletion_due(D("2026-04-30"), SCHOOL, policy, **MAINTAINED_NO_FEED) == D("2026-05-05")


@pytest.mark.parametrize(
    ("entered_on", "due_on"),
    [
        ("2025-09-08", "2025-09-13"),  # Monday: the Saturday, calendar days as reg 13(1) words it
        ("2025-12-17", "2025-12-22"),  # runs on through the Christmas holiday
        ("2026-03-31", "2026-04-05"),  # Easter Sunday: not moved to a school day
    ],
)
def test_fifth_day_after_entry_is_calendar_days(entered_on: str, due_on: str) -> None:
    assert addition_due(D(entered_on), SCHOOL, NATIONAL_NOTIFICATION_POLICY, **MAINTAINED_NO_FEED) == D(due_on)


def test_national_deletion_return_is_due_on_the_deletion_date() -> None:
    for day in ("2026-05-04", "2026-02-14", "2026-03-27"):
        assert deletion_due(D(day), SCHOOL, NATIONAL_NOTIFICATION_POLICY, **INDEPENDENT) == D(day)


def test_data_sharing_school_keeps_the_platform_default_clock() -> None:
    assert addition_due(D("2025-09-12"), SCHOOL, DEFAULT_NOTIFICATION_POLICY, **MAINTAINED_WITH_FEED) == D("2025-09-15")


def test_havering_policy_binds_independent_and_unshared_schools_only() -> None:
    entered = D("2025-09-12")
    assert addition_due(entered, SCHOOL, HAVERING_NOTIFICATION_POLICY, **INDEPENDENT) == D("2025-09-15")
    assert addition_due(entered, SCHOOL, HAVERING_NOTIFICATION_POLICY, **MAINTAINED_NO_FEED) == D("2025-09-15")
    assert addition_due(entered, SCHOOL, HAVERING_NOTIFICATION_POLICY, **MAINTAINED_WITH_FEED) == D("2025-09-17")
    assert deletion_due(entered, SCHOOL, HAVERING_NOTIFICATION_POLICY, **INDEPENDENT) == D("2025-09-15")
    assert deletion_due(entered, SCHOOL, HAVERING_NOTIFICATION_POLICY, **MAINTAINED_WITH_FEED) == entered


def test_policy_rejects_typos_and_nonsense() -> None:
    with pytest.raises(ValidationError):
        NotificationPolicy(addition_deadline="tenth_day")
    with pytest.raises(ValidationError):
        NotificationPolicy(addition_school_days=0)
    with pytest.raises(ValidationError):
        NotificationPolicy(deletion_days=1)


@pytest.mark.parametrize(
    ("received_on", "today", "status"),
    [
        ("2025-09-15", "2025-09-20", NotificationStatus.ON_TIME),  # on the due day itself
        ("2025-09-12", "2025-09-12", NotificationStatus.ON_TIME),
        ("2025-09-16", "2025-09-20", NotificationStatus.LATE),
        (None, "2025-09-15", NotificationStatus.PENDING),  # the due day is not over yet
        (None, "2025-09-13", NotificationStatus.PENDING),
        (None, "2025-09-16", NotificationStatus.MISSING),
    ],
)
def test_notification_status(received_on: str | None, today: str, status: NotificationStatus) -> None:
    received = D(received_on) if received_on else None
    assert notification_status(D("2025-09-15"), received, D(today)) is status
    assert status == status.value  # serialises as the plain string


# --- exemption from the new pupil return --------------------------------------------------------


def test_reception_starter_on_the_first_day_of_the_year_is_exempt() -> None:
    # 1-2 September are INSET days: the first day of the school year for pupils is 3 September.
    first_day = D("2025-09-03")
    assert not addition_return_required(first_day, first_day, SCHOOL, most_junior_class=True)
    assert not addition_return_required(first_day, D("2025-07-10"), SCHOOL, most_junior_class=True)


def test_other_starters_need_a_return() -> None:
    assert addition_return_required(D("2025-09-03"), D("2025-09-03"), SCHOOL, most_junior_class=False)
    assert addition_return_required(D("2025-09-04"), D("2025-09-04"), SCHOOL, most_junior_class=True)  # staggered
    assert addition_return_required(D("2026-01-06"), D("2026-01-06"), SCHOOL, most_junior_class=True)


def test_la_request_ends_the_exemption_for_later_entries() -> None:
    first_day = D("2025-09-03")
    asked_before = addition_return_required(
        first_day, first_day, SCHOOL, most_junior_class=True, la_requested_on=D("2025-06-01")
    )
    asked_after = addition_return_required(
        first_day, first_day, SCHOOL, most_junior_class=True, la_requested_on=D("2025-09-10")
    )
    asked_that_day = addition_return_required(
        first_day, first_day, SCHOOL, most_junior_class=True, la_requested_on=first_day
    )
    assert asked_before
    assert not asked_after
    assert not asked_that_day  # reg 13(3): entries after the day of the request


def test_without_term_dates_the_exemption_falls_away() -> None:
    assert addition_return_required(D("2025-09-03"), D("2025-09-03"), NO_TERMS, most_junior_class=True)


# --- children missing education -----------------------------------------------------------------


def test_deletion_without_destination_opens_a_cme_case() -> None:
    assert deletion_cme_reason("moved_away", destination_known=False) is CmeReason.DELETED_WITHOUT_DESTINATION
    assert deletion_cme_reason("9(1)(i)", destination_known=False) is CmeReason.DELETED_WITHOUT_DESTINATION
    assert deletion_cme_reason("registered_at_another_school", False) is CmeReason.DELETED_WITHOUT_DESTINATION
    assert deletion_cme_reason("moved_away", destination_known=True) is None
    assert deletion_cme_reason("registered_at_another_school", True) is None


@pytest.mark.parametrize(
    "key",
    [
        "school_attendance_order_revoked",
        "elective_home_education",
        "detained",
        "died",
        "ceasing_compulsory_school_age",
        "permanently_excluded",
    ],
)
def test_grounds_that_settle_where_the_child_is_open_no_case(key: str) -> None:
    assert deletion_cme_reason(key, destination_known=False) is None


def test_deletion_cme_reason_rejects_unknown_grounds() -> None:
    with pytest.raises(UnknownGround):
        deletion_cme_reason("left", destination_known=False)


def test_alerts_that_open_or_mark_a_cme_case() -> None:
    assert alert_cme_reason("continuous_unauthorised_10_days") is CmeReason.CONTINUOUS_UNAUTHORISED_10_DAYS
    assert alert_cme_reason("continuous_absence_20_days") is CmeReason.CONTINUOUS_ABSENCE_20_DAYS
    assert alert_cme_reason("persistent_absence") is None
    # The CME rule ids are the threshold policy's own.
    assert {"continuous_unauthorised_10_days", "continuous_absence_20_days"} <= set(RULE_IDS)


@pytest.mark.parametrize(
    ("started_on", "school_days", "earliest"),
    [
        ("2026-03-02", 20, "2026-04-13"),  # 20th day Friday 27 March; Easter holiday; summer term opens
        ("2026-04-20", 20, "2026-05-19"),  # early May bank holiday does not count
        ("2026-02-02", 20, "2026-03-09"),  # February half-term does not count
        ("2026-02-07", 10, "2026-03-02"),  # leave ended Friday 6 Feb: 10 school days across half-term
        ("2025-12-06", 20, "2026-01-20"),  # started on a Saturday; Christmas and the 5 January INSET day
    ],
)
def test_enquiry_window_end(started_on: str, school_days: int, earliest: str) -> None:
    end = enquiry_window_end(D(started_on), SCHOOL, school_days)
    assert end == D(earliest)
    first = D(started_on) if SCHOOL.is_school_day(D(started_on)) else SCHOOL.next_school_day(D(started_on))
    assert SCHOOL.count_school_days(first, end - timedelta(days=1)) == school_days
    assert SCHOOL.is_school_day(end)


def test_enquiry_window_defaults_to_20_school_days() -> None:
    assert enquiry_window_end(D("2026-03-02"), SCHOOL) == D("2026-04-13")
    with pytest.raises(ValueError, match="school_days"):
        enquiry_window_end(D("2026-03-02"), SCHOOL, 0)


def _enquiry(by: EnquiryParty, outcome: EnquiryOutcome = EnquiryOutcome.NO_TRACE) -> Enquiry:
    return Enquiry(
        made_on=D("2026-03-20"),
        by=by,
        officer="A. Officer, attendance lead" if by is EnquiryParty.SCHOOL else "B. Officer, CME officer",
        method=EnquiryMethod.HOME_VISIT if by is EnquiryParty.SCHOOL else EnquiryMethod.LOST_PUPILS_DATABASE,
        outcome=outcome,
    )


JOINT = (_enquiry(EnquiryParty.SCHOOL), _enquiry(EnquiryParty.LA))


def test_continuous_absence_deletion_waits_for_days_and_joint_enquiries() -> None:
    reasons = deletion_allowed("continuous_absence_20_days", DeletionFacts(school_days_absent=12))
    assert len(reasons) == 3
    assert "20 school days of continuous absence, 12 so far" in reasons[0]
    assert "enquiries by the school" in reasons[1]
    assert "enquiries by the LA" in reasons[2]

    school_only = DeletionFacts(school_days_absent=20, enquiries=(_enquiry(EnquiryParty.SCHOOL),))
    assert deletion_allowed("9(1)(i)", school_only) == [
        "ground 9(1)(i) needs reasonable enquiries by the LA: none logged"
    ]
    assert deletion_allowed("9(1)(i)", DeletionFacts(school_days_absent=20, enquiries=JOINT)) == []


def test_located_child_or_believed_sickness_blocks_the_enquiry_grounds() -> None:
    located = DeletionFacts(
        school_days_absent=25, enquiries=(*JOINT, _enquiry(EnquiryParty.LA, EnquiryOutcome.LOCATED))
    )
    assert any("located" in reason for reason in deletion_allowed("continuous_absence_20_days", located))
    sick = DeletionFacts(school_days_absent=25, enquiries=JOINT, believed_unable_to_attend=True)
    assert any("sickness" in reason for reason in deletion_allowed("continuous_absence_20_days", sick))


def test_leave_of_absence_ground_needs_ten_days() -> None:
    assert "10 school days" in deletion_allowed("not_returned_from_leave", DeletionFacts(school_days_absent=9))[0]
    assert deletion_allowed("9(1)(h)", DeletionFacts(school_days_absent=10, enquiries=JOINT)) == []


def test_other_grounds_need_only_their_destination() -> None:
    assert deletion_allowed("registered_at_another_school", DeletionFacts()) == [
        "ground 9(1)(a) needs the new school recorded in the register"
    ]
    assert deletion_allowed("registered_at_another_school", DeletionFacts(destination_known=True)) == []
    assert deletion_allowed("died", DeletionFacts()) == []
    assert deletion_allowed(ground_for("moved_away"), DeletionFacts()) == []


def test_deletion_allowed_rejects_a_missing_ground() -> None:
    with pytest.raises(UnknownGround, match="no deletion ground given"):
        deletion_allowed("", DeletionFacts())


def test_enquiry_records_are_validated() -> None:
    with pytest.raises(ValidationError):
        Enquiry(made_on=D("2026-03-20"), by="school", officer="", method="phone", outcome="no_trace")
    with pytest.raises(ValidationError):
        Enquiry(made_on=D("2026-03-20"), by="school", officer="X", method="carrier_pigeon", outcome="no_trace")
    assert Enquiry(made_on=D("2026-03-20"), by="la", officer="X", method="police", outcome="lead").by is EnquiryParty.LA


# --- matching -----------------------------------------------------------------------------------

PUPIL = make_upn(311, 2001, 2019, 1)
OTHER_PUPIL = make_upn(311, 2001, 2019, 2)
A, B, C = "100001", "100002", "100003"


def test_deletion_then_addition_elsewhere_is_a_transfer() -> None:
    deletion = RollDeletion(PUPIL, A, D("2026-03-06"))
    addition = RollAddition(PUPIL, B, D("2026-03-09"))
    [match] = match_roll_changes([deletion], [addition])
    assert (match.kind, match.deletion, match.addition, match.upn) == (MatchKind.TRANSFER, deletion, addition, PUPIL)


def test_addition_before_the_deletion_within_tolerance_is_a_transfer() -> None:
    # Joined B on 2 March; A deleted on ground 9(1)(i) only after 20 school days.
    addition = RollAddition(PUPIL, B, D("2026-03-02"))
    deletion = RollDeletion(PUPIL, A, D("2026-03-30"))
    [match] = match_roll_changes([deletion], [addition])
    assert match.kind is MatchKind.TRANSFER
    assert match_roll_changes([deletion], [addition], tolerance=timedelta(days=7)) == []


def test_addition_long_before_the_deletion_does_not_match() -> None:
    addition = RollAddition(PUPIL, B, D("2026-03-30") - DEFAULT_MATCH_TOLERANCE - timedelta(days=1))
    assert match_roll_changes([RollDeletion(PUPIL, A, D("2026-03-30"))], [addition]) == []


def test_matching_ignores_other_pupils_the_same_school_and_ended_entries() -> None:
    deletion = RollDeletion(PUPIL, A, D("2026-03-06"))
    assert match_roll_changes([deletion], [RollAddition(OTHER_PUPIL, B, D("2026-03-09"))]) == []
    assert match_roll_changes([deletion], [RollAddition(PUPIL, A, D("2026-03-09"))]) == []
    # Added at B, then deleted from B before A's deletion: the B entry no longer resolves anything.
    stale = RollAddition(PUPIL, B, D("2026-02-02"))
    left_b = RollDeletion(PUPIL, B, D("2026-02-20"))
    later = RollDeletion(PUPIL, A, D("2026-03-06"))
    assert match_roll_changes([later, left_b], [stale]) == []


def test_matching_does_not_depend_on_arrival_order_and_uses_each_addition_once() -> None:
    deletions = [RollDeletion(PUPIL, A, D("2026-01-09")), RollDeletion(PUPIL, B, D("2026-03-06"))]
    additions = [RollAddition(PUPIL, C, D("2026-03-09")), RollAddition(PUPIL, B, D("2026-01-12"))]
    forwards = match_roll_changes(deletions, additions)
    backwards = match_roll_changes(list(reversed(deletions)), list(reversed(additions)))
    assert forwards == backwards
    assert [(match.deletion.urn, match.addition.urn) for match in forwards if match.deletion] == [(A, B), (B, C)]


def test_dual_registration_is_recognised() -> None:
    main = RollAddition(PUPIL, A, D("2025-09-03"), dual=True)
    alternative_provision = RollAddition(PUPIL, B, D("2026-01-12"), dual=True)
    [match] = match_roll_changes([], [alternative_provision, main])
    assert match.kind is MatchKind.DUAL_REGISTRATION
    assert (match.addition, match.other_addition) == (main, alternative_provision)


def test_two_rolls_without_dual_flags_or_not_at_once_are_not_dual() -> None:
    assert (
        match_roll_changes(
            [], [RollAddition(PUPIL, A, D("2025-09-03"), dual=True), RollAddition(PUPIL, B, D("2026-01-12"))]
        )
        == []
    )
    ended = [RollDeletion(PUPIL, A, D("2025-12-19"))]
    additions = [RollAddition(PUPIL, A, D("2025-09-03"), dual=True), RollAddition(PUPIL, B, D("2026-01-12"), dual=True)]
    # Deleted from A before joining B: a transfer, not two rolls at once.
    assert [match.kind for match in match_roll_changes(ended, additions)] == [MatchKind.TRANSFER]


def test_negative_tolerance_is_rejected() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        match_roll_changes([], [], tolerance=timedelta(days=-1))
