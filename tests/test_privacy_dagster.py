"""No raw personal data reaches Dagster: materialization metadata, its event log and run storage, compute
logs, and what the pipeline prints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from conftest import lake_settings, read_lines

from data_contracts import load_contracts
from orchestration.metadata import table_metadata


def _text(metadata: dict) -> str:
    """Every value of a metadata dict as text, as Dagster would store it."""
    return json.dumps({k: str(v) for k, v in metadata.items()})


def test_a_table_of_raw_records_gets_no_preview(tmp_path: Path) -> None:
    settings = lake_settings(tmp_path / "lake")
    uri = f"{settings.lake_root}/bronze/crm/contacts"
    raw = '{"after": {"email": "ada@example.org", "first_name": "ada"}}'
    pl.DataFrame({"raw": [raw], "_line": [1]}).write_delta(uri)
    metadata = table_metadata(settings, uri)
    assert metadata["dagster/row_count"] == 1 and "preview" not in metadata
    assert "ada@" not in _text(metadata)


def test_a_preview_leaves_out_every_personal_column(tmp_path: Path) -> None:
    contracts = load_contracts()
    settings = lake_settings(tmp_path / "lake")
    contacts = pl.DataFrame(
        {
            "contact_id": [41, 42],
            "country": ["NL", "DE"],
            "email_token": ["tok-email-1", "tok-email-2"],
            "first_name_token": ["tok-name-1", "tok-name-2"],
            "birth_year": [1977, 1988],
        }
    )
    uri = f"{settings.lake_root}/silver/crm/contacts"
    contacts.write_delta(uri)
    shown = table_metadata(settings, uri, preview_of=contracts["crm.public.contacts"])["preview"].value
    assert "41" in shown and "NL" in shown
    assert not re.search("tok-|1977|1988", shown.split("Not shown")[0])
    assert "email_token, first_name_token, birth_year" in shown

    events = pl.DataFrame(
        {
            "message_id": ["m-1"],
            "traits": ['{"firstName":"Ada","lastName":"Lovelace"}'],
            "traits_email_token": ["tok-email-3"],
            "traits_birthday_year": [1815],
            "context_ip_prefix": ["203.0.113.0"],
        }
    )
    uri = f"{settings.lake_root}/silver/clickstream/events"
    events.write_delta(uri)
    shown = table_metadata(settings, uri, preview_of=contracts["clickstream"])["preview"].value
    assert "m-1" in shown
    assert not re.search("Ada|tok-|1815|203.0.113", shown.split("Not shown")[0])


def personal_values(landing: Path, truth: Path) -> set[str]:
    """Every raw e-mail address, phone number (E.164 and as the sources wrote it) and full name of the
    simulated company: from its ground truth, its CRM and shop change events and its Segment traits."""
    identifiers = pl.read_parquet(truth / "identifiers.parquet")
    values = set(
        identifiers.filter(pl.col("identifier_type").is_in(["email", "phone"]))["identifier"].to_list()
    )
    for topic in ("crm.public.contacts", "shop.shop.customers"):
        for path in sorted((landing / "cdc" / topic).iterdir()):
            for line in read_lines(path):
                event = json.loads(line)
                row = event and (event.get("payload", event)["after"] or {})
                if row:
                    values |= {row.get("email"), row.get("phone")}
                    values.add(f"{row.get('first_name')} {row.get('last_name')}")
    for path in sorted((landing / "clickstream").rglob("*.jsonl.gz")):
        for line in read_lines(path):
            try:
                traits = json.loads(line).get("traits") or {}
            except json.JSONDecodeError:
                continue
            values |= {traits.get("email"), traits.get("phone")}
            values.add(f"{traits.get('firstName')} {traits.get('lastName')}")
    return {v.strip() for v in values if v and v.strip() and "None" not in v}


def leaks(text: str, values: set[str]) -> set[str]:
    """The values found in ``text``, ignoring case, also as JSON escapes them; a number counts only where it
    is not part of a longer number."""
    found = set()
    text = text.casefold()
    for value in values:
        for form in {value, json.dumps(value)[1:-1]}:
            form = form.casefold()
            if form not in text:
                continue
            number = form.lstrip("+").replace(" ", "").replace("-", "").isdigit()
            if not number or re.search(rf"(?<![0-9]){re.escape(form)}(?![0-9])", text):
                found.add(value)
    return found


@pytest.mark.slow
def test_a_full_pipeline_run_leaves_no_personal_data_in_dagster_or_its_output(small_demo) -> None:
    # `make demo`'s command (its runs on the instance, the lake summary): its Dagster home and what it printed
    home, lake = small_demo.home, small_demo.lake
    printed = [small_demo.printed]
    assert "lake root: " in small_demo.printed and "RUN_SUCCESS" in small_demo.printed  # Dagster logs too

    values = personal_values(lake / "landing", lake / "simulator_truth")
    assert len(values) > 500 and any("@" in v for v in values) and any(" " in v for v in values)
    # the scan sees what it scans: the raw landing files hold these values, Dagster's storage holds the runs
    landing = "\n".join(
        "\n".join(read_lines(p)) for p in (lake / "landing" / "cdc" / "crm.public.contacts").iterdir()
    )
    assert len(leaks(landing, values)) > 100
    stored = {p: p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*") if p.is_file()}
    skus = pl.read_delta(str(lake / "silver" / "shop" / "products"))["sku"].to_list()
    assert any(sku in text for sku in skus for text in stored.values()), "previews are stored as text"
    assert any(p.suffix in (".db", ".sqlite") for p in stored)
    found = {str(p.relative_to(home)): sorted(leaks(text, values))[:5] for p, text in stored.items()}
    assert {p: v for p, v in found.items() if v} == {}
    assert [sorted(leaks(text, values))[:5] for text in printed] == [[]] * len(printed)
