"""The trigger form: a binding from ploy.yaml and a JSON input, checked before anything runs."""

from __future__ import annotations

import json

from django import forms

from engine import registry
from engine.schemas import InvalidJSON, parse_json_input

INPUT_PLACEHOLDER = '{"action": "double", "value": 21}'


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
        """Parsed JSON; a mistake is reported with its line and column, as an editor would."""
        text = self.cleaned_data["input"]
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
