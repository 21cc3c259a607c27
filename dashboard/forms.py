"""The dashboard's forms: trigger a workflow with a JSON input, send an event with a JSON
payload; both read JSON as the API does, and are checked before anything changes."""

from __future__ import annotations

import json

from django import forms

from engine import registry
from engine.events import MAX_TYPE_LENGTH
from engine.schemas import InvalidJSON, parse_json_input

INPUT_PLACEHOLDER = '{"action": "double", "value": 21}'
PAYLOAD_PLACEHOLDER = '{"approved": true}'


def binding_choices() -> list[tuple[str, str]]:
    return [
        (binding.binding, f"{binding.name} ({binding.binding})")
        for binding in registry.current().config.workflows
    ]


class TriggerForm(forms.Form):
    binding = forms.ChoiceField(label="Workflow")
    input = forms.CharField(
        label="Input (JSON)",
        required=False,
        strip=False,
        help_text="Any JSON value; leave it empty for null.",
        widget=forms.Textarea(
            attrs={
                "rows": 6,
                "spellcheck": "false",
                "autocomplete": "off",
                "placeholder": INPUT_PLACEHOLDER,
                "class": "code",
            }
        ),
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["binding"].choices = binding_choices()

    def clean_input(self) -> object:
        return parse_json_field(self.cleaned_data["input"])


class SendEventForm(forms.Form):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("auto_id", "event-%s")
        super().__init__(*args, **kwargs)

    type = forms.CharField(
        label="Event type",
        max_length=MAX_TYPE_LENGTH,
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "class": "code"}
        ),
        error_messages={"required": "An event needs a type, such as the one a step waits for."},
    )
    payload = forms.CharField(
        label="Payload (JSON)",
        required=False,
        strip=False,
        help_text="Any JSON value; leave it empty for null.",
        widget=forms.Textarea(
            attrs={
                "rows": 3,
                "spellcheck": "false",
                "autocomplete": "off",
                "placeholder": PAYLOAD_PLACEHOLDER,
                "class": "code",
            }
        ),
    )

    def clean_payload(self) -> object:
        return parse_json_field(self.cleaned_data["payload"])


def parse_json_field(text: str) -> object:
    """Parsed JSON, empty text meaning null; a mistake is reported with its line and column, as
    an editor would."""
    if not text.strip():
        return None
    try:
        # The API's reader: NaN, huge integers and deep nesting are refused here too.
        return parse_json_input(text)
    except InvalidJSON as error:
        if error.line is None:
            message = "Not valid JSON: %(problem)s."
        else:
            message = "Not valid JSON: %(problem)s at line %(line)d, column %(column)d."
        raise forms.ValidationError(
            message,
            code="invalid_json",
            params={"problem": error.problem, "line": error.line, "column": error.column},
        ) from None


def pretty_input(value: object) -> str:
    """An execution's input as the form's starting text, for "edit and run again"."""
    return json.dumps(value, indent=2, ensure_ascii=False)
