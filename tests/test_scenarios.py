"""Drill scenarios: every shipped file loads against the shipped playbook, and a bad file is reported
by name, with the field and what is wrong, while the others still load.

Pure Python: no database, no bot process.
"""

from __future__ import annotations

import csv
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot.models import ROLES
from bot.playbook import load_playbook
from bot.redaction import derive_key, redact
from bot.scenarios import FAMILIES, Expected, Inject, Scenario, default_folder, load_scenarios

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = REPO_ROOT / "scenarios"
AIID_CSV = Path("/work/shared/data/aiid/incidents.csv")
GOOD = "retrieval-leakage.yaml"


@pytest.fixture(scope="module")
def playbook():
    return load_playbook()


@pytest.fixture(scope="module")
def shipped(playbook):
    return load_scenarios(SHIPPED, playbook)


# --- what ships --------------------------------------------------------------------------------------

def test_every_shipped_scenario_loads(shipped):
    assert shipped.broken == {}
    assert len(shipped.scenarios) == len(list(SHIPPED.glob("*.yaml"))) >= 8
    assert list(shipped.scenarios) == sorted(shipped.scenarios)
    for name, scenario in shipped.scenarios.items():
        assert scenario.name == name


def test_every_family_is_rehearsed(shipped):
    assert {s.family for s in shipped.scenarios.values()} == set(FAMILIES)
    for family in FAMILIES:
        assert family in shipped.scenarios, f"no {family}.yaml"
        assert shipped.scenarios[family].family == family


def test_injects_are_in_time_order_and_inside_the_drill(shipped):
    for scenario in shipped.scenarios.values():
        times = [inject.at for inject in scenario.injects]
        assert times == sorted(times), scenario.name
        assert all(timedelta(0) <= at < scenario.duration for at in times), scenario.name
        assert 5 <= len(scenario.injects) <= 7, scenario.name
        assert timedelta(minutes=30) <= scenario.duration <= timedelta(minutes=60), scenario.name
        kinds = {inject.kind for inject in scenario.injects}
        assert kinds & {"executive", "regulator"}, scenario.name
        assert kinds & {"ticket", "customer"}, scenario.name
        assert "evidence" in kinds, scenario.name


def test_answer_keys_follow_the_playbook(shipped, playbook):
    for scenario in shipped.scenarios.values():
        expected = scenario.expected
        assert expected.driver in playbook.taxonomy.drivers
        assert expected.failure_mode in playbook.taxonomy.failure_modes
        assert set(expected.roles) <= set(ROLES)
        assert {"ic", "tech"} <= set(expected.roles), scenario.name
        assert set(expected.within) == {"roles", "severity", "containment"}
        assert expected.within["roles"] == timedelta(minutes=10), scenario.name
        assert timedelta(minutes=10) <= expected.within["severity"] <= timedelta(minutes=15), scenario.name
        assert timedelta(minutes=20) <= expected.within["containment"] <= timedelta(minutes=30), scenario.name
        # The playbook's rules make these roles due; the answer key should not contradict them.
        if expected.severity == 1:
            assert {"ic", "comms", "tech"} <= set(expected.roles), scenario.name
        if expected.failure_mode == "leakage":
            assert "privacy" in expected.roles, scenario.name
        if expected.failure_mode == "bias":
            assert "legal" in expected.roles, scenario.name
        # Data reaching someone who should not see it is sev1 and notified, by the playbook's wording.
        if expected.notification == "notify":
            assert expected.severity == 1, scenario.name


def test_family_answer_keys(shipped):
    by_name = shipped.scenarios
    assert (by_name["retrieval-leakage"].expected.severity, by_name["retrieval-leakage"].expected.failure_mode,
            by_name["retrieval-leakage"].expected.notification) == (1, "leakage", "notify")
    assert by_name["prompt-injection-tool-misuse"].expected.failure_mode == "misuse"
    assert by_name["bias-after-refresh"].expected.failure_mode == "bias"
    assert by_name["drift-misclassification"].expected.failure_mode == "drift"
    refusal = by_name["refusal-regression"].expected
    assert (refusal.driver, refusal.failure_mode) == ("model", "drift")
    assert any("drift" in point for point in refusal.discussion)  # the choice is explained


def test_room_text_survives_redaction(shipped):
    # Anything the bot would redact (an e-mail, a phone or card number, a key) would show up in the
    # drill room as a placeholder instead of the story.
    key = derive_key("scenario-test")
    for scenario in shipped.scenarios.values():
        texts = [scenario.title, scenario.background, scenario.expected.containment_hint,
                 scenario.expected.notification_reason, *scenario.expected.discussion]
        texts += [part for inject in scenario.injects for part in (inject.source, inject.text)]
        for text in texts:
            assert redact(text, key=key).findings == [], f"{scenario.name}: {text[:80]}"


def test_shipped_files_start_with_a_header_comment():
    for path in SHIPPED.glob("*.yaml"):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# Drill: "), path.name


def test_real_incidents_are_credited(shipped):
    credited = {name: s for name, s in shipped.scenarios.items() if s.credit is not None}
    assert len(credited) >= 3
    for name, scenario in credited.items():
        credit = scenario.credit
        assert name.startswith(f"aiid-{credit.aiid_incident_id}-")
        assert credit.url == f"https://incidentdatabase.ai/cite/{credit.aiid_incident_id}"
        assert credit.licence == "CC BY-SA 4.0"
        assert "AI Incident Database" in credit.note
        header = (SHIPPED / f"{name}.yaml").read_text(encoding="utf-8").split("\ntitle:")[0]
        assert "incidentdatabase.ai" in header and "CC BY-SA 4.0" in header, name
        assert "inspired by" in scenario.background, name
    for name, scenario in shipped.scenarios.items():
        if name.startswith("aiid-"):
            assert scenario.credit is not None, name
    if not AIID_CSV.exists():
        pytest.skip(f"{AIID_CSV} is not here (CI clones the repository alone)")
    with AIID_CSV.open(encoding="utf-8", newline="") as handle:
        titles = {int(row["incident_id"]): row["title"].strip() for row in csv.DictReader(handle)}
    for name, scenario in credited.items():
        assert scenario.credit.aiid_incident_id in titles, name
        assert scenario.credit.title == titles[scenario.credit.aiid_incident_id], name


def test_default_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("WARROOM_SCENARIOS", raising=False)
    assert default_folder() == SHIPPED
    monkeypatch.setenv("WARROOM_SCENARIOS", str(tmp_path))
    assert default_folder() == tmp_path


def test_a_missing_folder_is_an_empty_catalog(tmp_path, playbook):
    catalog = load_scenarios(tmp_path / "nowhere", playbook)
    assert catalog.scenarios == {} and catalog.broken == {}


# --- what is broken ------------------------------------------------------------------------------------

def good_data() -> dict:
    return yaml.safe_load((SHIPPED / GOOD).read_text(encoding="utf-8"))


def write(folder: Path, name: str, data) -> None:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    (folder / name).write_text(text, encoding="utf-8")


def broken_variants() -> dict[str, object]:
    variants: dict[str, object] = {
        "not-yaml.yaml": "title: [unclosed\nfamily: retrieval-leakage\n",
        "a-list.yaml": "- title: one\n- title: two\n",
    }

    def variant(name, change):
        data = good_data()
        change(data)
        variants[name] = data

    variant("unknown-failure-mode.yaml", lambda d: d["expected"].update(failure_mode="hallucinate"))
    variant("alias-failure-mode.yaml", lambda d: d["expected"].update(failure_mode="prompt-injection"))
    variant("bad-duration.yaml", lambda d: d["injects"][2].update(at="5 minutes"))
    variant("inject-after-end.yaml", lambda d: d["injects"][-1].update(at="45m"))
    variant("out-of-order.yaml", lambda d: d["injects"][3].update(at="1m"))
    variant("no-pressure.yaml", lambda d: [i.update(kind="other") for i in d["injects"]
                                           if i["kind"] in ("executive", "regulator")])
    variant("unknown-role.yaml", lambda d: d["expected"].update(roles=["ic", "ceo"]))
    variant("unknown-driver.yaml", lambda d: d["expected"].update(driver="vendor"))
    variant("unknown-family.yaml", lambda d: d.update(family="hallucination"))
    variant("missing-target.yaml", lambda d: d["expected"]["within"].pop("containment"))
    variant("too-few-injects.yaml", lambda d: d.update(injects=d["injects"][:2]))
    variant("has-a-name.yaml", lambda d: d.update(name="something-else"))
    variant("typo.yaml", lambda d: d.update(backgruond=d["background"]))
    variant("bad-credit-url.yaml", lambda d: d.update(credit={
        "aiid_incident_id": 516, "title": "x", "url": "https://incidentdatabase.ai/cite/517", "note": "n"}))
    return variants


# file -> (field the reason must name, words that say what was wrong)
EXPECTED_REASONS = {
    "not-yaml.yaml": ("", "not valid YAML at line"),
    "a-list.yaml": ("", "is a YAML list, not a mapping"),
    "unknown-failure-mode.yaml": ("expected.failure_mode", "'hallucinate' is not a failure mode in the playbook"),
    "alias-failure-mode.yaml": ("expected.failure_mode", "'prompt-injection' is an alias of 'misuse'"),
    "bad-duration.yaml": ("injects.2.at", "'5 minutes' is not a duration"),
    "inject-after-end.yaml": ("injects.6.at", "45m is not before the end of the drill (duration 45m)"),
    "out-of-order.yaml": ("injects.3.at", "comes before the previous inject"),
    "no-pressure.yaml": ("injects", "no executive or regulator inject"),
    "unknown-role.yaml": ("expected.roles", "unknown role ceo"),
    "unknown-driver.yaml": ("expected.driver", "'vendor' is not a driver in the playbook"),
    "unknown-family.yaml": ("family", "'hallucination' is not a scenario family"),
    "missing-target.yaml": ("expected.within", "missing containment"),
    "too-few-injects.yaml": ("injects", "has 2; give at least 3"),
    "has-a-name.yaml": ("name", "comes from the file name"),
    "typo.yaml": ("backgruond", "is not a scenario field"),
    "bad-credit-url.yaml": ("credit.url", "does not cite incident 516"),
}


def test_broken_files_are_reported_by_name_and_the_rest_load(tmp_path, playbook):
    variants = broken_variants()
    assert set(variants) == set(EXPECTED_REASONS)
    for name, data in variants.items():
        write(tmp_path, name, data)
    shutil.copy(SHIPPED / GOOD, tmp_path / GOOD)
    write(tmp_path, "notes.txt", "not a scenario, not read")

    catalog = load_scenarios(tmp_path, playbook)

    assert list(catalog.scenarios) == ["retrieval-leakage"]
    assert catalog.scenarios["retrieval-leakage"].expected.failure_mode == "leakage"
    assert set(catalog.broken) == set(EXPECTED_REASONS)
    for name, (field, what) in EXPECTED_REASONS.items():
        reason = catalog.broken[name]
        assert "\n" not in reason, name
        assert what in reason, f"{name}: {reason}"
        if field:
            assert reason.startswith(f"{field}: ") or f"; {field}: " in reason, f"{name}: {reason}"


def test_a_bad_file_reports_every_problem_on_one_line(tmp_path, playbook):
    data = good_data()
    data["injects"][1]["at"] = "soon"
    data["expected"]["failure_mode"] = "hallucinate"
    data["expected"]["roles"] = ["ic", "boss"]
    write(tmp_path, "several.yaml", data)
    reason = load_scenarios(tmp_path, playbook).broken["several.yaml"]
    assert "injects.1.at: 'soon' is not a duration" in reason
    assert "expected.failure_mode: 'hallucinate'" in reason
    assert "expected.roles: unknown role boss" in reason
    assert "\n" not in reason


def test_empty_and_non_utf8_files_are_broken(tmp_path, playbook):
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    (tmp_path / "latin1.yaml").write_bytes("title: caf\xe9\n".encode("latin-1"))
    broken = load_scenarios(tmp_path, playbook).broken
    assert "is empty" in broken["empty.yaml"]
    assert "not UTF-8" in broken["latin1.yaml"]


def test_offsets_may_be_zero_but_not_unitless(playbook):
    assert Inject(at="0m", kind="alert", source="s", text="t").at == timedelta(0)
    assert Inject(at="0s", kind="alert", source="s", text="t").at == timedelta(0)
    assert Inject(at="1h30m", kind="alert", source="s", text="t").at == timedelta(minutes=90)
    with pytest.raises(ValueError, match="no unit"):
        Inject(at=5, kind="alert", source="s", text="t")


def test_inject_text_is_limited(playbook):
    with pytest.raises(ValueError, match="1500"):
        Inject(at="1m", kind="alert", source="s", text="x" * 1501)


def test_severity_may_be_written_sev1(playbook):
    expected = Expected.model_validate({**good_data()["expected"], "severity": "sev1"},
                                       context={"playbook": playbook})
    assert expected.severity == 1


def test_without_a_playbook_only_the_structure_is_checked():
    data = good_data()
    data["expected"]["driver"] = "vendor"  # only the playbook knows the drivers
    scenario = Scenario.model_validate({"name": "loose", **data})
    assert scenario.expected.driver == "vendor"


def test_a_scenario_survives_a_json_round_trip(shipped):
    # A drill keeps the scenario as it was when it started, as JSON, and reads it back later.
    for scenario in shipped.scenarios.values():
        text = scenario.model_dump_json()
        assert '"at":"0s"' in text or '"at":"0m"' in text
        assert Scenario.model_validate_json(text) == scenario, scenario.name
        assert scenario.model_dump()["duration"] == scenario.duration  # Python dumps keep timedelta
