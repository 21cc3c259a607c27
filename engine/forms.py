"""The admin's "Trigger a workflow" form: a binding of ploy.yaml and a JSON input."""

from __future__ import annotations

from django import forms

from engine import registry
from engine.schemas import InvalidJSON, parse_json_input


def binding_choices() -> list[tuple[str, str]]:
    return [
        (binding.binding, f"{binding.binding} ({binding.name})")
        for binding in registry.current().config.workflows
    ]


class TriggerForm(forms.Form):
    binding = forms.ChoiceField(choices=binding_choices)
    input = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "cols": 80, "spellcheck": "false"}),
        help_text='Any JSON document, e.g. {"action": "double", "value": 21}; empty means null.',
        # The text is the JSON document: leading and trailing blanks are the user's business.
        strip=False,
    )

    def clean_input(self) -> object:
        try:
            return parse_json_input(self.cleaned_data["input"])
        except InvalidJSON as error:
            raise forms.ValidationError(
                "Enter a JSON document: the input is %(problem)s.",
                code="invalid_json",
                params={"problem": error},
            ) from None
